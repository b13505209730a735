"""Imported before every other CLI module: echoseg is offline unless downloads are allowed (see core.hub)."""

import sys

from echoseg.core.hub import apply_offline_default

apply_offline_default(sys.argv[1:])
