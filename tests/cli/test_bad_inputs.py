"""Adversarial audit of the CLI rule: bad input -> exit 2, one `error:` line on stderr, nothing on stdout,
no traceback, nothing half-written, no earlier result touched.

Every command gets several bad inputs: missing paths, folders of the wrong layout, corrupt files, unknown option
values, out-of-range numbers, a non-empty --out and --resume of another command's run.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from echoseg.cli import main

TRAIN_FAST = ["--model", "unet", "--model-config", "tiny", "--input-size", "16", "--eval-size", "32", "--epochs",
              "1", "--batch-size", "8", "--device", "cpu"]


def _ok(argv: list[str]) -> None:
    assert main(argv) == 0, argv


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Tiny real runs plus corrupt, mis-shaped and wrongly laid-out copies of them."""
    from PIL import Image

    r = tmp_path_factory.mktemp("bad")
    _ok(["data", "toy", "camus", "--patients", "3", "--size", "48", "--out", str(r / "camus")])
    _ok(["prompts", "build", str(r / "camus"), "--out", str(r / "prompts")])
    _ok(["data", "toy", "echonet", "--videos", "3", "--frames", "16", "--size", "32", "--out", str(r / "echonet")])
    _ok(["train", *TRAIN_FAST, "--data", str(r / "prompts"), "--prompt", "p1", "--out", str(r / "unet")])
    _ok(["synth", "train", "--data", str(r / "camus"), "--config", "tiny", "--size", "32", "--steps", "1",
         "--batch-size", "2", "--device", "cpu", "--out", str(r / "synth")])

    # corrupt files of every kind the commands read
    garbage = b"\x00\x13garbage\xff not what it claims to be" * 7
    for name in ("corrupt.png", "corrupt.csv", "corrupt.json", "corrupt.pt", "corrupt.pth", "corrupt.dcm",
                 "corrupt.yaml", "corrupt.npz"):
        (r / name).write_bytes(garbage)
    (r / "empty").mkdir()
    (r / "notempty").mkdir()
    (r / "notempty" / "keep.txt").write_text("earlier result\n")

    # a CAMUS copy with one corrupt image; one with a label map of another shape than its image
    shutil.copytree(r / "camus", r / "camus_corrupt")
    first = sorted((r / "camus_corrupt").rglob("*_half_sequence.nii.gz"))
    victim = sorted(p for p in (r / "camus_corrupt").rglob("*.nii.gz") if "_gt" not in p.name
                    and p not in first)[0]
    victim.write_bytes(garbage)
    shutil.copytree(r / "camus", r / "camus_shape")
    import SimpleITK as sitk

    gt = sorted((r / "camus_shape").rglob("*_gt.nii.gz"))[0]
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 24), np.uint8)), str(gt))

    for copy in ("camus_corrupt", "camus_shape"):  # the copied manifest must point at the copy's files
        m = r / copy / "manifest.csv"
        m.write_text(m.read_text().replace(f"{r / 'camus'}/", f"{r / copy}/"))

    # prompts runs pointing at those (prompts build itself refuses them, as every reader does)
    for copy, run in (("camus_corrupt", "prompts_badimg"), ("camus_shape", "prompts_badshape")):
        shutil.copytree(r / "prompts", r / run, ignore=shutil.ignore_patterns("cache"))
        m = r / run / "manifest.csv"
        m.write_text(m.read_text().replace(f"{r / 'camus'}/", f"{r / copy}/"))
    # an open_clip folder whose weights file is all zeros
    (r / "clip_zero").mkdir()
    (r / "clip_zero" / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}}))
    (r / "clip_zero" / "open_clip_model.safetensors").write_bytes(bytes(4096))

    # a prompts run whose manifest.csv is corrupt; a training run whose weights are corrupt
    shutil.copytree(r / "prompts", r / "prompts_corrupt", ignore=shutil.ignore_patterns("cache"))
    (r / "prompts_corrupt" / "manifest.csv").write_bytes(garbage)
    shutil.copytree(r / "unet", r / "unet_corrupt")
    (r / "unet_corrupt" / "checkpoints" / "best.safetensors").write_bytes(garbage)
    (r / "unet_corrupt" / "checkpoints" / "last.safetensors").write_bytes(garbage)
    shutil.copytree(r / "unet", r / "unet_badjson")
    (r / "unet_badjson" / "checkpoints" / "model.json").write_bytes(garbage)

    # an EchoNet copy with a corrupt video and one with a corrupt FileList.csv
    shutil.copytree(r / "echonet", r / "echonet_corrupt")
    for avi in sorted((r / "echonet_corrupt" / "Videos").glob("*.avi")):
        avi.write_bytes(garbage)
    shutil.copytree(r / "echonet", r / "echonet_badlist")
    (r / "echonet_badlist" / "FileList.csv").write_text("a,b\n1,2\n")

    # per-sample CSVs for stats: no shared keys, no metric column
    (r / "a.csv").write_text("sample_id,dice\ns1,0.5\ns2,0.6\ns3,0.7\n")
    (r / "b.csv").write_text("sample_id,dice\nt1,0.5\nt2,0.6\nt3,0.7\n")
    (r / "nometric.csv").write_text("sample_id,iou\ns1,0.5\ns2,0.6\ns3,0.7\n")
    (r / "areas_nocols.csv").write_text("x,y\n1,2\n")
    (r / "splits_bad.csv").write_text("patient,split\npatient0001,nonsense\n")
    (r / "refs_bad.csv").write_text("FileName,ED\nx,1\n")
    (r / "prompts.txt").write_text("an echocardiogram\n")
    (r / "pipe").mkdir()
    (r / "pipe" / "model_index.json").write_text("{not json")
    # a run directory whose run.json is corrupt; a plain (non-CRIS) torch checkpoint
    (r / "badrun").mkdir()
    (r / "badrun" / "run.json").write_bytes(garbage)
    import torch

    torch.save({"state_dict": {"w": torch.zeros(2)}}, r / "notcris.pth")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(r / "img.png")
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("US1_UNCR.dcm"), r / "dicom")
    import pandas as pd

    names = pd.read_csv(r / "echonet" / "FileList.csv")["FileName"]
    pd.DataFrame([{"FileName": n, "Frame": f, "Area": 100 + 20 * np.cos(f / 3)} for n in names for f in range(16)]
                 ).to_csv(r / "areas.csv", index=False)
    return {k.name: str(k) for k in r.iterdir()} | {"root": str(r)}


# (id, argv with {fixture} fields filled in per test, "late": the error can only be found once work started)
CASES: list[tuple[str, str]] = [
    # ---------------------------------------------------------------- data toy
    ("toy-camus-patients-0", "data toy camus --patients 0"),
    ("toy-camus-size-small", "data toy camus --size 8"),
    ("toy-camus-layout", "data toy camus --layout foo"),
    ("toy-camus-config-missing", "data toy camus --config {root}/nope.yaml"),
    ("toy-camus-config-corrupt", "data toy camus --config {corrupt.yaml}"),
    ("toy-camus-config-corrupt-json", "data toy camus --config {corrupt.json}"),
    ("toy-camus-set-format", "data toy camus --set patients"),
    ("toy-camus-set-unknown", "data toy camus --set nosuch=1"),
    ("toy-camus-set-type", "data toy camus --set patients=abc"),
    ("toy-sdm-copies-0", "data toy sdm-camus --copies 0"),
    ("toy-sdm-size-huge", "data toy sdm-camus --size 99999"),
    ("toy-echonet-frames", "data toy echonet --frames 2"),
    ("toy-echonet-videos-neg", "data toy echonet --videos -3"),
    # ---------------------------------------------------------------- data check
    ("check-missing", "data check {root}/nope"),
    ("check-file", "data check {img.png}"),
    ("check-empty", "data check {empty}"),
    ("check-dataset-unknown", "data check {camus} --dataset x"),
    ("check-echonet-as-camus", "data check {echonet} --dataset camus"),
    ("check-camus-as-echonet", "data check {camus} --dataset echonet"),
    ("check-bad-filelist", "data check {echonet_badlist}"),
    ("check-corrupt-image", "data check {camus_corrupt}"),
    ("check-shape-mismatch", "data check {camus_shape}"),
    # ---------------------------------------------------------------- data import-dicom
    ("dicom-missing", "data import-dicom {root}/nope.dcm"),
    ("dicom-corrupt", "data import-dicom {corrupt.dcm}"),
    ("dicom-png", "data import-dicom {img.png}"),
    ("dicom-folder", "data import-dicom {empty}"),
    ("dicom-size-neg", "data import-dicom {corrupt.dcm} --size -1"),
    ("dicom-split", "data import-dicom {dicom} --split nonsense"),
    # ---------------------------------------------------------------- prompts build
    ("prompts-missing", "prompts build {root}/nope"),
    ("prompts-echonet", "prompts build {echonet}"),
    ("prompts-empty", "prompts build {empty}"),
    ("prompts-train-run", "prompts build {unet}"),
    ("prompts-corrupt-manifest", "prompts build {prompts_corrupt}"),
    ("prompts-corrupt-csv-file", "prompts build {corrupt.csv}"),
    ("prompts-dataset", "prompts build {camus} --dataset x"),
    ("prompts-shape", "prompts build {camus} --shape x"),
    ("prompts-style", "prompts build {camus} --style x"),
    ("prompts-device", "prompts build {camus} --device tpu"),
    ("prompts-vqa-no-model", "prompts build {camus} --shape vqa"),
    ("prompts-splits-missing", "prompts build {camus} --splits {root}/nope.csv"),
    ("prompts-splits-corrupt", "prompts build {camus} --splits {corrupt.csv}"),
    ("prompts-splits-values", "prompts build {camus} --splits {splits_bad.csv}"),
    ("prompts-camus-missing", "prompts build {camus} --camus {root}/nope"),
    ("prompts-corrupt-image", "prompts build {camus_corrupt}"),
    ("prompts-shape-mismatch", "prompts build {camus_shape}"),
    # ---------------------------------------------------------------- synth train
    ("synth-train-no-data", "synth train --device cpu"),
    ("synth-train-missing", "synth train --data {root}/nope --device cpu"),
    ("synth-train-echonet", "synth train --data {echonet} --device cpu"),
    ("synth-train-corrupt-manifest", "synth train --data {prompts_corrupt} --device cpu"),
    ("synth-train-precision", "synth train --data {camus} --precision fp8 --device cpu"),
    ("synth-train-device", "synth train --data {camus} --device tpu"),
    ("synth-train-model-config", "synth train --data {camus} --model-config huge --device cpu"),
    ("synth-train-size", "synth train --data {camus} --size 4 --device cpu"),
    ("synth-train-steps", "synth train --data {camus} --steps 0 --device cpu"),
    ("synth-train-lr", "synth train --data {camus} --lr -1 --device cpu"),
    ("synth-train-ema", "synth train --data {camus} --ema-decay 2 --device cpu"),
    ("synth-train-dropout", "synth train --data {camus} --cond-dropout 1.5 --device cpu"),
    ("synth-train-corrupt-image", "synth train --data {camus_corrupt} --size 32 --steps 1 --device cpu"),
    ("synth-train-shape-mismatch", "synth train --data {camus_shape} --size 32 --steps 1 --device cpu"),
    ("synth-train-resume-other", "synth train --resume {unet}"),
    ("synth-train-resume-missing", "synth train --resume {root}/nope"),
    ("synth-train-resume-corrupt", "synth train --resume {badrun}"),
    # ---------------------------------------------------------------- synth generate
    ("gen-nothing", "synth generate --device cpu"),
    ("gen-model-missing", "synth generate --model {root}/nope --masks {camus} --device cpu"),
    ("gen-model-data-run", "synth generate --model {camus} --masks {camus} --device cpu"),
    ("gen-model-train-run", "synth generate --model {unet} --masks {camus} --device cpu"),
    ("gen-masks-echonet", "synth generate --model {synth} --masks {echonet} --device cpu"),
    ("gen-masks-corrupt", "synth generate --model {synth} --masks {prompts_corrupt} --device cpu"),
    ("gen-masks-corrupt-image", "synth generate --model {synth} --masks {camus_corrupt} --device cpu"),
    ("gen-masks-shape-mismatch", "synth generate --model {synth} --masks {camus_shape} --device cpu"),
    ("gen-sampler", "synth generate --model {synth} --masks {camus} --sampler x --device cpu"),
    ("gen-balance", "synth generate --model {synth} --masks {camus} --balance foo --device cpu"),
    ("gen-tau-alone", "synth generate --model {synth} --masks {camus} --tau-max 3 --device cpu"),
    ("gen-tau-zero", "synth generate --model {synth} --masks {camus} --balance view --tau-max 0 --device cpu"),
    ("gen-steps", "synth generate --model {synth} --masks {camus} --steps 0 --device cpu"),
    ("gen-count", "synth generate --model {synth} --masks {camus} --count 0 --device cpu"),
    ("gen-guidance", "synth generate --model {synth} --masks {camus} --guidance -2 --device cpu"),
    ("gen-precision", "synth generate --model {synth} --masks {camus} --precision fp8 --device cpu"),
    ("gen-device", "synth generate --model {synth} --masks {camus} --device tpu"),
    ("gen-pipeline-empty", "synth generate --pipeline {empty} --prompts {prompts.txt} --device cpu"),
    ("gen-pipeline-corrupt", "synth generate --pipeline {pipe} --prompts {prompts.txt} --device cpu"),
    ("gen-prompts-missing", "synth generate --pipeline {pipe} --prompts {root}/nope.txt --device cpu"),
    ("gen-resume-other", "synth generate --resume {synth}"),
    # ---------------------------------------------------------------- curate
    ("curate-missing", "curate {root}/nope --skip agreement,bad,dup,zero_shot"),
    ("curate-echonet", "curate {echonet} --skip agreement"),
    ("curate-corrupt-manifest", "curate {prompts_corrupt} --skip agreement"),
    ("curate-segmenter-data-run", "curate {camus} --segmenter {camus}"),
    ("curate-segmenter-corrupt", "curate {camus} --segmenter {unet_corrupt}"),
    ("curate-segmenter-badjson", "curate {camus} --segmenter {unet_badjson}"),
    ("curate-aggregate", "curate {camus} --segmenter {unet} --aggregate x"),
    ("curate-min-dice", "curate {camus} --segmenter {unet} --min-dice 2"),
    ("curate-encoder", "curate {camus} --skip agreement --encoder foo:bar"),
    ("curate-skip", "curate {camus} --skip foo"),
    ("curate-size", "curate {camus} --skip agreement --size abc"),
    ("curate-balance", "curate {camus} --skip agreement --balance foo --tau-max 3"),
    ("curate-real-missing", "curate {camus} --skip agreement --encoder pixels --real {root}/nope"),
    ("curate-real-echonet", "curate {camus} --skip agreement --encoder pixels --real {echonet}"),
    ("curate-device", "curate {camus} --skip agreement --device tpu"),
    ("curate-bad-sim", "curate {camus} --skip agreement --bad-sim 7"),
    ("curate-clip-missing", "curate {camus} --skip agreement,bad,dup --clip-model {root}/nope --device cpu"),
    # ---------------------------------------------------------------- train
    ("train-model", "train {fast} --model foo --data {prompts}"),
    ("train-model-config", "train {fast} --model-config huge --data {prompts}"),
    ("train-prompt", "train {fast} --prompt p9 --data {prompts}"),
    ("train-no-data", "train {fast}"),
    ("train-data-missing", "train {fast} --data {root}/nope"),
    ("train-data-no-prompts", "train {fast} --model clipseg --data {camus}"),
    ("train-unet-nonempty-prompt", "train {fast} --prompt p1 --data {camus} --val-data {echonet}"),
    ("train-data-echonet", "train {fast} --data {echonet}"),
    ("train-data-train-run", "train {fast} --data {unet}"),
    ("train-data-corrupt", "train {fast} --data {prompts_corrupt}"),
    ("train-corrupt-image", "train {fast} --data {prompts_badimg}"),
    ("train-shape-mismatch", "train {fast} --data {prompts_badshape}"),
    ("train-precision", "train {fast} --precision fp8 --data {prompts}"),
    ("train-device", "train {fast} --device tpu --data {prompts}"),
    ("train-epochs", "train {fast} --epochs 0 --data {prompts}"),
    ("train-batch", "train {fast} --batch-size 0 --data {prompts}"),
    ("train-threshold", "train {fast} --threshold 2 --data {prompts}"),
    ("train-lr", "train {fast} --lr -1 --data {prompts}"),
    ("train-eval-size", "train {fast} --eval-size 0 --data {prompts}"),
    ("train-input-size", "train {fast} --input-size 0 --data {prompts}"),
    ("train-init-data-run", "train {fast} --init-from {camus} --data {prompts}"),
    ("train-init-corrupt", "train {fast} --init-from {unet_corrupt} --data {prompts}"),
    ("train-weights-missing", "train {fast} --weights {root}/nope --data {prompts}"),
    ("train-resume-other", "train --resume {camus}"),
    ("train-resume-synth", "train --resume {synth}"),
    ("train-resume-corrupt", "train --resume {badrun}"),
    # ---------------------------------------------------------------- eval seg
    ("seg-run-missing", "eval seg --run {root}/nope --data {prompts}"),
    ("seg-run-data-run", "eval seg --run {camus} --data {prompts}"),
    ("seg-run-corrupt", "eval seg --run {unet_corrupt} --data {prompts} --device cpu"),
    ("seg-run-badjson", "eval seg --run {unet_badjson} --data {prompts} --device cpu"),
    ("seg-data-echonet", "eval seg --run {unet} --data {echonet} --device cpu"),
    ("seg-data-corrupt", "eval seg --run {unet} --data {prompts_corrupt} --device cpu"),
    ("seg-corrupt-image", "eval seg --run {unet} --data {prompts_badimg} --split val --device cpu"),
    ("seg-shape-mismatch", "eval seg --run {unet} --data {prompts_badshape} --split val --device cpu"),
    ("seg-split", "eval seg --run {unet} --data {prompts} --split foo --device cpu"),
    ("seg-prompt", "eval seg --run {unet} --data {prompts} --prompt p9 --device cpu"),
    ("seg-checkpoint", "eval seg --run {unet} --data {prompts} --checkpoint foo --device cpu"),
    ("seg-device", "eval seg --run {unet} --data {prompts} --device tpu"),
    ("seg-precision", "eval seg --run {unet} --data {prompts} --precision fp8 --device cpu"),
    ("seg-threshold", "eval seg --run {unet} --data {prompts} --threshold 5 --device cpu"),
    ("seg-eval-size", "eval seg --run {unet} --data {prompts} --eval-size 0 --device cpu"),
    ("seg-batch", "eval seg --run {unet} --data {prompts} --batch-size 0 --device cpu"),
    # ---------------------------------------------------------------- eval afd
    ("afd-data-missing", "eval afd --data {root}/nope --areas {a.csv}"),
    ("afd-data-camus", "eval afd --data {camus} --run {unet} --device cpu"),
    ("afd-bad-filelist", "eval afd --data {echonet_badlist} --run {unet} --device cpu"),
    ("afd-no-source", "eval afd --data {echonet}"),
    ("afd-two-sources", "eval afd --data {echonet} --areas {a.csv} --run {unet}"),
    ("afd-areas-corrupt", "eval afd --data {echonet} --areas {corrupt.csv}"),
    ("afd-areas-columns", "eval afd --data {echonet} --areas {areas_nocols.csv}"),
    ("afd-areas-missing", "eval afd --data {echonet} --areas {root}/nope.csv"),
    ("afd-masks-missing", "eval afd --data {echonet} --masks {root}/nope"),
    ("afd-masks-empty", "eval afd --data {echonet} --masks {empty}"),
    ("afd-corrupt-video", "eval afd --data {echonet_corrupt} --run {unet} --split all --device cpu"),
    ("afd-split", "eval afd --data {echonet} --run {unet} --split foo --device cpu"),
    ("afd-reference-missing", "eval afd --data {echonet} --run {unet} --reference {root}/nope.csv --device cpu"),
    ("afd-reference-corrupt", "eval afd --data {echonet} --run {unet} --reference {refs_bad.csv} --device cpu"),
    ("afd-threshold", "eval afd --data {echonet} --run {unet} --threshold 2 --device cpu"),
    ("afd-run-data-run", "eval afd --data {echonet} --run {camus} --device cpu"),
    ("afd-run-corrupt", "eval afd --data {echonet} --run {unet_corrupt} --device cpu"),
    ("afd-teacher-kind", "eval afd --data {echonet} --teacher foo:bar --device cpu"),
    ("afd-teacher-corrupt", "eval afd --data {echonet} --teacher deeplabv3:{corrupt.pt} --device cpu"),
    ("afd-teacher-notdeeplab", "eval afd --data {echonet} --teacher deeplabv3:{notcris.pth} --device cpu"),
    ("afd-batch", "eval afd --data {echonet} --run {unet} --batch-size 0 --device cpu"),
    ("afd-device", "eval afd --data {echonet} --run {unet} --device tpu"),
    ("afd-mean-with-run", "eval afd --data {echonet} --run {unet} --mean 1 --device cpu"),
    # ---------------------------------------------------------------- eval echoclip
    ("clip-data-missing", "eval echoclip --data {root}/nope --clip-model x --masks {empty}"),
    ("clip-data-camus", "eval echoclip --data {camus} --clip-model x --masks {empty}"),
    ("clip-model-missing", "eval echoclip --data {echonet} --clip-model {root}/nope --masks {empty} --device cpu"),
    ("clip-model-kind", "eval echoclip --data {echonet} --clip-model foo --masks {empty} --device cpu"),
    ("clip-model-corrupt", "eval echoclip --data {echonet} --clip-model RN50:{corrupt.pt} --masks {empty} "
                           "--device cpu"),
    ("clip-dilate", "eval echoclip --data {echonet} --clip-model x --masks {empty} --dilate -1"),
    ("clip-split", "eval echoclip --data {echonet} --clip-model x --run {unet} --split foo --device cpu"),
    ("clip-device", "eval echoclip --data {echonet} --clip-model x --masks {empty} --device tpu"),
    ("clip-no-source", "eval echoclip --data {echonet} --clip-model x"),
    ("clip-model-zeros", "eval echoclip --data {echonet} --clip-model {clip_zero} --masks {empty} --device cpu"),
    # ---------------------------------------------------------------- distill
    ("distill-no-teacher", "distill --data {echonet} --device cpu"),
    ("distill-teacher-kind", "distill --teacher foo:bar --data {echonet} --device cpu"),
    ("distill-teacher-data-run", "distill --teacher run:{camus} --data {echonet} --device cpu"),
    ("distill-teacher-corrupt", "distill --teacher run:{unet_corrupt} --data {echonet} --device cpu"),
    ("distill-teacher-missing", "distill --teacher deeplabv3:{root}/nope.pt --data {echonet} --device cpu"),
    ("distill-data-missing", "distill --teacher run:{unet} --data {root}/nope --device cpu"),
    ("distill-data-camus", "distill --teacher run:{unet} --data {camus} --device cpu"),
    ("distill-data-badlist", "distill --teacher run:{unet} --data {echonet_badlist} --device cpu"),
    ("distill-eval-split", "distill --teacher run:{unet} --data {echonet} --eval-split foo --device cpu"),
    ("distill-corrupt-video", "distill --teacher run:{unet} --data {echonet_corrupt} --device cpu"),
    ("distill-eval-corrupt-video", "distill --teacher run:{unet} --data {echonet} --eval-data {echonet_corrupt} "
                                   "--eval-split all --device cpu"),
    ("distill-eval-camus", "distill --teacher run:{unet} --data {echonet} --eval-data {camus} --device cpu"),
    ("distill-blocks", "distill --teacher run:{unet} --data {echonet} --blocks 9 --device cpu"),
    ("distill-epochs", "distill --teacher run:{unet} --data {echonet} --epochs 0 --device cpu"),
    ("distill-seq-len", "distill --teacher run:{unet} --data {echonet} --seq-len 0 --device cpu"),
    ("distill-precision", "distill --teacher run:{unet} --data {echonet} --precision fp8 --device cpu"),
    ("distill-device", "distill --teacher run:{unet} --data {echonet} --device tpu"),
    ("distill-resume-other", "distill --resume {unet}"),
    # ---------------------------------------------------------------- stats wilcoxon
    ("stats-one-run", "stats wilcoxon {a.csv}"),
    ("stats-missing", "stats wilcoxon {a.csv} {root}/nope.csv"),
    ("stats-data-run", "stats wilcoxon {camus} {prompts}"),
    ("stats-corrupt", "stats wilcoxon {a.csv} {corrupt.csv}"),
    ("stats-no-pairs", "stats wilcoxon {a.csv} {b.csv}"),
    ("stats-metric", "stats wilcoxon {a.csv} {nometric.csv}"),
    ("stats-metric-unknown", "stats wilcoxon {a.csv} {a.csv} --metric foo"),
    ("stats-correction", "stats wilcoxon {a.csv} {a.csv} --correction x"),
    ("stats-alternative", "stats wilcoxon {a.csv} {a.csv} --alternative x"),
    ("stats-zero-method", "stats wilcoxon {a.csv} {a.csv} --zero-method x"),
    ("stats-alpha", "stats wilcoxon {a.csv} {a.csv} --alpha 2"),
    ("stats-bootstrap", "stats wilcoxon {a.csv} {a.csv} --bootstrap -1"),
    ("stats-regex", "stats wilcoxon {a.csv} {a.csv} --key-regex ("),
    ("stats-key", "stats wilcoxon {a.csv} {a.csv} --key nosuch"),
    ("stats-group-by", "stats wilcoxon {a.csv} {a.csv} --group-by nosuch"),
    # ---------------------------------------------------------------- models convert-cris
    ("cris-missing", "models convert-cris {root}/nope.pth"),
    ("cris-corrupt", "models convert-cris {corrupt.pth}"),
    ("cris-not-cris", "models convert-cris {notcris.pth}"),
    ("cris-folder", "models convert-cris {empty}"),
    ("cris-arch", "models convert-cris {notcris.pth} --arch foo"),
    ("cris-word-len", "models convert-cris {notcris.pth} --word-len 0"),
    ("cris-input-size", "models convert-cris {notcris.pth} --input-size 33"),
    # ---------------------------------------------------------------- report
    ("report-nothing", "report"),
    ("report-missing", "report {root}/nope"),
    ("report-not-run", "report {empty}"),
    ("report-corrupt-run", "report {badrun}"),
    ("report-file", "report {a.csv}"),
    ("report-data-run", "report {camus}"),
]

# Input that can only be found bad once the run has started (log lines may precede the error; a run may be left,
# marked failed). curate loads the CLIP model once, inside the run: a run without artefacts is removed.
LATE = {"curate-clip-missing", "check-bad-filelist", "check-corrupt-image", "check-shape-mismatch",
        "train-corrupt-image", "train-shape-mismatch", "prompts-corrupt-image", "prompts-shape-mismatch"}


LIMIT_S = 30


def _expand(template: str, env: dict[str, str]) -> list[str]:
    """``template`` split on spaces with {name} replaced by the fixture path (names may contain dots)."""
    out = []
    for word in template.split():
        for key in sorted(env, key=len, reverse=True):
            word = word.replace("{" + key + "}", env[key])
        if word == "{fast}":
            out.extend(TRAIN_FAST)
            continue
        assert "{" not in word, word
        out.append(word)
    return out


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root`` (commands never add caches next to their inputs)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


class _TookTooLong(BaseException):
    """Raised by the alarm: the command started real work on nonsense input instead of refusing it."""


def _alarm(signum, frame):  # noqa: ARG001
    raise _TookTooLong


def _assert_refused(argv: list[str], capsys, *, late: bool = False) -> str:
    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    try:
        rc = main(argv)
    except _TookTooLong:
        pytest.fail(f"still running after {LIMIT_S} s (accepted bad input?): {argv}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    cap = capsys.readouterr()
    last = cap.err.strip().splitlines()[-1] if cap.err.strip() else ""
    assert rc == 2, f"rc={rc} for {argv}: {cap.err[-600:]}"
    assert cap.out == "", cap.out
    assert "Traceback" not in cap.err and "internal error" not in cap.err, cap.err
    assert last.startswith("error:"), cap.err
    if not late:  # nothing but the error line
        assert cap.err.strip() == last, cap.err
    return last


@pytest.mark.parametrize(("case", "template"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_leaves_nothing(env, tmp_path, capsys, case, template):
    root = Path(env["root"])
    before = _snapshot(root)
    out = tmp_path / "out"
    argv = _expand(template, env)
    if "--resume" not in argv:
        argv += ["--out", str(out)]
    _assert_refused(argv, capsys, late=case in LATE)
    runs = Path.cwd() / "runs"
    assert not runs.exists() or not any(runs.rglob("run.json")), "a default run directory was left behind"
    if out.exists():
        assert case in LATE, f"{out} left behind"
        assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert _snapshot(root) == before, "an input or earlier run was modified"


@pytest.mark.parametrize("command", [
    "data toy camus --patients 2", "data check {camus}", "prompts build {camus}", "stats wilcoxon {a.csv} {a.csv}",
    "report {unet}", "eval seg --run {unet} --data {prompts} --device cpu", "data toy sdm-camus --patients 1",
    "data toy echonet --videos 1", "synth train --data {camus} --size 32 --steps 1 --device cpu",
    "curate {camus} --skip agreement,bad,dup,zero_shot", "train {fast} --data {prompts}",
    "distill --teacher run:{unet} --data {echonet} --device cpu",
    "eval afd --data {echonet} --areas {areas.csv}",
])
def test_out_that_exists_and_is_not_empty_is_refused_untouched(env, capsys, command):
    root = Path(env["root"])
    before = _snapshot(root)
    last = _assert_refused([*_expand(command, env), "--out", env["notempty"]], capsys)
    assert "--out" in last
    assert sorted(p.name for p in Path(env["notempty"]).iterdir()) == ["keep.txt"]
    assert _snapshot(root) == before


def test_late_bad_input_marks_the_run_failed(env, tmp_path, capsys):
    out = tmp_path / "chk"
    _assert_refused(["data", "check", env["camus_corrupt"], "--out", str(out)], capsys, late=True)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and "unusable" in record["error"]
    assert (out / "problems.csv").read_text().count("\n") >= 2
