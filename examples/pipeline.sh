#!/usr/bin/env bash
# The echoseg research loop on the embedded toy data, exactly as a researcher chains it on a GPU server.
# Every command prints only its run directory on stdout, so each step's output feeds the next.
#
#   bash examples/pipeline.sh [OUT_ROOT]        (default: demo-runs/<UTC time>)
#
# On real data, replace the toy steps with the data set folders and add --config base --weights ... .
set -euo pipefail

ROOT=${1:-demo-runs/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$ROOT"
echo "demo runs under $ROOT" >&2

# 1. Toy data sets in the published layouts (CAMUS NIfTI release, EchoNet-Dynamic).
CAMUS=$(echoseg data toy camus --patients 12 --size 128 --seed 0 --out "$ROOT/toy-camus")
ECHONET=$(echoseg data toy echonet --videos 6 --frames 48 --seed 0 --out "$ROOT/toy-echonet")

# 2. Validate them with the real readers.
CHECK_CAMUS=$(echoseg data check "$CAMUS" --out "$ROOT/check-camus")
CHECK_ECHONET=$(echoseg data check "$ECHONET" --out "$ROOT/check-echonet")

# 3. Summary of what ran.
echoseg --no-progress --version >&2
for run in "$CAMUS" "$ECHONET" "$CHECK_CAMUS" "$CHECK_ECHONET"; do
  python - "$run" <<'PY' >&2
import json, sys
rec = json.load(open(sys.argv[1] + "/run.json"))
print(f"{rec['status']:>10}  {rec['command']:<20} {sys.argv[1]}")
PY
done
