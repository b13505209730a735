#!/usr/bin/env bash
# The echoseg research loop on the embedded toy data, chained exactly as a researcher chains it on a GPU server.
# Every command prints only its run directory on stdout, so each step's output feeds the next.
#
#   bash examples/pipeline.sh [OUT_ROOT]        (default: demo-runs/<UTC time>)
#
# On a GPU server: replace the toy data steps with the real data set folders (see data/README.md), change tiny()
# below to the real configs and weights, e.g. "--model-config base" for CLIPSeg (CIDAS/clipseg-rd64-refined),
# "--model-config rn50 --weights RN50.pt" for CRIS, drop QUICK (paper schedules are the defaults), and use
# --teacher deeplabv3:deeplabv3_resnet50_random.pt for distillation. Nothing else changes.
set -euo pipefail

ROOT=${1:-demo-runs/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$ROOT"
say() { printf '\n== %s\n' "$*" >&2; }
say "echoseg demo: every run directory goes under $ROOT"

# Tiny random models at small input sizes (CLIPSeg tiny's ViT is built for 32 px), scored at the data's 128 px,
# and short schedules, so the whole loop runs on 2 CPU cores in minutes.
tiny() {
  case $1 in
    clipseg) echo "--model-config tiny --input-size 32 --eval-size 128" ;;
    *) echo "--model-config tiny --input-size 64 --eval-size 128" ;;
  esac
}
QUICK="--epochs 30 --batch-size 16"
PROMPT=p4

say "1. toy data in the published layouts: CAMUS (NIfTI release), EchoNet-Dynamic videos"
CAMUS=$(echoseg data toy camus --patients 16 --size 128 --seed 0 --out "$ROOT/data-camus")
VIDEOS=$(echoseg data toy echonet --videos 8 --frames 48 --seed 0 --out "$ROOT/data-echonet")
# a stand-in for EchoNet-Synthetic: other (synthetic) videos the teacher labels for distillation
SYN_VIDEOS=$(echoseg data toy echonet --videos 12 --frames 48 --seed 1 --out "$ROOT/data-echonet-synthetic")

say "2. validate every file with the real readers"
echoseg data check "$CAMUS" --out "$ROOT/check-camus" > /dev/null
echoseg data check "$VIDEOS" --out "$ROOT/check-echonet" > /dev/null

say "3. Synthetic Boost P0-P7 prompts"
PROMPTS=$(echoseg prompts build "$CAMUS" --out "$ROOT/prompts-camus")

say "4. Echo from noise: a label-map-conditioned diffusion model, then synthetic images from perturbed maps"
SYNTH_MODEL=$(echoseg synth train --data "$CAMUS" --config tiny --size 32 --steps 1500 --batch-size 8 --lr 2e-3 \
  --cond-dropout 0.1 --out "$ROOT/synth-train")
# 96 draws from 3 perturbed copies of each source map, balanced over view, phase and sex (at most 48 per value)
SYNTH=$(echoseg synth generate --model "$SYNTH_MODEL" --masks "$CAMUS" --copies-per-mask 3 --count 96 \
  --balance view,phase,sex --tau-max 48 --sampler ddim --steps 25 --out "$ROOT/synth-generate")

say "5. a real-data U-Net: baseline of the comparison, judge of the curation, teacher of the distillation"
# trained longer than the others: it judges the synthetic images and teaches the student
UNET_REAL=$(echoseg train --model unet $(tiny unet) --epochs 40 --batch-size 16 --data "$PROMPTS" --prompt $PROMPT \
  --out "$ROOT/train-unet-real")

say "6. curate the synthetic set: sanity, image-mask agreement, near-copies of real images, attribute caps"
CURATED=$(echoseg curate "$SYNTH" --segmenter "$UNET_REAL" --min-dice 0.3 --real "$CAMUS" --dup-sim 0.95 \
  --balance view,phase --tau-max 40 --out "$ROOT/curate")
SYN_PROMPTS=$(echoseg prompts build "$CURATED" --dataset sdm-camus --out "$ROOT/prompts-synthetic")

say "7. training strategies: real, synthetic (test on real), synth-PT:real-FT for unet, clipseg and cris"
RUNS=()
STATS=()
for MODEL in unet clipseg cris; do
  if [ "$MODEL" = unet ]; then
    REAL=$UNET_REAL
  else
    REAL=$(echoseg train --model $MODEL $(tiny $MODEL) $QUICK --data "$PROMPTS" --prompt $PROMPT \
      --out "$ROOT/train-$MODEL-real")
  fi
  SYN=$(echoseg train --model $MODEL $(tiny $MODEL) $QUICK --train-data "$SYN_PROMPTS" --val-data "$SYN_PROMPTS" \
    --test-data "$PROMPTS" --prompt $PROMPT --out "$ROOT/train-$MODEL-synthetic")
  PTFT=$(echoseg train --model $MODEL $(tiny $MODEL) $QUICK --data "$PROMPTS" --prompt $PROMPT --init-from "$SYN" \
    --out "$ROOT/train-$MODEL-ptft")
  RUNS+=("$REAL" "$SYN" "$PTFT")

  say "8. paired Wilcoxon tests for $MODEL: pt-ft vs real, synthetic vs real (Holm-corrected)"
  STATS+=("$(echoseg stats wilcoxon --baseline "$REAL" "$PTFT" "$SYN" --correction holm \
    --out "$ROOT/stats-$MODEL")")
done

say "9. EchoDFKD: distil the real U-Net into a ConvLSTM student (B2L1) on synthetic videos"
# ~100 Adam steps (8 training videos, 2 windows a step): with a few dozen the student stays near chance (issue 18)
STUDENT=$(echoseg distill --teacher "run:$UNET_REAL" --data "$SYN_VIDEOS" --eval-data "$VIDEOS" --eval-split all \
  --blocks 2 --layers 1 --seq-len 16 --batch-size 2 --lr 3e-3 --epochs 25 --out "$ROOT/distill")

say "10. ED/ES detection scored as aFD, teacher and student, on the real videos"
AFD_TEACHER=$(echoseg eval afd --data "$VIDEOS" --run "$UNET_REAL" --split all --out "$ROOT/afd-teacher")
AFD_STUDENT=$(echoseg eval afd --data "$VIDEOS" --run "$STUDENT" --split all --out "$ROOT/afd-student")

say "11. SynCXR: ConVIRT and GLoRIA pre-trained on real, synthetic and mixed image-report pairs"
PRETRAIN_RUNS=()
EVAL_RUNS=()
for METHOD in convirt gloria; do
  for DATA in real synthetic mix; do
    case $DATA in
      real) PAIRS=(--data "$PROMPTS") ;;
      synthetic) PAIRS=(--data "$SYN_PROMPTS") ;;
      mix) PAIRS=(--data "$PROMPTS" --data "$SYN_PROMPTS") ;;
    esac
    PT=$(echoseg pretrain --method $METHOD --config tiny "${PAIRS[@]}" --epochs 20 --batch-size 16 \
      --out "$ROOT/pretrain-$METHOD-$DATA")
    PRETRAIN_RUNS+=("$PT")

    say "12. zero-shot view and phase classification and LV/MYO/LA grounding on real images: $METHOD, $DATA pairs"
    for TASK in view phase grounding; do
      EVAL_RUNS+=("$(echoseg eval zeroshot --run "$PT" --data "$PROMPTS" --task $TASK --eval-size 128 \
        --out "$ROOT/zeroshot-$METHOD-$DATA-$TASK")")
    done
  done
done

say "13. SynCXR's frozen-encoder U-Net: GLoRIA (mix) vs a random encoder, on 10% and 100% of the real patients"
for FRACTION in 0.1 1; do
  FROZEN=()
  for ENCODER in "vlp:$ROOT/pretrain-gloria-mix" random; do
    NAME=${ENCODER%%:*}
    FROZEN+=("$(echoseg train --model unet --encoder "$ENCODER" --freeze-encoders --train-fraction $FRACTION \
      $(tiny unet) --epochs 20 --batch-size 16 --data "$PROMPTS" --prompt $PROMPT \
      --out "$ROOT/train-unet-frozen-$NAME-$FRACTION")")
  done
  RUNS+=("${FROZEN[@]}")
  STATS+=("$(echoseg stats wilcoxon --baseline "${FROZEN[1]}" "${FROZEN[0]}" --out "$ROOT/stats-frozen-$FRACTION")")
done

say "14. one summary: Dice per run, paired tests with CIs, aFD (EchoDFKD), pre-training (SynCXR)"
REPORT=$(echoseg report "${RUNS[@]}" "${STATS[@]}" "$AFD_TEACHER" "$AFD_STUDENT" "${PRETRAIN_RUNS[@]}" \
  "${EVAL_RUNS[@]}" --out "$ROOT/report")

say "done: $REPORT/summary.md and $REPORT/figure.png"
python - "$ROOT" <<'PY' >&2
import json, pathlib, sys
runs = sorted(p.parent for p in pathlib.Path(sys.argv[1]).glob("*/run.json"))
bad = [str(r) for r in runs if json.loads((r / "run.json").read_text())["status"] != "completed"]
print(f"{len(runs)} run directories, {len(runs) - len(bad)} completed" + (f"; not completed: {bad}" if bad else ""))
sys.exit(1 if bad else 0)
PY
echo "$REPORT"
