"""`synth generate --model`: perturbed real label maps -> sampled images, written as an SDM CAMUS data set.

Output (the layout ``echoseg.core.data.sdm_camus`` reads; ``<split>`` is ``training`` or ``validation``)::

    <run>/<VIEW>_<PHASE>/images/<split>/patientNNNN_<VIEW>_<PHASE>_<split>_<k>.png        generated image
    <run>/<VIEW>_<PHASE>/annotations/<split>/patientNNNN_<VIEW>_<PHASE>_<split>_<k>.png   sector label map
    <run>/plan.csv        every planned sample: source, copy k, seed, perturbation parameters, file names
    <run>/manifest.csv    one row per (generated image, structure): attributes inherited from the source patient,
                          perturbation parameters, seed, sampler (written when all samples exist)
    <run>/balance.json    attribute distribution of the sources and of the generated set (age in bins)
    <run>/regenerate.csv, rejected/   with --regenerate-bad: a sample too similar to a known-bad image is sampled
                          again from the same label map with new noise seeds (:mod:`echoseg.core.synth.regenerate`);
                          the manifest's ``noise_seed`` is the kept attempt's, ``tries`` and ``bad_sim`` its check

Source label maps come from the ``train`` and ``val`` splits only (SDM CAMUS names ``testing`` images real, and
test anatomy must not leak into training data). Sample ``i`` uses seed ``seed + i`` for both its perturbation
and its diffusion noise, so the plan and every image are reproducible; a sample is done when its image file
exists (label map first, image second, both written atomically), which makes the command resumable and
idempotent. Under ``accelerate launch`` process ``r`` of ``n`` generates the samples with ``i % n == r`` and the
main process writes the manifest after all have finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from echoseg.core.console import track
from echoseg.core.data.manifest import write_manifest
from echoseg.core.data.sdm_camus import SDM_LABELS
from echoseg.core.errors import UserError
from echoseg.core.io import write_csv, write_json, write_png
from echoseg.core.models.diffusion import load_model
from echoseg.core.runs import Run
from echoseg.core.synth.balance import BALANCE_ATTRIBUTES, balance_report, balanced_indices, distribution
from echoseg.core.synth.perturb import PerturbConfig, PerturbParams, apply_params, sample_params
from echoseg.core.synth.regenerate import Gate, Sample, gate_summary, load_records, regenerate_bad, write_records
from echoseg.core.synth.sample import SAMPLERS, make_sampler, sample
from echoseg.core.synth.train import load_pairs

SPLIT_WORDS = {"train": "training", "val": "validation"}
PARAM_COLUMNS = ("rotation", "tx", "ty", "scale", "shear", "elastic_seed", "elastic_px", "grid")
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def source_pool(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the source table usable for generation (train and val splits; all rows without a split)."""
    if "split" not in table:
        return table.copy()
    return table[table["split"].astype(str).isin(list(SPLIT_WORDS))].copy()


def plan_samples(
    table: pd.DataFrame,
    *,
    count: int | None,
    copies_per_mask: int,
    seed: int,
    size: int,
    balance: tuple[str, ...] = (),
    tau_max: int | None = None,
    perturb: PerturbConfig | None = None,
) -> pd.DataFrame:
    """The deterministic list of samples to generate (one row each) from the source table of :func:`load_pairs`.

    Without ``balance``: every source map gets copies 0..K-1 in round-robin order, cut to ``count``. With it:
    ``count`` draws balanced over the attributes, each source at most K times.

    Raises:
        UserError: no usable source, or ``count`` larger than the sources allow.
    """
    if copies_per_mask < 1:
        raise UserError(f"--copies-per-mask must be >= 1, got {copies_per_mask}")
    sources = source_pool(table)
    sources["source_row"] = sources.index
    sources = sources.reset_index(drop=True)
    if sources.empty:
        raise UserError("no train/val label maps among the masks (test-split maps are never used for generation)")
    total = count if count is not None else len(sources) * copies_per_mask
    if total < 1:
        raise UserError(f"--count must be >= 1, got {total}")
    if total > len(sources) * copies_per_mask:
        raise UserError(f"--count {total} exceeds {len(sources)} label maps x --copies-per-mask {copies_per_mask}")
    expanded = pd.concat([sources] * copies_per_mask, ignore_index=True)
    if balance:
        order = balanced_indices(expanded, total, list(balance), tau_max, seed=seed, replace=False)
    else:
        order = list(range(total))
    picked = expanded.iloc[order].reset_index(drop=True)
    picked.insert(0, "index", np.arange(total))
    picked["seed"] = int(seed) + picked["index"]
    params = [sample_params(np.random.default_rng(s), size, perturb).as_dict() for s in picked["seed"]]
    picked = pd.concat([picked, pd.DataFrame(params)], axis=1)
    patient = picked["patient"].astype(str).str.replace("testing-", "", regex=False)
    word = picked["split"].astype(str).map(SPLIT_WORDS)
    base = patient + "_" + picked["view"].astype(str) + "_" + picked["phase"].astype(str) + "_" + word
    picked["copy"] = picked.groupby(base).cumcount()
    picked["name"] = base + "_" + picked["copy"].astype(str) + ".png"
    folder = picked["view"].astype(str) + "_" + picked["phase"].astype(str)
    picked["image_rel"] = folder + "/images/" + word + "/" + picked["name"]
    picked["mask_rel"] = folder + "/annotations/" + word + "/" + picked["name"]
    return picked.rename(columns={"image": "source_image", "mask": "source_mask",
                                  "sample_id": "source_sample_id"})


def _check_plan(run: Run, plan: pd.DataFrame) -> None:
    """Refuse to resume into a run whose plan differs (other options than the interrupted invocation)."""
    path = run.path / "plan.csv"
    if not path.is_file():
        return
    old = pd.read_csv(path, usecols=["name", "seed"])
    same = len(old) == len(plan) and (old["name"].astype(str).to_numpy() == plan["name"].to_numpy()).all() \
        and (old["seed"].to_numpy() == plan["seed"].to_numpy()).all()
    if not same:
        raise UserError(f"--resume {run.path}: the options give a different sample plan than plan.csv; "
                        "resume with the original options or write a new run")


def _done(run_path: Path, row) -> bool:
    return (run_path / row.image_rel).is_file() and (run_path / row.mask_rel).is_file()


def manifest_rows(run_path: Path, plan: pd.DataFrame, sampler: str, steps: int, guidance: float,
                  records: dict[str, dict] | None = None) -> pd.DataFrame:
    """The SDM CAMUS manifest of the finished samples (one row per image and structure; with gate ``records``, a
    given-up sample has no image and is left out)."""
    rows = []
    for r in plan.itertuples(index=False):
        if not _done(run_path, r):
            continue
        stem = r.name[:-4]
        rec = (records or {}).get(stem)
        checked = {"noise_seed": int(rec["seed"]), "tries": int(rec["tries"]), "bad_sim": float(rec["bad_sim"])} \
            if rec else {}
        common = {
            "image": str((run_path / r.image_rel).resolve()), "mask": str((run_path / r.mask_rel).resolve()),
            "view": r.view, "phase": r.phase, "patient": str(r.patient).replace("testing-", ""),
            "sex": getattr(r, "sex", ""), "age": getattr(r, "age", pd.NA), "quality": getattr(r, "quality", ""),
            "split": r.split, "source": "synthetic", "dataset": "sdm-camus", "stem": stem, "copy": r.copy,
            "label_encoding": "sdm", "source_image": r.source_image, "seed": r.seed, "sampler": sampler,
            "steps": steps, "guidance": guidance, **{c: getattr(r, c) for c in PARAM_COLUMNS}, **checked,
        }
        for structure, label in SDM_LABELS.items():
            rows.append({"sample_id": f"{stem}_{structure}", "label": label, "structure": structure, **common})
    return pd.DataFrame(rows)


def generate(
    run: Run,
    model: str | Path,
    masks: str | Path,
    *,
    count: int | None = None,
    copies_per_mask: int = 5,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    balance: tuple[str, ...] = (),
    tau_max: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    precision: str = "no",
    device: str = "auto",
    cache_dir: Path | None = None,
    gate: Gate | None = None,
    max_tries: int = 3,
) -> dict[str, Any]:
    """Generate (or finish generating) an SDM CAMUS data set into ``run``; returns the summary.

    With ``gate`` (``--regenerate-bad``) every sample is checked against the known-bad exemplars and re-sampled with
    new noise seeds up to ``max_tries`` tries (:mod:`echoseg.core.synth.regenerate`).

    Raises:
        UserError: bad options, an unusable model or mask source.
    """
    from accelerate import PartialState  # deferred: heavy import, loaded only when this path runs

    if sampler not in SAMPLERS:
        raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    bad = [a for a in balance if a not in BALANCE_ATTRIBUTES]
    if bad:
        raise UserError(f"--balance: unknown attribute(s) {', '.join(bad)} "
                        f"(choose from {', '.join(BALANCE_ATTRIBUTES)})")
    if steps < 1 or batch_size < 1 or max_tries < 1:
        raise UserError("--steps, --batch-size and --max-tries must be >= 1")
    unet, train_sched, meta = load_model(model)
    size = int(meta["size"])
    if guidance != 1.0 and float(meta.get("cond_dropout", 0.0)) <= 0.0:
        run.log("warning: --guidance != 1 but the model was trained without --cond-dropout; the null "
                "condition was never seen in training", style="yellow")
    pairs = load_pairs(masks, size, cache_dir)
    plan = plan_samples(pairs.table, count=count, copies_per_mask=copies_per_mask, seed=seed, size=size,
                        balance=balance, tau_max=tau_max)
    met = balance_report(source_pool(pairs.table), plan, list(balance), tau_max, copies_per_mask) if balance \
        else {"balanced": False, "reason": "no --balance given"}
    if balance and not met["balanced"]:
        run.log(f"warning: --balance {','.join(balance)} not met: {met['reason']}", style="yellow")
    state = PartialState(cpu=device == "cpu")
    if device == "cuda" and state.device.type != "cuda":
        raise UserError("--device cuda: no CUDA device available")
    _check_plan(run, plan)  # on every process: a refused resume stops them all, none is left at a barrier
    if state.is_main_process:
        write_csv(run.file("plan.csv"), plan)
    dtype = DTYPES[precision] if state.device.type == "cuda" else torch.float32
    unet = unet.to(state.device).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype)
    scheduler = make_sampler(sampler, train_sched)
    mine = plan.iloc[state.process_index::state.num_processes]
    records = load_records(run.path) if gate is not None else {}
    todo = [r for r in mine.itertuples(index=False) if not _done(run.path, r) and r.name[:-4] not in records]
    run.log(f"{len(plan)} samples planned, {len(mine) - len(todo)} of this process's {len(mine)} already written; "
            f"sampler {sampler}, {steps} steps, guidance {guidance}, {state.num_processes} process(es)")
    def label_maps(rows) -> np.ndarray:
        return np.stack([
            apply_params(pairs.labels[r.source_row], PerturbParams(**{c: getattr(r, c) for c in PARAM_COLUMNS}))
            for r in rows
        ])

    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in track(batches, "generating", total=len(batches)) if state.is_main_process else batches:
        labels = label_maps(batch)
        images = sample(unet, scheduler, labels, [r.seed for r in batch], steps=steps, guidance=guidance,
                        device=state.device, dtype=dtype)
        for r, lab, img in zip(batch, labels, images, strict=True):
            write_png(run.path / r.mask_rel, lab)
            write_png(run.path / r.image_rel, img)
    state.wait_for_everyone()
    summary: dict[str, Any] = {"planned": len(plan), "sampler": sampler, "steps": steps, "guidance": guidance,
                               "size": size, "seed": seed}
    if gate is not None:
        by_key = {r.name[:-4]: r for r in plan.itertuples(index=False)}
        samples = [Sample(k, run.path / r.image_rel, int(r.seed), (run.path / r.mask_rel,)) for k, r in by_key.items()]

        def render(batch: list[Sample], seeds: list[int]) -> list[np.ndarray]:
            return list(sample(unet, scheduler, label_maps([by_key[s.key] for s in batch]), list(seeds), steps=steps,
                               guidance=guidance, device=state.device, dtype=dtype))

        records = regenerate_bad(run, samples, render, gate, state, max_tries=max_tries, stride=len(plan),
                                 batch_size=batch_size, progress=state.is_main_process)
    if state.is_main_process:
        manifest = manifest_rows(run.path, plan, sampler, steps, guidance, records)
        write_manifest(manifest, run.file("manifest.csv"))
        attrs = list(balance) or [a for a in BALANCE_ATTRIBUTES if a in pairs.table.columns]
        sources = source_pool(pairs.table)
        report = {"attributes": attrs, "tau_max": tau_max, **met,
                  "before": distribution(sources, attrs), "after": distribution(plan, attrs)}
        write_json(run.file("balance.json"), report)
        for a in attrs:
            run.log(f"{a}: before {report['before'][a]} -> after {report['after'][a]}")
        summary.update({"images": int(manifest["image"].nunique()) if len(manifest) else 0,
                        "sources": int(len(sources)), "distribution": report})
        if gate is not None:
            write_records(run, records)
            summary["regenerate"] = gate_summary(records, gate, max_tries)
        run.write_summary(summary)
        run.log(f"{summary['images']} images written to {run.path}")
    return summary
