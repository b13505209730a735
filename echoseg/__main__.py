"""`python -m echoseg` entry point (also used by `accelerate launch -m echoseg`)."""

import sys

from echoseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
