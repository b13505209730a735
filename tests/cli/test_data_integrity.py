"""Issue 19 (data integrity): every stage reads data with the checks of `data check`.

Damaged inputs — a truncated ``.nii.gz``, a label map holding label 9, a label map of another size than its image,
an AVI truncated to 9 of its 32 frames, a mask stack shorter than its video, a zero-filled weights file — give exit 2
with one ``error:`` line naming the file, and leave no run behind (or one marked ``failed``, never ``running``).
`eval afd`, `eval echoclip` and `distill` may instead leave a damaged video out with ``--skip-bad``, listing it in
``problems.csv`` and ``summary.json``. ``--balance`` reports ``balanced: false`` with the reason when the pool
cannot meet the caps.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from echoseg.cli import main
from echoseg.core.data.check import check_dataset
from echoseg.core.data.echonet import read_echonet, screen_videos
from echoseg.core.data.imaging import check_pair, load_pair
from echoseg.core.data.manifest import LABEL_SETS, write_manifest
from echoseg.core.data.toy.camus import write_toy_camus
from echoseg.core.data.toy.echonet import write_toy_echonet
from echoseg.core.data.video import load_video, write_video
from echoseg.core.errors import UserError

TRAIN_FAST = ["--model", "unet", "--model-config", "tiny", "--input-size", "16", "--eval-size", "32", "--epochs",
              "1", "--batch-size", "8", "--device", "cpu"]
DISTILL_FAST = ["--blocks", "2", "--layers", "1", "--seq-len", "8", "--batch-size", "4", "--epochs", "1",
                "--device", "cpu"]
FRAMES, KEPT = 32, 9  # toy videos have 32 frames; a damaged one keeps 9
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
DEFECTS = {"truncated": "truncated", "label9": "labels outside 0..", "size": "shape"}  # defect -> reason word


def _ok(argv: list[str]) -> None:
    assert main(argv) == 0, argv


# ----------------------------------------------------------------------------------------------- damage
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _label9(path: Path) -> None:
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img).copy()
    arr[..., 20:28, 20:28] = 9
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))


def _other_size(path: Path) -> None:
    arr = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(arr[:40, :44])), str(path))


def _short_video(path: Path) -> None:
    write_video(path, load_video(path)[:KEPT], 50.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """Toy CAMUS and EchoNet data, the runs the commands need, and damaged copies of the data."""
    import open_clip
    import torch

    r = tmp_path_factory.mktemp("integrity")
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the per-test isolation of conftest
        mp.setenv("ECHOSEG_CACHE", str(r / "cache"))
        return _build(r, open_clip, torch)


def _copy_data(src: Path, dst: Path) -> Path:
    """Copy a data folder; its manifest then names the copy's files."""
    shutil.copytree(src, dst)
    m = dst / "manifest.csv"
    m.write_text(m.read_text().replace(f"{src.resolve()}/", f"{dst.resolve()}/"))
    return dst


def _build(r: Path, open_clip, torch) -> dict[str, Path]:
    camus = r / "camus"
    write_manifest(write_toy_camus(camus, patients=4, size=48), camus / "manifest.csv")  # paths relative to it
    _ok(["prompts", "build", str(camus), "--out", str(r / "prompts")])
    _ok(["train", *TRAIN_FAST, "--data", str(r / "prompts"), "--prompt", "p1", "--out", str(r / "unet")])
    _ok(["synth", "train", "--data", str(camus), "--config", "tiny", "--size", "32", "--steps", "1",
         "--batch-size", "2", "--device", "cpu", "--out", str(r / "synth")])
    filelist = write_toy_echonet(r / "echonet", videos=6, frames=FRAMES, size=32)
    _ok(["distill", "--teacher", f"run:{r / 'unet'}", "--data", str(r / "echonet"), *DISTILL_FAST,
         "--out", str(r / "kd")])

    # every patient's 2CH ED image (or label map) is damaged, so every split meets the damage
    for defect, damage, suffix in (("truncated", _truncate, ".nii.gz"), ("label9", _label9, "_gt.nii.gz"),
                                   ("size", _other_size, "_gt.nii.gz")):
        copy = _copy_data(camus, r / f"camus_{defect}")
        for f in sorted(copy.glob(f"database_nifti/patient*/patient*_2CH_ED{suffix}")):
            damage(f)
        prompts = r / f"prompts_{defect}"  # a prompts run whose manifest points at the damaged copy
        shutil.copytree(r / "prompts", prompts)
        m = prompts / "manifest.csv"
        m.write_text(m.read_text().replace(f"{camus.resolve()}/", f"{copy.resolve()}/"))

    # an EchoNet copy whose first TRAIN video and TEST video keep 9 of their 32 frames
    shutil.copytree(r / "echonet", r / "echonet_short")
    short = [filelist.loc[filelist["Split"] == "TRAIN", "FileName"].iloc[0],
             filelist.loc[filelist["Split"] == "TEST", "FileName"].iloc[0]]
    for name in short:
        _short_video(r / "echonet_short" / "Videos" / f"{name}.avi")
    (r / "short.json").write_text(json.dumps(short))

    # LV masks (uint8 0/255) of every video, and a copy whose first mask stack keeps 9 frames
    (r / "masks").mkdir()
    for name in filelist["FileName"]:
        with np.load(r / "echonet" / "Masks" / f"{name}.npz") as z:
            lv = z[next(iter(z.keys()))]
        np.savez_compressed(r / "masks" / f"{name}.npz", masks=(lv > 0).astype(np.uint8) * 255)
    shutil.copytree(r / "masks", r / "masks_short")
    first = r / "masks_short" / f"{filelist['FileName'].iloc[0]}.npz"
    with np.load(first) as z:
        stack = z["masks"]
    np.savez_compressed(first, masks=stack[:KEPT])
    (r / "empty").mkdir()

    # a tiny random open_clip model, and a folder whose weights file is all zeros
    (r / "configs").mkdir()
    (r / "configs" / "echoseg-test-integrity-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(r / "configs")
    torch.manual_seed(0)
    for folder in ("clip", "clip_zero"):
        (r / folder).mkdir()
        (r / folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.save(open_clip.create_model("echoseg-test-integrity-clip").state_dict(),
               r / "clip" / "open_clip_pytorch_model.bin")
    (r / "clip_zero" / "open_clip_model.safetensors").write_bytes(bytes(4096))

    # a mask source whose sex attribute is skewed: one patient F, the others M
    _copy_data(camus, r / "camus_skew")
    m = pd.read_csv(r / "camus_skew" / "manifest.csv", dtype=str)
    first_patient = sorted(m.loc[m["split"] != "test", "patient"].unique())[0]
    m["sex"] = np.where(m["patient"] == first_patient, "F", "M")
    m.to_csv(r / "camus_skew" / "manifest.csv", index=False)
    return {p.name: p for p in r.iterdir()} | {"root": r}


# ----------------------------------------------------------------------------------------------- helpers
def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _refused(capsys, argv: list[str], out: Path, needle: str) -> str:
    """Exit 2, one ``error:`` line naming ``needle`` last on stderr, nothing on stdout, no run left running or
    looking complete (a run that had written artefacts stays, marked failed)."""
    rc, stdout, stderr = _run(capsys, [*argv, "--out", out])
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    assert rc == 2, stderr[-800:]
    assert stdout == "" and "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert last.startswith("error: ") and needle in last, last
    if out.exists():
        assert json.loads((out / "run.json").read_text())["status"] == "failed"
    runs = Path.cwd() / "runs"
    assert not runs.exists() or not any(runs.rglob("run.json"))
    return last


def _completed(capsys, argv: list[str], out: Path) -> tuple[str, dict]:
    rc, stdout, stderr = _run(capsys, [*argv, "--out", out])
    assert rc == 0, stderr[-800:]
    assert stdout == f"{out}\n"
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    return stderr, json.loads((out / "summary.json").read_text())


# ----------------------------------------------------------------------------------------------- images
COMMANDS = {
    "prompts-build": lambda e, d: ["prompts", "build", e[f"camus_{d}"]],
    "synth-train": lambda e, d: ["synth", "train", "--data", e[f"camus_{d}"], "--config", "tiny", "--size", "32",
                                 "--steps", "1", "--batch-size", "2", "--device", "cpu"],
    "synth-generate": lambda e, d: ["synth", "generate", "--model", e["synth"], "--masks", e[f"camus_{d}"],
                                    "--count", "2", "--steps", "1", "--device", "cpu"],
    "train": lambda e, d: ["train", *TRAIN_FAST, "--data", e[f"prompts_{d}"]],
    "eval-seg": lambda e, d: ["eval", "seg", "--run", e["unet"], "--data", e[f"prompts_{d}"], "--device", "cpu"],
}


@pytest.mark.parametrize("defect", list(DEFECTS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_damaged_images_and_label_maps_are_refused_by_every_stage(env, tmp_path, capsys, command, defect):
    last = _refused(capsys, COMMANDS[command](env, defect), tmp_path / "out", f"camus_{defect}/database_nifti/")
    assert "_2CH_ED" in last and DEFECTS[defect] in last


def test_curate_rejects_damaged_images_and_lists_why(env, tmp_path, capsys):
    """curate is a filter: an unreadable image is rejected (listed with its reason), never kept silently."""
    out = tmp_path / "cur"
    _completed(capsys, ["curate", env["camus_truncated"], "--skip", "agreement,bad,dup,zero_shot"], out)
    rejected = pd.read_csv(out / "rejected.csv")
    unreadable = rejected[rejected["check"] == "unreadable"]
    assert len(unreadable) == 4 and unreadable["detail"].str.contains("truncated").all()
    assert not pd.read_csv(out / "manifest.csv")["image"].str.contains("_2CH_ED.nii").any()


def test_data_check_and_the_readers_share_one_rule(env):
    """`data check` lists exactly what the stages' reader refuses, with the same reason."""
    for defect in DEFECTS:
        root = env[f"camus_{defect}"]
        problems = {p.path: p.reason for p in check_dataset(root).problems if "Info_" not in p.path}
        assert len(problems) == 4, problems
        for image in sorted(root.glob("database_nifti/patient*/patient*_2CH_ED.nii.gz")):
            mask = image.with_name(image.name.replace(".nii.gz", "_gt.nii.gz"))
            found, _ = check_pair(image, mask, LABEL_SETS["camus"])
            assert [(p.path, p.reason) for p in found] == [(str(p), problems[str(p)]) for p in (image, mask)
                                                            if str(p) in problems]
            with pytest.raises(UserError) as err:
                load_pair(image, mask, LABEL_SETS["camus"])
            assert str(err.value) == f"{found[0].path}: {found[0].reason}"


# ----------------------------------------------------------------------------------------------- videos
def test_short_video_is_refused_by_eval_afd_and_skipped_with_skip_bad(env, tmp_path, capsys):
    short = json.loads(env["short.json"].read_text())
    argv = ["eval", "afd", "--data", env["echonet_short"], "--run", env["unet"], "--split", "all", "--device", "cpu"]
    last = _refused(capsys, argv, tmp_path / "bad", "/Videos/")
    assert f"decodes {KEPT} frames, FileList.csv declares NumberOfFrames={FRAMES}" in last and "--skip-bad" in last
    assert not (tmp_path / "bad").exists()  # found before the run directory exists
    out = tmp_path / "skip"
    stderr, summary = _completed(capsys, [*argv, "--skip-bad"], out)
    assert summary["videos_skipped"] == 2 and len(summary["skipped"]) == 2
    assert {Path(s["path"]).stem for s in summary["skipped"]} == set(short)
    problems = pd.read_csv(out / "problems.csv")
    assert list(problems.columns) == ["path", "reason"] and len(problems) == 2
    assert problems["reason"].str.startswith(f"decodes {KEPT} frames").all()
    table = pd.read_csv(out / "per_video.csv")
    assert len(table) == 4 and not set(short) & set(table["FileName"])  # never scored
    assert summary["videos_without_areas"] == 0 and summary["videos_evaluated"] == 4
    assert "warning: skipped" in stderr and "warning: skipped" in (out / "log.txt").read_text()


def test_eval_afd_masks_empty_folder_or_short_masks(env, tmp_path, capsys):
    _refused(capsys, ["eval", "afd", "--data", env["echonet"], "--masks", env["empty"]], tmp_path / "empty",
             "no mask file")
    argv = ["eval", "afd", "--data", env["echonet"], "--masks", env["masks_short"], "--split", "all"]
    last = _refused(capsys, argv, tmp_path / "short", ".npz")
    assert f"holds {KEPT} frames, FileList.csv declares NumberOfFrames={FRAMES}" in last
    _, summary = _completed(capsys, [*argv, "--skip-bad"], tmp_path / "skip")
    assert summary["videos_skipped"] == 1 and summary["videos_evaluated"] == 5
    assert summary["videos_not_in_filelist"] == 0 and summary["videos_without_areas"] == 0


def test_eval_echoclip_zero_weights_short_video_and_skip_bad(env, tmp_path, capsys):
    base = ["eval", "echoclip", "--split", "all", "--device", "cpu", "--batch-size", "16"]
    _refused(capsys, [*base, "--data", env["echonet"], "--masks", env["masks"], "--clip-model", env["clip_zero"]],
             tmp_path / "zero", "open_clip_model.safetensors")
    argv = [*base, "--data", env["echonet_short"], "--masks", env["masks"], "--clip-model", env["clip"]]
    _refused(capsys, argv, tmp_path / "bad", f"decodes {KEPT} frames")
    out = tmp_path / "skip"
    _, summary = _completed(capsys, [*argv, "--skip-bad"], out)
    short = set(json.loads(env["short.json"].read_text()))
    assert summary["videos_skipped"] == 2 and summary["videos_scored"] == 4
    assert not short & set(pd.read_csv(out / "per_video.csv")["FileName"])
    assert len(pd.read_csv(out / "problems.csv")) == 2


def test_distill_refuses_a_short_video_before_training_or_skips_it(env, tmp_path, capsys):
    teacher = f"run:{env['unet']}"
    argv = ["distill", "--teacher", teacher, "--data", env["echonet_short"], *DISTILL_FAST]
    _refused(capsys, argv, tmp_path / "bad", f"decodes {KEPT} frames")
    assert not (tmp_path / "bad").exists()
    # a damaged --eval-data video is found before training, not after it
    _refused(capsys, ["distill", "--teacher", teacher, "--data", env["echonet"], "--eval-data",
                      env["echonet_short"], "--eval-split", "all", *DISTILL_FAST], tmp_path / "eval", "/Videos/")
    assert not (tmp_path / "eval").exists()
    out = tmp_path / "skip"
    _, summary = _completed(capsys, [*argv, "--skip-bad"], out)
    assert summary["videos_skipped"] == 1 and len(pd.read_csv(out / "problems.csv")) == 1
    train = json.loads(env["short.json"].read_text())[0]
    assert summary["skipped"][0]["path"].endswith(f"{train}.avi")


def test_eval_seg_of_a_distillation_run_is_refused(env, tmp_path, capsys):
    _refused(capsys, ["eval", "seg", "--run", env["kd"], "--data", env["prompts"], "--device", "cpu"],
             tmp_path / "out", "distillation run")


def test_data_check_and_screen_videos_share_one_rule(env):
    root = env["echonet_short"]
    problems = check_dataset(root).problems
    assert len(problems) == 2 and all(p.reason.startswith(f"decodes {KEPT} frames") for p in problems)
    table = read_echonet(root)
    usable, skipped = screen_videos(table, skip_bad=True, progress=False)
    assert [(p.path, p.reason) for p in skipped] == [(p.path, p.reason) for p in problems]
    assert len(usable) == 4
    with pytest.raises(UserError, match=re.escape(f"{problems[0].path}: {problems[0].reason}")):
        screen_videos(table, progress=False)


# ----------------------------------------------------------------------------------------------- --balance
def test_balance_that_cannot_be_met_is_reported_unbalanced(env, tmp_path, capsys):
    out = tmp_path / "gen"
    stderr, summary = _completed(capsys, ["synth", "generate", "--model", env["synth"], "--masks", env["camus_skew"],
                                          "--copies-per-mask", "1", "--steps", "1", "--balance", "view,sex",
                                          "--device", "cpu"], out)
    report = json.loads((out / "balance.json").read_text())
    assert report["after"]["sex"] == {"F": 4, "M": 8}  # every map drawn once: the pool's own skew
    assert report["balanced"] is False and summary["distribution"]["balanced"] is False
    assert report["reason"].startswith("sex: F 4, M 8; M over the cap of 6")
    assert report["caps"] == {"view": 6, "sex": 6}
    assert "warning: --balance view,sex not met" in stderr
    assert "warning: --balance view,sex not met" in (out / "log.txt").read_text()
    # a count the pool can balance is reported balanced
    out = tmp_path / "gen2"
    _, summary = _completed(capsys, ["synth", "generate", "--model", env["synth"], "--masks", env["camus_skew"],
                                     "--copies-per-mask", "1", "--count", "8", "--steps", "1", "--balance",
                                     "view,sex", "--device", "cpu"], out)
    report = summary["distribution"]
    assert report["balanced"] is True and report["reason"] is None
    assert all(max(c.values()) - min(c.values()) <= 1 for c in report["after"].values()), report["after"]
