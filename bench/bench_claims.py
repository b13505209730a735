"""Claims benchmark: does synthetic pre-training help when real training patients are scarce? (issue 18, item 5)

The data-scarcity experiment of Synthetic Boost, on toy CAMUS: a tiny U-Net trained on real images only vs the same
U-Net pre-trained on one fixed synthetic set and fine-tuned on the real images (synth-PT:real-FT), at 2, 4, 8 and 16
real training patients. The result is measured and reported whichever way it goes; nothing is gated on its
direction.

What runs (all through the ``echoseg`` CLI, in-process, in a temporary folder):

1. The real cohort: ``echoseg data toy camus`` (36 patients, 128 px) and ``echoseg prompts build --splits`` with a
   fixed split: 16 train, 4 val, 16 test patients. ``--train-fraction N/16`` then keeps exactly N train patients
   (N/16 is exact in binary floating point and the subset is ``ceil(fraction x 16)`` patients, nested across N for
   one seed); each run's ``summary.json`` is checked for N patients.
2. The synthetic set, from mask-conditioned diffusion as in "Echo from noise" (the generator Synthetic Boost's SDM
   CAMUS came from): a second toy CAMUS cohort (other patients, other seed) trains ``echoseg synth train --config
   tiny`` at 32 px, and ``echoseg synth generate`` samples images (DDIM) from perturbed copies of that cohort's
   label maps; ``prompts build --dataset sdm-camus`` makes it trainable. The generator never sees a patient of the
   real cohort, so the synthetic set carries no information about the real train or test patients (the toy's own
   SDM generator, ``data toy sdm-camus``, was not used: it renders with the very renderer of the real toy images,
   i.e. it would be more real data, not synthetic data with a domain gap).
3. Per seed: synth-PT (``train --train-data SYN --val-data SYN --test-data REAL``; its test Dice is the
   synthetic-only reference), then for each N: real-only (``train --data REAL --train-fraction N/16``) and
   synth-PT:real-FT (the same plus ``--init-from`` the seed's PT run). Both strategies at one (N, seed) train on the
   same patients for the same number of optimiser steps (:data:`FT_STEPS`, epochs sized from N so that small N
   is not under-trained; the plateau patience is a fixed number of steps; early stopping off) and are scored on
   the same 16 real test patients with the best-validation checkpoint.

Statistics per N: each test sample's Dice is averaged over the seeds; mean Dice with a 95 % percentile-bootstrap CI
over test samples (:func:`echoseg.core.stats.wilcoxon.bootstrap_mean_ci`, 1,000 resamples) per strategy; a paired
Wilcoxon signed-rank test of PT-FT minus real-only by ``echoseg stats wilcoxon`` on the two seed-averaged
per-sample files, its p-values Holm-adjusted across the four N. The finding (which strategy wins at which N) is
composed from those numbers. Curve: ``bench/claims_data_scarcity.png``.

Run: ``python bench/bench_claims.py [--seeds 0,1] [--ns 2,4,8,16] [--work DIR]`` (prints JSON) or
``python bench/run_all.py claims``. About 10 CPU minutes (one torch thread; 17 wall minutes on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _toy import echoseg as _echoseg  # noqa: E402

NAME = "claims"
BENCH_DIR = Path(__file__).resolve().parent
FIGURE = BENCH_DIR / "claims_data_scarcity.png"
NS = (2, 4, 8, 16)
SEEDS = (0, 1, 2)
SPLITS = {"train": 16, "val": 4, "test": 16}  # patients of the real cohort, in this order
SIZE = 128  # toy image side (scored at this size)
INPUT = 64  # U-Net input side
BATCH = 8
LR = 3e-3
FT_STEPS = 240  # optimiser steps of every real-only and fine-tuning run
PT_EPOCHS = 6  # epochs of synthetic pre-training
PLATEAU_STEPS = 60  # ReduceLROnPlateau patience, in steps
GEN_PATIENTS = 20  # the generator cohort
SYNTH = {"size": 32, "steps": 1500, "batch": 8, "lr": 2e-3, "copies": 3, "ddim_steps": 25}
ALPHA = 0.05
N_BOOT = 1000
BUDGET_MIN = 20.0
THREADS = 1  # torch threads: on a shared 2-core machine one thread is faster than two contended ones
STRATEGIES = {"real": "real-only", "ptft": "synth-PT:real-FT"}


def echoseg(*args: str | int | float | Path) -> Path:
    """One ``echoseg`` command in-process, progress bars off; returns its run directory (``--out``)."""
    return _echoseg("--no-progress", *map(str, args))


def _fraction(n: int) -> str:
    """``--train-fraction`` for exactly ``n`` of the cohort's train patients (exact for powers of two)."""
    frac = n / SPLITS["train"]
    if math.ceil(frac * SPLITS["train"]) != n:
        raise ValueError(f"{n} patients cannot be drawn exactly from {SPLITS['train']}")
    return repr(frac)


def make_real(work: Path) -> tuple[Path, int]:
    """The real cohort with the fixed split; returns (prompts run, manifest rows per patient)."""
    total = sum(SPLITS.values())
    camus = echoseg("data", "toy", "camus", "--patients", total, "--size", SIZE, "--seed", 0,
                    "--out", work / "real-camus")
    names = sorted(pd.read_csv(camus / "manifest.csv")["patient"].astype(str).unique())
    if len(names) != total:
        raise RuntimeError(f"toy CAMUS wrote {len(names)} patients, expected {total}")
    splits = [s for s, k in SPLITS.items() for _ in range(k)]
    pd.DataFrame({"patient": names, "split": splits}).to_csv(work / "splits.csv", index=False)
    prompts = echoseg("prompts", "build", camus, "--splits", work / "splits.csv", "--out", work / "real-prompts")
    manifest = pd.read_csv(prompts / "manifest.csv")
    train = manifest[manifest["split"] == "train"]
    if train["patient"].nunique() != SPLITS["train"]:
        raise RuntimeError(f"{prompts}: {train['patient'].nunique()} train patients, expected {SPLITS['train']}")
    return prompts, len(train) // SPLITS["train"]


def make_synthetic(work: Path) -> tuple[Path, dict[str, float]]:
    """Diffusion-generated SDM CAMUS set from a disjoint cohort; returns (its prompts run, timings and counts)."""
    t0 = time.perf_counter()
    gen = echoseg("data", "toy", "camus", "--patients", GEN_PATIENTS, "--size", SIZE, "--seed", 1,
                  "--out", work / "gen-camus")
    model = echoseg("synth", "train", "--data", gen, "--config", "tiny", "--size", SYNTH["size"],
                    "--steps", SYNTH["steps"], "--batch-size", SYNTH["batch"], "--lr", SYNTH["lr"],
                    "--checkpoint-every", SYNTH["steps"], "--device", "cpu", "--out", work / "synth-train")
    t1 = time.perf_counter()
    synth = echoseg("synth", "generate", "--model", model, "--masks", gen, "--copies-per-mask", SYNTH["copies"],
                    "--sampler", "ddim", "--steps", SYNTH["ddim_steps"], "--device", "cpu",
                    "--out", work / "synth-generate")
    t2 = time.perf_counter()
    prompts = echoseg("prompts", "build", synth, "--dataset", "sdm-camus", "--out", work / "synth-prompts")
    images = pd.read_csv(prompts / "manifest.csv")["image"].nunique()
    return prompts, {"synth_images": int(images), "synth_train_s": round(t1 - t0, 1),
                     "synth_generate_s": round(t2 - t1, 1)}


def _train(out: Path, seed: int, epochs: int, plateau: int, *data: str | Path) -> dict:
    """One ``echoseg train --model unet --config tiny`` run; returns its summary.json."""
    echoseg("train", "--model", "unet", "--config", "tiny", "--input-size", INPUT, "--eval-size", SIZE,
            "--batch-size", BATCH, "--lr", LR, "--epochs", epochs, "--plateau-patience", plateau,
            "--early-stop-patience", epochs, "--prompt", "p0", "--seed", seed, "--device", "cpu",
            *data, "--out", out)
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def _epochs_for(samples: int) -> tuple[int, int]:
    """(epochs, plateau patience in epochs) giving about FT_STEPS steps over ``samples`` training samples."""
    per_epoch = math.ceil(samples / BATCH)
    return math.ceil(FT_STEPS / per_epoch), max(1, math.ceil(PLATEAU_STEPS / per_epoch))


def per_sample(run: Path) -> pd.Series:
    """Test Dice per sample_id of a training run (its per_sample.csv)."""
    frame = pd.read_csv(run / "per_sample.csv")
    return frame.set_index("sample_id")["dice"].astype(float).sort_index()


def train_all(work: Path, real: Path, synth: Path, rows_per_patient: int, ns: tuple[int, ...],
              seeds: tuple[int, ...]) -> tuple[dict[tuple[int, str], list[pd.Series]], dict]:
    """Every run of the experiment; returns per-sample test Dice by (N, strategy) (one Series per seed) and extras."""
    dice: dict[tuple[int, str], list[pd.Series]] = {}
    extra: dict = {"pt_test_dice": [], "pt_s": [], "ft_s": []}
    syn_rows = pd.read_csv(synth / "manifest.csv")
    syn_train = int((syn_rows["split"] == "train").sum())
    pt_plateau = max(1, math.ceil(PLATEAU_STEPS / math.ceil(syn_train / BATCH)))
    for seed in seeds:
        t = time.perf_counter()
        pt = work / f"pt-seed{seed}"
        summary = _train(pt, seed, PT_EPOCHS, pt_plateau, "--train-data", synth, "--val-data", synth,
                         "--test-data", real)
        extra["pt_test_dice"].append(float(summary["test"]["overall"]["dice_mean"]))
        extra["pt_s"].append(time.perf_counter() - t)
        for n in ns:
            epochs, plateau = _epochs_for(n * rows_per_patient)
            for key in STRATEGIES:
                t = time.perf_counter()
                out = work / f"{key}-n{n}-seed{seed}"
                init = ["--init-from", pt] if key == "ptft" else []
                summary = _train(out, seed, epochs, plateau, "--data", real, "--train-fraction", _fraction(n), *init)
                got = summary["data"]["train"]["subset"]["patients"]
                if got != n:
                    raise RuntimeError(f"{out}: trained on {got} patients, expected exactly {n}")
                extra["ft_s"].append(time.perf_counter() - t)
                dice.setdefault((n, key), []).append(per_sample(out))
                print(f"[claims] seed {seed} N={n} {key}: test dice {summary['test']['overall']['dice_mean']:.4f} "
                      f"({epochs} epochs, {time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    return dice, extra


def wilcoxon(work: Path, n: int, real: pd.Series, ptft: pd.Series) -> dict:
    """``echoseg stats wilcoxon`` of seed-averaged per-sample Dice, PT-FT (B) minus real-only (A), at one N."""
    files = []
    for key, values in (("real", real), ("ptft", ptft)):
        path = work / f"per-sample-{key}-n{n}.csv"
        values.rename("dice").rename_axis("sample_id").reset_index().to_csv(path, index=False)
        files.append(path)
    out = echoseg("stats", "wilcoxon", *files, "--correction", "none", "--bootstrap", N_BOOT,
                  "--out", work / f"stats-n{n}")
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))["results"][0]


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children so far."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                resource.getrusage(resource.RUSAGE_CHILDREN)))


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def finding(rows: list[dict], pt_dice: float) -> str:
    """The measured finding in words: which strategy wins at which N (Holm-adjusted Wilcoxon), and by how much."""
    better, worse, tie = [], [], []
    for r in rows:
        (better if r["p_holm"] < ALPHA and r["diff"] > 0 else
         worse if r["p_holm"] < ALPHA and r["diff"] < 0 else tie).append(r)

    def ns(group: list[dict]) -> str:
        return ", ".join(str(r["n"]) for r in group)

    parts = []
    if better:
        parts.append(f"synth-PT:real-FT beat real-only at N = {ns(better)} real training patients")
    if worse:
        parts.append(f"real-only beat synth-PT:real-FT at N = {ns(worse)}")
    if tie:
        parts.append(f"no significant difference at N = {ns(tie)} (Holm-adjusted Wilcoxon p >= {ALPHA})")
    points = "; ".join(
        f"N={r['n']}: {r['ptft']:.3f} [{r['ptft_lo']:.3f}, {r['ptft_hi']:.3f}] vs {r['real']:.3f} "
        f"[{r['real_lo']:.3f}, {r['real_hi']:.3f}], diff {r['diff']:+.3f}, p {_fmt_p(r['p'])} "
        f"(Holm {_fmt_p(r['p_holm'])})" for r in rows)
    largest = max(rows, key=lambda r: r["diff"])
    diffs = " / ".join(f"{r['diff']:+.3f}" for r in rows)
    gap = (f" The difference PT-FT minus real-only ran {diffs} at N = {' / '.join(str(r['n']) for r in rows)}, "
           f"largest at N={largest['n']}.")
    noisy = [r for r in rows if abs(r["diff"]) < max(r["real_seed_sd"], r["ptft_seed_sd"])]
    if noisy:
        gap += (f" At N = {ns(noisy)} it is smaller than the seed-to-seed SD of a strategy's mean Dice (the test "
                "treats test samples, not training runs, as the unit).")
    text = "; ".join(parts)
    return (f"{text[:1].upper()}{text[1:]}.{gap} Mean test Dice, PT-FT vs real-only [95% bootstrap CI]: "
            f"{points}. Synthetic-only (the PT runs on the real test set): {pt_dice:.3f}.")


def plot(rows: list[dict], path: Path, seeds: int) -> None:
    """Mean test Dice with CI bands vs real training patients, both strategies; * marks Holm p < ALPHA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from echoseg.core.io import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["n"] for r in rows]
    for k, (key, label) in enumerate(STRATEGIES.items()):
        y = [r[key] for r in rows]
        ax.fill_between(x, [r[f"{key}_lo"] for r in rows], [r[f"{key}_hi"] for r in rows], color=f"C{k}",
                        alpha=0.2, lw=0)
        ax.plot(x, y, "o-", color=f"C{k}", label=label)
    top = max(max(r["real_hi"], r["ptft_hi"]) for r in rows)
    for r in rows:
        if r["p_holm"] < ALPHA:
            ax.annotate("*", (r["n"], top), ha="center", va="bottom", fontsize=14)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(n) for n in x])
    ax.set(xlabel="real training patients", ylabel="mean test Dice (LV, MYO, LA)",
           title=f"Toy CAMUS data scarcity ({seeds} seed(s); band: 95% bootstrap CI; *: Holm p < {ALPHA})")
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right")
    save_figure(path, fig)


def run(ns: tuple[int, ...] = NS, seeds: tuple[int, ...] = SEEDS, work: Path | None = None,
        figure: Path = FIGURE) -> dict:
    """The data-scarcity experiment; result in the bench/run_all.py format (plus the finding)."""
    import torch

    from echoseg.core.stats.wilcoxon import adjust_pvalues, bootstrap_mean_ci

    torch.set_num_threads(THREADS)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="echoseg-claims-")
        work = Path(tmp.name)
    try:
        work.mkdir(parents=True, exist_ok=True)
        real, rows_per_patient = make_real(work)
        synth, synth_info = make_synthetic(work)
        dice, extra = train_all(work, real, synth, rows_per_patient, tuple(ns), tuple(seeds))
        test_ids = dice[(ns[0], "real")][0].index
        rows = []
        for n in ns:
            means = {}
            for key in STRATEGIES:
                runs = dice[(n, key)]
                if any(not s.index.equals(test_ids) for s in runs):
                    raise RuntimeError(f"N={n} {key}: runs were not scored on the same test samples")
                means[key] = pd.concat(runs, axis=1).mean(axis=1)
            test = wilcoxon(work, n, means["real"], means["ptft"])
            row = {"n": n, "diff": float(test["mean_diff"]), "diff_lo": float(test["ci_low"]),
                   "diff_hi": float(test["ci_high"]), "p": float(test["p_value"]),
                   "r_rb": float(test["rank_biserial"])}
            for key, values in means.items():
                lo, hi = bootstrap_mean_ci(values.to_numpy(), N_BOOT, seed=0)
                row |= {key: float(values.mean()), f"{key}_lo": lo, f"{key}_hi": hi,
                        f"{key}_seed_sd": float(np.std([s.mean() for s in dice[(n, key)]], ddof=int(len(seeds) > 1)))}
            rows.append(row)
        for row, p in zip(rows, adjust_pvalues([r["p"] for r in rows], "holm"), strict=True):
            row["p_holm"] = float(p)
    finally:
        if tmp is not None:
            tmp.cleanup()
    plot(rows, figure, len(seeds))
    wall_min, cpu_min = (time.perf_counter() - t0) / 60, (_cpu_s() - cpu0) / 60
    metrics: dict = {"seeds": len(seeds), "test_samples": len(test_ids), "real_train_patients_pool": SPLITS["train"],
                     **synth_info, "ft_steps": FT_STEPS,
                     "pt_test_dice": float(np.mean(extra["pt_test_dice"]))}
    for r in rows:
        n = r["n"]
        for key in STRATEGIES:
            metrics |= {f"n{n}_{key}_dice": r[key], f"n{n}_{key}_ci_low": r[f"{key}_lo"],
                        f"n{n}_{key}_ci_high": r[f"{key}_hi"], f"n{n}_{key}_seed_sd": r[f"{key}_seed_sd"]}
        metrics |= {f"n{n}_diff_ptft_minus_real": r["diff"], f"n{n}_diff_ci_low": r["diff_lo"],
                    f"n{n}_diff_ci_high": r["diff_hi"], f"n{n}_wilcoxon_p": r["p"], f"n{n}_p_holm": r["p_holm"],
                    f"n{n}_rank_biserial": r["r_rb"]}
    metrics |= {"pt_run_s_mean": float(np.mean(extra["pt_s"])), "train_run_s_mean": float(np.mean(extra["ft_s"])),
                "cpu_min": cpu_min, "wall_min": wall_min}
    rel = figure.relative_to(BENCH_DIR) if figure.is_relative_to(BENCH_DIR) else figure
    return {
        "name": NAME,
        "description": (f"data scarcity on toy CAMUS: tiny U-Net, real-only vs synth-PT:real-FT (one diffusion-"
                        f"generated synthetic set) at {', '.join(map(str, ns))} real training patients; test Dice "
                        f"on {len(test_ids)} samples of {SPLITS['test']} patients, averaged over {len(seeds)} "
                        f"seed(s); paired Wilcoxon per N, Holm-adjusted. Curve: [{rel}]({rel})"),
        "finding": finding(rows, metrics["pt_test_dice"]),
        "metrics": metrics,
        "target": (f"each point trained on exactly N real patients (checked) and scored on the same test set; the "
                   f"whole benchmark within {BUDGET_MIN:g} CPU minutes (cpu_min; one torch thread, so about as many "
                   "wall minutes on an idle 2-core machine); the direction of the effect is reported, not gated"),
        "passed": cpu_min <= BUDGET_MIN,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print the result as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default=",".join(map(str, NS)), help="real training patients, e.g. 2,4,8,16")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="training seeds, e.g. 0,1")
    ap.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temp folder)")
    ap.add_argument("--figure", type=Path, default=FIGURE, help=f"PNG curve (default {FIGURE})")
    args = ap.parse_args(argv)
    result = run(tuple(int(v) for v in args.ns.split(",")), tuple(int(v) for v in args.seeds.split(",")),
                 args.work, args.figure.resolve())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
