"""Rich tables printed on stderr by the CLI."""

from __future__ import annotations

from rich.table import Table

from echoseg.core.console import console


def print_check_report(report) -> None:
    """Print counts, sizes and metadata completeness of a `data check` report."""
    unit = "videos" if report.is_video else "images"
    table = Table(title=f"{report.root} ({report.layout})")
    counts = report.counts()
    for col in counts.columns:
        table.add_column(str(col), justify="right" if col in ("images", "videos") else "left")
    for row in counts.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)
    sizes = ", ".join(f"{k}: {v}" for k, v in report.sizes().items())
    if sizes:
        console.print(f"sizes ({unit}): {sizes}", markup=False)
    comp = ", ".join(f"{k} {v:.0%}" for k, v in report.completeness().items())
    if comp:
        console.print(f"metadata present: {comp}", markup=False)
    if report.problems:
        console.print(f"{len(report.problems)} unusable file(s):", style="bold red")
    else:
        console.print(f"all files usable ({len(report.table)} samples)", style="green")
