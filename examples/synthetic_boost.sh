#!/usr/bin/env bash
# Synthetic Boost's experiment grid (Adhikari et al. 2023): CLIPSeg and CRIS x prompts P0-P7 x training on real,
# synthetic (SDM CAMUS, tested on real) and synthetic-then-real data x frozen / unfrozen encoders, plus the
# zero-shot rows; Wilcoxon tests between the strategies of every (model, prompt, encoders) cell; one report with
# Table 2 (unfrozen, with zero-shot), Table 3 (frozen), fig2_paired.png and fig3_frozen.png.
#
#   bash examples/synthetic_boost.sh [OUT_ROOT]           the full grid on a GPU server (96 training runs)
#   QUICK=1 bash examples/synthetic_boost.sh [OUT_ROOT]   a toy-sized grid on CPU in a few minutes (make test-all)
#
# OUT_ROOT defaults to sb-runs/<UTC time>. Environment of the full grid (QUICK=1 builds toy stand-ins for all):
#   CAMUS            the CAMUS folder (either release)           } or PROMPTS / SYN_PROMPTS: prompts runs already
#   SDM_CAMUS        the SDM CAMUS folder                        } built from them (`echoseg prompts build`)
#   RECIPE           sb-paper (default) or sb-code: the paper's or the released configs' values (echoseg train
#                    --help); explicit options below win over the recipe
#   CLIPSEG_WEIGHTS  CLIPSeg start and zero-shot weights (default CIDAS/clipseg-rd64-refined)
#   CRIS_REFCOCO     the original CRIS RefCOCO checkpoint (e.g. cris_r50_refcoco.pth): CRIS's zero-shot rows, and
#                    its training start under sb-code (required)
#   CRIS_WEIGHTS     CRIS training start (default: CRIS_REFCOCO under sb-code, CLIP RN50
#                    timm/resnet50_clip.openai under sb-paper)
#   CRIS_CONFIG      rn50 (default) or rn101
#   PROMPT_LIST      the prompts of the grid (default "p0 p1 p2 p3 p4 p5 p6 p7")
#   LAUNCH           how `train` starts (default "echoseg"); several GPUs for each run:
#                    LAUNCH="accelerate launch --multi_gpu --num_processes 4 -m echoseg" (every run gets --out)
#   JOBS             (model, prompt, encoders) cells run at the same time (default 1; QUICK=1: 2)
#   NUM_WORKERS      DataLoader workers of each run (default 4; QUICK=1: 0)
set -euo pipefail

QUICK=${QUICK:-0}
ROOT=${1:-sb-runs/$(date -u +%Y%m%d-%H%M%S)}
RECIPE=${RECIPE:-sb-paper}
LAUNCH=${LAUNCH:-echoseg}
mkdir -p "$ROOT/.cells"
say() { printf '\n== %s\n' "$*" >&2; }
say "Synthetic Boost grid (recipe $RECIPE$([ "$QUICK" = 1 ] && echo ', QUICK toy run')): run directories under $ROOT"

if [ "$QUICK" = 1 ]; then
  JOBS=${JOBS:-2}
  PROMPT_LIST=${PROMPT_LIST:-"p0 p7"}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # two cells at a time on two cores: one thread each
  # tiny random models at 32 px scored at the data's 48 px; one epoch (explicit options win over the recipe's
  # 10 to 1000 epochs and batch sizes); CPU (the recipe's 16-bit mixed precision applies on a GPU only)
  model_opts() { echo "--model-config tiny --input-size 32 --eval-size 48 --device cpu"; }
  SCHEDULE="--epochs 1 --batch-size 16 --num-workers ${NUM_WORKERS:-0}"
  STATS_OPTS="--bootstrap 200"

  say "toy data: CAMUS (real) and SDM CAMUS (synthetic) layouts, their P0-P7 prompts"
  CAMUS=$(echoseg data toy camus --patients 6 --size 48 --seed 0 --out "$ROOT/data-camus")
  SDM_CAMUS=$(echoseg data toy sdm-camus --patients 4 --copies 1 --size 48 --seed 1 --out "$ROOT/data-sdm-camus")
  PROMPTS=$(echoseg prompts build "$CAMUS" --out "$ROOT/prompts-camus")
  SYN_PROMPTS=$(echoseg prompts build "$SDM_CAMUS" --out "$ROOT/prompts-sdm-camus")

  say "toy pre-trained weights in the published formats: a CLIPSeg Hugging Face folder, an original CRIS checkpoint"
  python - "$ROOT/weights" <<'PY' >&2
import sys, pathlib, torch
from echoseg.core.models import build_model
from echoseg.core.models.cris_weights import to_original
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
clipseg = build_model("clipseg", "tiny", input_size=32)
clipseg.hf.save_pretrained(out / "clipseg")  # the layout of CIDAS/clipseg-rd64-refined
clipseg.tokenizer.save_pretrained(out / "clipseg")
cris = build_model("cris", "tiny")
torch.save({"epoch": 1, "state_dict": to_original(cris.state_dict())}, out / "cris_refcoco.pth")  # CRIS release
print(f"toy weights in {out}")
PY
  CLIPSEG_WEIGHTS=$ROOT/weights/clipseg
  CRIS_REFCOCO=$ROOT/weights/cris_refcoco.pth
  CRIS_WEIGHTS=$CRIS_REFCOCO
else
  JOBS=${JOBS:-1}
  PROMPT_LIST=${PROMPT_LIST:-"p0 p1 p2 p3 p4 p5 p6 p7"}
  CLIPSEG_WEIGHTS=${CLIPSEG_WEIGHTS:-CIDAS/clipseg-rd64-refined}
  : "${CRIS_REFCOCO:?set CRIS_REFCOCO to the original CRIS RefCOCO checkpoint (zero-shot rows, sb-code start)}"
  if [ "$RECIPE" = sb-code ]; then CRIS_WEIGHTS=${CRIS_WEIGHTS:-$CRIS_REFCOCO}
  else CRIS_WEIGHTS=${CRIS_WEIGHTS:-timm/resnet50_clip.openai}; fi
  model_opts() {
    case $1 in
      clipseg) echo "--model-config base" ;;            # ViT-B/16 at 352 px, scored at 512 px
      cris) echo "--model-config ${CRIS_CONFIG:-rn50}" ;;  # CLIP ResNet at 416 px, scored at 512 px
    esac
  }
  SCHEDULE="--num-workers ${NUM_WORKERS:-4}"  # the recipe sets epochs, batch sizes, lr, clipping, precision
  STATS_OPTS="--bootstrap 2000"
  if [ -z "${PROMPTS:-}" ]; then
    : "${CAMUS:?set CAMUS to the CAMUS folder (or PROMPTS to a prompts run built from it)}"
    say "P0-P7 prompts of CAMUS"
    PROMPTS=$(echoseg prompts build "$CAMUS" --out "$ROOT/prompts-camus")
  fi
  if [ -z "${SYN_PROMPTS:-}" ]; then
    : "${SDM_CAMUS:?set SDM_CAMUS to the SDM CAMUS folder (or SYN_PROMPTS to a prompts run built from it)}"
    say "P0-P6 prompts of SDM CAMUS (no image quality: P7 needs it)"
    SYN_PROMPTS=$(echoseg prompts build "$SDM_CAMUS" --dataset sdm-camus --out "$ROOT/prompts-sdm-camus")
  fi
fi

# SDM CAMUS has no image quality, so it has no P7 (N/A in the paper's tables): the P7 cell pretrains on synthetic P6
# and reports no synthetic P7 run.
syn_prompt() { if [ "$1" = p7 ]; then echo p6; else echo "$1"; fi; }
weights_of() { case $1 in clipseg) echo "$CLIPSEG_WEIGHTS" ;; cris) echo "$CRIS_WEIGHTS" ;; esac; }
zero_shot_weights() { case $1 in clipseg) echo "$CLIPSEG_WEIGHTS" ;; cris) echo "$CRIS_REFCOCO" ;; esac; }

# One cell of the grid: real, synthetic (validated on synthetic, tested on real) and synth-PT:real-FT runs of one
# model, prompt and encoder setting, then B - A Wilcoxon tests of pt-ft and synthetic against real (Holm).
# (dependent steps in order; several cells may run side by side)
cell() {
  local model=$1 prompt=$2 enc=$3
  local tag=$model-$prompt-$enc freeze=--no-freeze-encoders
  [ "$enc" = frozen ] && freeze=--freeze-encoders
  # shellcheck disable=SC2046  # model_opts and SCHEDULE are lists of options
  local opts=(--model "$model" $(model_opts "$model") --recipe "$RECIPE" $freeze $SCHEDULE)
  local synthetic=("$ROOT/train-$tag-synthetic")
  [ "$(syn_prompt "$prompt")" = "$prompt" ] || synthetic=()  # not a synthetic run of this prompt: not tested
  $LAUNCH train "${opts[@]}" --prompt "$prompt" --weights "$(weights_of "$model")" --data "$PROMPTS" \
    --out "$ROOT/train-$tag-real" > /dev/null
  $LAUNCH train "${opts[@]}" --prompt "$(syn_prompt "$prompt")" --weights "$(weights_of "$model")" \
    --train-data "$SYN_PROMPTS" --val-data "$SYN_PROMPTS" --test-data "$PROMPTS" \
    --out "$ROOT/train-$tag-synthetic" > /dev/null
  $LAUNCH train "${opts[@]}" --prompt "$prompt" --init-from "$ROOT/train-$tag-synthetic" --data "$PROMPTS" \
    --out "$ROOT/train-$tag-ptft" > /dev/null
  # shellcheck disable=SC2086
  echoseg stats wilcoxon --baseline "$ROOT/train-$tag-real" "$ROOT/train-$tag-ptft" "${synthetic[@]}" \
    --correction holm $STATS_OPTS --out "$ROOT/stats-$tag" > /dev/null
}

# Zero-shot: pre-trained weights scored on the real test split without any training on echo.
zero_shot() {
  local model=$1 prompt=$2
  # shellcheck disable=SC2046
  echoseg eval seg --model "$model" $(model_opts "$model") --weights "$(zero_shot_weights "$model")" \
    --data "$PROMPTS" --prompt "$prompt" --out "$ROOT/zeroshot-$model-$prompt" > /dev/null
}

# Runs a job (cell or zero_shot) with at most JOBS at a time; its stderr goes to .cells/NAME.log, and .cells/NAME.ok
# marks it done, so a failed job is found (and shown) after the wait, however the jobs interleaved.
JOB_NAMES=()
job() {
  local name=$1; shift
  JOB_NAMES+=("$name")
  if [ "$JOBS" -le 1 ]; then  # in the foreground: a failure stops the script (set -e)
    "$@"
    touch "$ROOT/.cells/$name.ok"
    return
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  # a subshell that inherits set -e: a failing step ends the job before its .ok is written
  ( "$@"; touch "$ROOT/.cells/$name.ok" ) 2> "$ROOT/.cells/$name.log" &
}

say "zero-shot rows, then the training cells ($JOBS at a time): CLIPSeg and CRIS x $PROMPT_LIST x frozen/unfrozen"
for MODEL in clipseg cris; do
  for PROMPT in $PROMPT_LIST; do
    job "zeroshot-$MODEL-$PROMPT" zero_shot "$MODEL" "$PROMPT"
  done
done
for MODEL in clipseg cris; do
  for PROMPT in $PROMPT_LIST; do
    for ENC in unfrozen frozen; do
      job "$MODEL-$PROMPT-$ENC" cell "$MODEL" "$PROMPT" "$ENC"
    done
  done
done
wait
FAILED=()
for NAME in "${JOB_NAMES[@]}"; do
  if [ ! -f "$ROOT/.cells/$NAME.ok" ]; then
    FAILED+=("$NAME")
    [ -f "$ROOT/.cells/$NAME.log" ] && tail -n 5 "$ROOT/.cells/$NAME.log" >&2
  fi
done
if [ "${#FAILED[@]}" -gt 0 ]; then
  say "failed: ${FAILED[*]}"
  exit 1
fi

say "one report: Table 2 (unfrozen + zero-shot), Table 3 (frozen), Fig. 2 (paired tests), Fig. 3 (frozen - unfrozen)"
RUNS=()
for MODEL in clipseg cris; do
  for PROMPT in $PROMPT_LIST; do
    RUNS+=("$ROOT/zeroshot-$MODEL-$PROMPT")
    for ENC in unfrozen frozen; do
      RUNS+=("$ROOT/train-$MODEL-$PROMPT-$ENC-real" "$ROOT/train-$MODEL-$PROMPT-$ENC-ptft")
      [ "$(syn_prompt "$PROMPT")" = "$PROMPT" ] && RUNS+=("$ROOT/train-$MODEL-$PROMPT-$ENC-synthetic")
      RUNS+=("$ROOT/stats-$MODEL-$PROMPT-$ENC")
    done
  done
done
REPORT=$(echoseg report "${RUNS[@]}" --out "$ROOT/report")
say "done: $REPORT/summary.md, $REPORT/fig2_paired.png and $REPORT/fig3_frozen.png"
echo "$REPORT"
