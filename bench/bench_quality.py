"""Quality benchmark of `echoseg train`: test Dice of U-Net, CLIPSeg and CRIS on toy CAMUS within a CPU budget.

Target (issues "echoseg train" and "CRIS"): on toy CAMUS with 40 patients, each model reaches a mean test Dice
>= 0.80 over the three structures (LV, MYO, LA) within 15 CPU minutes.

What runs: ``echoseg data toy camus`` (40 patients, 128x128) and ``echoseg prompts build`` into a temporary
folder, then for each model ``echoseg train`` in its own subprocess (``--device cpu``, ``OMP_NUM_THREADS`` =
``--threads``) with the settings in :data:`SETTINGS` (the model's ``tiny`` config plus CLI options chosen to
converge within the budget; epochs are fixed up front, the engine's early stopping may end sooner). The test split
is scored at the data's native size (``--eval-size 128``).

Measured per model: the mean test Dice over the three structures and per structure (from the run's
``summary.json``, best-validation-Dice checkpoint), the CPU time of the training process (user + system, from
``getrusage(RUSAGE_CHILDREN)``; it covers cache building, training and the test evaluation), its wall time and
wall x threads (both inflated when the machine is shared), the best epoch and the epochs run. The CPU time is the
budget measure because the machine may be loaded by other work; ``OMP_WAIT_POLICY=PASSIVE`` keeps idle OpenMP
threads from spinning so it counts work, not waiting.

Recorded curves (``bench/quality/``): ``curves.csv`` (model, epoch, train/val loss, val Dice, lr, seconds),
``curves.png`` (val Dice and losses per epoch) and ``results.json`` (settings and metrics).

Run: ``python bench/bench_quality.py [--models unet,clipseg,cris] [--patients 40] [--budget-min 15]
[--threads 2]`` (prints JSON), or ``python bench/run_all.py --timeout 5400 quality``. Slow (up to ~45 CPU minutes
for the three models); not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

BENCH_DIR = Path(__file__).resolve().parent
QUALITY_DIR = BENCH_DIR / "quality"
MODELS = ("unet", "clipseg", "cris")
TARGET_DICE = 0.80
SIZE = 128
STRUCTURES = ("LV", "MYO", "LA")

# CLI options per model (on top of --model, --device cpu, --eval-size, --data, --out), chosen with short runs so
# that training converges well inside the budget on 2 cores.
SETTINGS: dict[str, list[str]] = {
    "unet": ["--config", "tiny", "--input-size", "64", "--batch-size", "8", "--lr", "3e-3", "--epochs", "40"],
    # CLIPSeg tiny's ViT has an 8x8 grid of learned positions (image_size 32, patch 4): at 32 px it learns fastest;
    # larger inputs interpolate the positions and learned slower in our short runs. Augmentation curbs overfitting.
    "clipseg": ["--config", "tiny", "--input-size", "32", "--batch-size", "8", "--lr", "2e-3", "--epochs", "500",
                "--plateau-patience", "20", "--early-stop-patience", "60", "--augment"],
    "cris": ["--config", "tiny", "--input-size", "64", "--batch-size", "8", "--lr", "1e-3", "--epochs", "80",
             "--plateau-patience", "10", "--early-stop-patience", "20"],
}

_CLI = "import sys; from echoseg.cli import main; sys.exit(main(sys.argv[1:]))"


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=os.pathsep.join(filter(None, [str(BENCH_DIR.parent), os.environ.get("PYTHONPATH")])))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, float]:
    """Run ``echoseg ARGS`` in a subprocess; return its (CPU seconds, wall seconds). Raises on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI, "--no-progress", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"echoseg {' '.join(args[:3])} ... exited {proc.returncode}:\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def make_data(work: Path, patients: int, threads: int) -> Path:
    """Toy CAMUS (``patients`` patients, 128x128) and its prompts run; returns the prompts run folder."""
    env = _env(threads)
    _cli(["data", "toy", "camus", "--patients", str(patients), "--size", str(SIZE), "--out", str(work / "camus")],
         env, 600)
    _cli(["prompts", "build", str(work / "camus"), "--out", str(work / "prompts")], env, 600)
    return work / "prompts"


def train_one(model: str, prompts: Path, work: Path, threads: int, budget_min: float) -> tuple[dict, pd.DataFrame]:
    """Train ``model`` with its :data:`SETTINGS`; return its metrics and its per-epoch curve."""
    out = work / f"train-{model}"
    args = ["train", "--model", model, *SETTINGS[model], "--device", "cpu", "--eval-size", str(SIZE),
            "--data", str(prompts), "--out", str(out)]
    # Safety net only: on a shared machine wall time can far exceed CPU time, so allow several budgets.
    cpu, wall = _cli(args, _env(threads), timeout=max(600.0, 6 * budget_min * 60))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    per = summary["test"]["per_structure"]
    dice = {s: float(per[s]["dice_mean"]) for s in STRUCTURES}
    curve = pd.DataFrame([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line])
    curve.insert(0, "model", model)
    metrics = {
        "test_dice": sum(dice.values()) / len(dice),
        **{f"test_dice_{s}": d for s, d in dice.items()},
        "cpu_min": cpu / 60,
        "wall_min": wall / 60,
        "wall_x_threads_min": wall * threads / 60,
        "train_s": float(summary["train_time_s"]),
        "best_epoch": int(summary["best_epoch"]),
        "epochs_run": int(summary["epochs_run"]),
        "best_val_dice": float(summary["best_val_dice"]),
    }
    return metrics, curve


def plot_curves(curves: pd.DataFrame, path: Path) -> None:
    """Validation Dice and train/val loss per epoch, one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from echoseg.core.io import save_figure

    fig, (ax_d, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (model, c) in enumerate(curves.groupby("model", sort=False)):
        colour = f"C{k}"
        ax_d.plot(c["epoch"], c["val_dice"], color=colour, label=model)
        best = c.loc[c["val_dice"].idxmax()]
        ax_d.plot([best["epoch"]], [best["val_dice"]], "o", color=colour)
        ax_l.plot(c["epoch"], c["train_loss"], color=colour, label=f"{model} train")
        ax_l.plot(c["epoch"], c["val_loss"], "--", color=colour, label=f"{model} val")
    ax_d.axhline(TARGET_DICE, color="grey", lw=0.8, ls=":")
    ax_d.set(xlabel="epoch", ylabel="val Dice", title="Validation Dice (dot: best epoch)", ylim=(0, 1))
    ax_l.set(xlabel="epoch", ylabel="loss (Dice + 0.2 BCE)", title="Loss", yscale="log")
    ax_d.legend()
    ax_l.legend(fontsize=7)
    save_figure(path, fig)


def _merge_curves(new: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Replace the rows of the models just trained in a previous curves.csv, keep the others."""
    if path.is_file():
        old = pd.read_csv(path)
        new = pd.concat([old[~old["model"].isin(new["model"].unique())], new], ignore_index=True)
    return new


def run(models: tuple[str, ...] | list[str] = MODELS, patients: int = 40, budget_min: float = 15.0,
        threads: int = 2, work: Path | None = None) -> dict:
    """Train each model on toy CAMUS and check test Dice >= 0.80 within ``budget_min`` CPU minutes each."""
    from echoseg.core.io import write_csv, write_json

    unknown = [m for m in models if m not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="echoseg-quality-")
        work = Path(tmp.name)
    try:
        work.mkdir(parents=True, exist_ok=True)
        prompts = make_data(work, patients, threads)
        metrics: dict = {"patients": patients, "threads": threads, "input_px": SIZE}
        curves, ok = [], True
        for model in models:
            print(f"[quality] training {model} ...", file=sys.stderr, flush=True)
            m, curve = train_one(model, prompts, work, threads, budget_min)
            print(f"[quality] {model}: test dice {m['test_dice']:.4f}, {m['cpu_min']:.1f} CPU min, "
                  f"{m['wall_min']:.1f} wall min", file=sys.stderr, flush=True)
            ok = ok and m["test_dice"] >= TARGET_DICE and m["cpu_min"] <= budget_min
            metrics.update({f"{model}_{k}": v for k, v in m.items()})
            curves.append(curve)
    finally:
        if tmp is not None:
            tmp.cleanup()
    QUALITY_DIR.mkdir(parents=True, exist_ok=True)
    all_curves = _merge_curves(pd.concat(curves, ignore_index=True), QUALITY_DIR / "curves.csv")
    write_csv(QUALITY_DIR / "curves.csv", all_curves)
    plot_curves(all_curves, QUALITY_DIR / "curves.png")
    target = (f"each of {', '.join(models)}: mean test Dice (LV, MYO, LA) >= {TARGET_DICE:.2f} within "
              f"{budget_min:g} CPU minutes (cpu_min)")
    result = {"name": "quality",
              "description": "test Dice of `echoseg train` on toy CAMUS (tiny configs, CPU); curves in "
                             "bench/quality/",
              "metrics": metrics, "target": target, "passed": ok}
    write_json(QUALITY_DIR / "results.json", result | {"settings": {m: SETTINGS[m] for m in models}})
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print the result as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: unet,clipseg,cris")
    ap.add_argument("--patients", type=int, default=40, help="toy CAMUS patients (default 40)")
    ap.add_argument("--budget-min", type=float, default=15.0, help="CPU minutes allowed per model (default 15)")
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of each training (default 2)")
    ap.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temp folder)")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    result = run(models, args.patients, args.budget_min, args.threads, args.work)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
