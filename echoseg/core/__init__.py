"""Plain-Python core of echoseg: no Typer imports below this package."""
