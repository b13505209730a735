#!/usr/bin/env bash
# EchoDFKD's experiments (Petit et al. 2024) on one teacher and one set of videos, chained as on a GPU server:
#   - student size scaling (its Fig. 6): ConvLSTM students of B blocks x L layers distilled from the same teacher
#     on the same (synthetic) videos, each scored on real videos with tracings (aFD ED/ES, mIoU);
#   - aFD against sampling rate (its Fig. 4): `eval afd --subsample K` (every K-th frame) of the teacher and the
#     largest student;
#   - `echoseg report` over all of them: tables and fig6_scaling.png, fig4_sampling.png.
# Every command prints only its run directory on stdout; the report's path is the last line of this script's stdout.
#
#   QUICK=1 bash examples/echodfkd.sh [OUT_ROOT]      toy data, 3 student sizes, 2 CPU cores, a few minutes
#   bash examples/echodfkd.sh [OUT_ROOT]              the full sweep, B1..B4 x L1..L4 (a GPU server)
#
# OUT_ROOT defaults to echodfkd-runs/<UTC time>. Environment variables (all optional):
#   QUICK=1       toy sizes and short schedules (what `make test-all` runs)
#   TEACHER       teacher spec: deeplabv3:CKPT (EchoNet-Dynamic's DeepLabv3) or run:TRAIN_RUN. Default: a tiny U-Net
#                 trained here on toy CAMUS images
#   DATA          EchoNet-layout folder of (synthetic) videos to distil on, e.g. EchoNet-Synthetic. Default: toy
#   EVAL_DATA     real EchoNet-Dynamic folder with VolumeTracings.csv to score on. Default: toy (other seed)
#   EVAL_SPLIT    rows of EVAL_DATA to score (TRAIN, VAL, TEST, all). Default: TEST, or all on toy data
#   SIZES         student sizes, e.g. "B1L1 B2L1 B4L4". Default: QUICK "B1L1 B1L2 B2L1", else all of B1..B4 x L1..L4
#   KS            subsampling factors for the sampling-rate analysis. Default: QUICK "1 2 4", else "1 2 3 4 6 8"
#   EPOCHS        distillation epochs (early stopping may end sooner). Default: QUICK 6, else 100
#   BATCH_SIZE    videos per distillation step. Default: QUICK 2, else 32
#   SEQ_LEN       frames of each training window. Default: QUICK 12, else 25
#   LR            Adam learning rate. Default: QUICK 3e-3, else 1e-3
#   DEVICE        auto, cpu or cuda. Default: auto
#   DISTILL_ARGS  more `echoseg distill` options for every student, e.g. "--half-res --precision bf16"
#
# On a GPU server, e.g.:
#   TEACHER=deeplabv3:deeplabv3_resnet50_random.pt DATA=/data/EchoNet-Synthetic EVAL_DATA=/data/EchoNet-Dynamic \
#     DISTILL_ARGS=--half-res bash examples/echodfkd.sh runs/echodfkd
set -euo pipefail

ROOT=${1:-echodfkd-runs/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$ROOT"
say() { printf '\n== %s\n' "$*" >&2; }

if [ "${QUICK:-0}" = 1 ]; then
  SIZES=${SIZES:-"B1L1 B1L2 B2L1"}
  KS=${KS:-"1 2 4"}
  EPOCHS=${EPOCHS:-6}
  BATCH_SIZE=${BATCH_SIZE:-2}
  SEQ_LEN=${SEQ_LEN:-12}
  LR=${LR:-3e-3}
  TOY_VIDEOS=6
  TOY_FRAMES=32
  TOY_SIZE=32
  TEACHER_TRAIN=(--input-size 32 --eval-size 64 --epochs 15)
else
  SIZES=${SIZES:-"$(for B in 1 2 3 4; do for L in 1 2 3 4; do printf 'B%sL%s ' $B $L; done; done)"}
  KS=${KS:-"1 2 3 4 6 8"}
  EPOCHS=${EPOCHS:-100}
  BATCH_SIZE=${BATCH_SIZE:-32}
  SEQ_LEN=${SEQ_LEN:-25}
  LR=${LR:-1e-3}
  TOY_VIDEOS=40
  TOY_FRAMES=64
  TOY_SIZE=112
  TEACHER_TRAIN=(--input-size 64 --eval-size 64 --epochs 60)
fi
DEVICE=${DEVICE:-auto}
read -r -a EXTRA <<< "${DISTILL_ARGS:-}"
for SIZE in $SIZES; do
  [[ $SIZE =~ ^B[1-4]L[1-4]$ ]] || { echo "SIZES: '$SIZE' is not B<1-4>L<1-4> (e.g. B2L1)" >&2; exit 2; }
done
for K in $KS; do
  [[ $K =~ ^[1-9][0-9]*$ ]] || { echo "KS: '$K' is not an integer >= 1" >&2; exit 2; }
done
say "EchoDFKD experiments: students $SIZES, subsampling K = $KS; every run directory goes under $ROOT"

say "1. data: synthetic videos to distil on, real videos with tracings to score on"
if [ -z "${DATA:-}" ]; then
  DATA=$(echoseg data toy echonet --videos $TOY_VIDEOS --frames $TOY_FRAMES --size $TOY_SIZE --seed 1 \
    --out "$ROOT/data-synthetic")
fi
if [ -z "${EVAL_DATA:-}" ]; then
  EVAL_DATA=$(echoseg data toy echonet --videos $TOY_VIDEOS --frames $TOY_FRAMES --size $TOY_SIZE --seed 0 \
    --out "$ROOT/data-real")
  EVAL_SPLIT=${EVAL_SPLIT:-all}
fi
EVAL_SPLIT=${EVAL_SPLIT:-TEST}

say "2. the teacher"
if [ -z "${TEACHER:-}" ]; then
  # a tiny U-Net on toy CAMUS images, as the demo's (examples/pipeline.sh step 5)
  CAMUS=$(echoseg data toy camus --patients 8 --size 64 --seed 0 --out "$ROOT/data-camus")
  PROMPTS=$(echoseg prompts build "$CAMUS" --out "$ROOT/prompts-camus")
  UNET=$(echoseg train --model unet --model-config tiny "${TEACHER_TRAIN[@]}" --batch-size 16 --data "$PROMPTS" \
    --prompt p4 --device "$DEVICE" --out "$ROOT/train-unet-teacher")
  TEACHER="run:$UNET"
fi

say "3. Fig. 6: one student per size, same teacher, same videos, same schedule"
STUDENTS=()
for SIZE in $SIZES; do
  B=${SIZE:1:1}
  L=${SIZE:3:1}
  STUDENTS+=("$(echoseg distill --teacher "$TEACHER" --data "$DATA" --eval-data "$EVAL_DATA" \
    --eval-split "$EVAL_SPLIT" --blocks "$B" --layers "$L" --seq-len "$SEQ_LEN" --batch-size "$BATCH_SIZE" \
    --lr "$LR" --epochs "$EPOCHS" --device "$DEVICE" ${EXTRA[@]+"${EXTRA[@]}"} --out "$ROOT/distill-$SIZE")")
done
LARGEST=${STUDENTS[${#STUDENTS[@]}-1]}

say "4. Fig. 4: aFD keeping every K-th frame, teacher and the last student ($(basename "$LARGEST"))"
SAMPLED=()
for K in $KS; do
  SAMPLED+=("$(echoseg eval afd --data "$EVAL_DATA" --teacher "$TEACHER" --split "$EVAL_SPLIT" --subsample "$K" \
    --device "$DEVICE" --out "$ROOT/afd-teacher-k$K")")
  SAMPLED+=("$(echoseg eval afd --data "$EVAL_DATA" --run "$LARGEST" --split "$EVAL_SPLIT" --subsample "$K" \
    --device "$DEVICE" --out "$ROOT/afd-student-k$K")")
done

say "5. the report: scaling and sampling tables, fig6_scaling.png, fig4_sampling.png"
REPORT=$(echoseg report "${STUDENTS[@]}" "${SAMPLED[@]}" --out "$ROOT/report")
say "done: $REPORT/summary.md, $REPORT/fig6_scaling.png, $REPORT/fig4_sampling.png"
echo "$REPORT"
