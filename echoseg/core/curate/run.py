"""`echoseg curate`: keep only the synthetic samples worth training on.

Pipeline (each filter switchable, each reported; filters act per image unless noted):

1. ``sanity``: unreadable, non-finite, wrong size, constant, saturated, empty label map, no cone
   (:mod:`echoseg.core.curate.filters`); images failing it are not scored further.
2. ``agreement``: the ``--segmenter`` run's model predicts each structure; Dice with the conditioning label map
   must reach ``min_dice``. ``aggregate`` ``min`` (default) or ``mean`` decides per image over its structures;
   ``structure`` drops only the (image, structure) rows below the threshold.
3. ``bad``: cosine similarity of the image embedding to the nearest known-bad exemplar must not exceed
   ``bad_sim`` (SynCXR).
4. ``dup``: cosine similarity to the nearest real image must not exceed ``dup_sim`` (near-copies of patients).
5. ``zero_shot``: with a CLIP model, P("an echocardiography image" vs "noise", "a blank image") >= ``clip_min``.
6. ``mllm``: a local image-text-to-text model answers ``mllm_question`` per image; kept when the answer matches the
   regular expression ``mllm_keep`` (SynCXR; :mod:`echoseg.core.curate.mllm`). The answers go to scores.csv
   (``mllm_answer``) and, for rejected images, to rejected.csv (``detail``).
7. ``balance``: among the images left, each value of each ``balance`` attribute is capped at ``tau_max``.

Outputs in the run: ``manifest.csv`` (kept rows, input schema), ``rejected.csv`` (one row per failed check:
sample, image, structure, filter, check, score, threshold, keep_if, detail, primary — ``primary`` marks the first
filter in pipeline order that rejected the image), ``scores.csv`` (every score of every image),
``embeddings/*.npy``, ``summary.json`` and ``figures/`` (contact sheets, score histograms). The input run is only
read. Text-to-image runs (structure ``none``, an all-zero label map: no structure annotated) skip the label-map
checks and image-mask agreement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.config import StageConfig
from echoseg.core.curate import filters as F
from echoseg.core.curate.embed import Encoder, embed_files, make_encoder
from echoseg.core.curate.mllm import DEFAULT_KEEP, DEFAULT_QUESTION, MllmJudge, ask_files, keep_pattern
from echoseg.core.curate.report import score_stats, write_figures
from echoseg.core.curate.similarity import nearest
from echoseg.core.data.imaging import ITK_SUFFIXES, RASTER_SUFFIXES
from echoseg.core.data.manifest import (
    STRUCTURE_LABELS,
    prompt_columns,
    read_manifest,
    relative_paths,
    write_manifest,
)
from echoseg.core.data.sdm_camus import detect_sdm_camus, read_sdm_camus
from echoseg.core.env import resolve_device
from echoseg.core.errors import UserError
from echoseg.core.io import write_csv
from echoseg.core.models.artefacts import load_trained_model
from echoseg.core.models.openclip import load_clip_model
from echoseg.core.runs import Run
from echoseg.core.synth.balance import attribute_values, distribution

FILTERS = ("sanity", "agreement", "bad", "dup", "zero_shot", "mllm", "balance")


@dataclass
class CurateConfig(StageConfig):
    """Options of ``echoseg curate`` (names as on the command line)."""

    synth: str
    segmenter: str | None = None
    min_dice: float = 0.7
    aggregate: str = "min"
    bad: str | None = None
    bad_sim: float = 0.5
    real: str | None = None
    dup_sim: float = 0.95
    encoder: str = "segmenter"
    center: bool = True
    clip_model: str | None = None
    clip_min: float = 0.5
    mllm: str | None = None
    mllm_question: str = DEFAULT_QUESTION
    mllm_keep: str = DEFAULT_KEEP
    mllm_max_new_tokens: int = 8
    balance: list[str] = field(default_factory=list)
    tau_max: int | None = None
    size: str = "auto"
    min_std: float = 1.0
    max_saturated: float = 0.1
    skip: list[str] = field(default_factory=list)
    batch_size: int = 32
    device: str = "auto"
    seed: int = 0
    sheet_limit: int = 48

    def validate(self, segmenter_given: bool = False) -> None:
        """Raise UserError naming the option that is out of range (``segmenter_given``: a model is passed in)."""
        for opt, v in (("--min-dice", self.min_dice), ("--clip-min", self.clip_min),
                       ("--max-saturated", self.max_saturated)):
            if not 0.0 <= v <= 1.0:
                raise UserError(f"{opt} must be in 0..1, got {v}")
        for opt, v in (("--bad-sim", self.bad_sim), ("--dup-sim", self.dup_sim)):
            if not -1.0 <= v <= 1.0:
                raise UserError(f"{opt} must be a cosine similarity in -1..1, got {v}")
        if self.aggregate not in F.AGGREGATES:
            raise UserError(f"--aggregate must be one of {', '.join(F.AGGREGATES)}, got {self.aggregate!r}")
        unknown = sorted(set(self.skip) - set(FILTERS))
        if unknown:
            raise UserError(f"--skip {unknown[0]!r}: expected one of {', '.join(FILTERS)}")
        if self.balance and self.tau_max is None:
            raise UserError("--balance needs --tau-max M (the cap on each attribute value)")
        if self.tau_max is not None and self.tau_max < 1:
            raise UserError(f"--tau-max must be >= 1, got {self.tau_max}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.mllm is not None:
            keep_pattern(self.mllm_keep)
            if not str(self.mllm_question).strip():
                raise UserError("--mllm-question must not be empty")
            if self.mllm_max_new_tokens < 1:
                raise UserError(f"--mllm-max-new-tokens must be >= 1, got {self.mllm_max_new_tokens}")
        if self.min_std < 0:
            raise UserError(f"--min-std must be >= 0, got {self.min_std}")
        if str(self.size).strip().lower() not in ("auto", "any"):
            F.expected_size(None, self.size)  # parses N / HxW without reading images; UserError otherwise
        known = ("open_clip:", "hf:", "pixels:")
        if self.encoder not in ("segmenter", "pixels") and not self.encoder.startswith(known):
            raise UserError(f"--encoder {self.encoder!r}: expected segmenter, pixels[:N], open_clip:PATH or "
                            "hf:PATH_OR_ID")
        if (self.bad or self.real) and self.encoder == "segmenter" and not (self.segmenter or segmenter_given):
            raise UserError("--bad/--real need image embeddings: give --segmenter TRAIN_RUN (the default "
                            "--encoder segmenter), or --encoder pixels / open_clip:PATH / hf:PATH")

    def enabled(self, name: str) -> bool:
        """Whether filter ``name`` runs (its inputs are given and it is not skipped)."""
        needs = {"sanity": True, "agreement": self.segmenter is not None, "bad": self.bad is not None,
                 "dup": self.real is not None, "zero_shot": self.clip_model is not None,
                 "mllm": self.mllm is not None, "balance": bool(self.balance)}
        return bool(needs[name]) and name not in self.skip


# ----------------------------------------------------------------------------- inputs
def read_synthetic(path: str | Path) -> pd.DataFrame:
    """The manifest of a synthetic run (absolute image/mask paths)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"SYNTH_RUN {p}: not found")
    df = read_manifest(p)
    if df.empty:
        raise UserError(f"SYNTH_RUN {p}: manifest.csv has no rows")
    return df


def image_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image: key (the image stem, or its path when stems repeat), image, mask, labels, encoding."""
    groups = df.groupby("image", sort=False)
    first = groups.head(1).reset_index(drop=True)
    stems = first["stem"].astype(str) if "stem" in first.columns else first["image"].map(lambda s: Path(s).stem)
    keys = stems if not stems.duplicated().any() else first["image"]
    labels = groups["label"].agg(lambda s: [int(v) for v in s])
    enc = first["label_encoding"] if "label_encoding" in first.columns else pd.Series([None] * len(first))
    return pd.DataFrame({"key": keys.to_numpy(), "image": first["image"].to_numpy(), "mask": first["mask"].to_numpy(),
                         "labels": [labels[p] for p in first["image"]], "encoding": enc.to_numpy()})


def image_set(path: str | Path, option: str) -> list[str]:
    """Images of ``--bad``/``--real``: a run or folder with manifest.csv, an SDM CAMUS folder, any folder of
    images (recursively), or one image file."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{option} {p}: not found")
    manifest = p / "manifest.csv" if p.is_dir() else p
    if manifest.suffix.lower() == ".csv" and manifest.is_file():
        try:
            df = read_manifest(manifest)
        except UserError:
            df = None
        if df is not None:
            return sorted(set(df["image"]))
    if p.is_file():
        return [str(p.resolve())]

    if detect_sdm_camus(p):
        return sorted(set(read_sdm_camus(p)["image"]))
    suffixes = RASTER_SUFFIXES + ITK_SUFFIXES
    found = sorted(str(f.resolve()) for f in p.rglob("*") if f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(p).parts)
                   and any(f.name.lower().endswith(s) for s in suffixes))
    if not found:
        raise UserError(f"{option} {p}: no images found (expected a run with manifest.csv or image files)")
    return found


# ----------------------------------------------------------------------------- pipeline
def _load_segmenter(cfg: CurateConfig, device: str):

    model, info = load_trained_model(cfg.segmenter, option="--segmenter")
    tc = info.get("train_config") or {}
    cols = prompt_columns(str(tc.get("prompt", "p1")))
    return model.to(device).eval(), float(tc.get("threshold", 0.5)), cols[0]


def _similarity_filter(name: str, keys: list[str], images: list[str], emb: np.ndarray, ref_paths: list[str],
                       ref_emb: np.ndarray, mean: np.ndarray | None, threshold: float, device: str
                       ) -> tuple[np.ndarray, list[F.Finding]]:
    best, idx = nearest(emb, ref_emb, mean, device)
    out = [F.Finding(k, im, name, "cosine", float(s), threshold, "<=", detail=ref_paths[j])
           for k, im, s, j in zip(keys, images, best, idx, strict=True) if s > threshold]
    return best, out


def _primary(rejected: pd.DataFrame) -> pd.Series:
    if rejected.empty:
        return pd.Series([], dtype=bool)
    rank = rejected["filter"].map({f: i for i, f in enumerate(FILTERS)})
    return rank == rank.groupby(rejected["image"]).transform("min")


def curate(cfg: CurateConfig, run: Run, *, segmenter=None, encoder: Encoder | None = None, clip=None,
           judge=None, progress: bool = True) -> dict[str, Any]:
    """Run the curation pipeline into ``run``; return the summary (also written as summary.json).

    ``segmenter`` (a SegModel), ``encoder``, ``clip`` (an ``echoseg.core.eval.echoclip.ClipModel``) and ``judge``
    (anything with ``ask(images) -> answers``, e.g. a :class:`MllmJudge`) replace the ones the configuration names
    (used by tests and notebooks); ``segmenter`` with ``cfg.segmenter`` None still enables the agreement filter.
    """

    cfg.validate(segmenter_given=segmenter is not None)
    device = resolve_device(cfg.device)
    df = read_synthetic(cfg.synth)
    images = image_table(df)
    run.log(f"curate: {len(images)} images, {len(df)} samples from {cfg.synth}")
    threshold, prompt_col = 0.5, None
    if segmenter is None and cfg.segmenter is not None:
        segmenter, threshold, prompt_col = _load_segmenter(cfg, device)
    if judge is None and cfg.enabled("mllm"):  # loaded before any artefact is written: a bad model leaves no run
        judge = MllmJudge(cfg.mllm, cfg.mllm_question, device=cfg.device, max_new_tokens=cfg.mllm_max_new_tokens)
    agreement_on = segmenter is not None and "agreement" not in cfg.skip
    findings: list[F.Finding] = []
    scores = images[["key", "image"]].copy()
    stats: dict[str, Any] = {}

    # 1. sanity
    alive = np.ones(len(images), bool)
    if cfg.enabled("sanity"):
        sc = F.SanityConfig(size=F.expected_size(images, cfg.size), min_std=cfg.min_std,
                            max_saturated=cfg.max_saturated)
        res = F.run_sanity(images, sc, progress)
        scores = scores.join(res.scores.drop(columns="image"))
        findings += res.findings
        alive &= ~images["key"].isin({f.sample for f in res.findings}).to_numpy()
        stats["expected_size"] = list(sc.size) if sc.size else None
    live = images[alive].reset_index(drop=True)
    run.log(f"sanity: {int((~alive).sum())} of {len(images)} images failed")

    # 2. image-mask agreement
    row_dice = pd.Series(np.nan, index=df.index)
    annotated = df["structure"].astype(str).isin(STRUCTURE_LABELS)  # text-to-image rows ("none") have no map
    if agreement_on and len(live) and not annotated.any():
        run.log("agreement: no annotated structure in the run (text-to-image?); skipped")
    if agreement_on and len(live) and annotated.any():
        rows = df[df["image"].isin(set(live["image"])) & annotated]
        dice = F.agreement_dice(segmenter, rows, threshold=threshold, prompt_col=prompt_col,
                                batch_size=cfg.batch_size, device=device, progress=progress)
        row_dice.loc[rows.index] = dice
        per = pd.DataFrame({"image": rows["image"].to_numpy(), "dice": dice})
        agg = per.groupby("image")["dice"].agg(["min", "mean"])
        scores["dice_min"] = scores["image"].map(agg["min"])
        scores["dice_mean"] = scores["image"].map(agg["mean"])
        key_of = dict(zip(images["image"], images["key"], strict=True))
        if cfg.aggregate == "structure":
            bad_rows = rows[dice < cfg.min_dice]
            findings += [F.Finding(r.sample_id, r.image, "agreement", "dice", float(row_dice[i]), cfg.min_dice, ">=",
                                   structure=str(r.structure)) for i, r in zip(bad_rows.index,
                                                                                bad_rows.itertuples(), strict=True)]
        else:
            col = agg[cfg.aggregate]
            findings += [F.Finding(key_of[im], im, "agreement", f"dice_{cfg.aggregate}", float(v), cfg.min_dice, ">=")
                         for im, v in col.items() if v < cfg.min_dice]
        run.log(f"agreement: median Dice {np.nanmedian(dice):.3f} over {len(rows)} samples")

    # 3-4. embeddings, similarity to bad exemplars and to real images
    if (cfg.enabled("bad") or cfg.enabled("dup")) and len(live):
        enc = encoder or make_encoder(cfg.encoder, segmenter, cfg.device)
        stats["encoder"] = enc.name
        emb = embed_files(enc, live["image"], cfg.batch_size, progress, "embedding synthetic images")
        np.save(run.file("embeddings/synthetic.npy"), emb)
        write_csv(run.file("embeddings/synthetic.csv"), live[["key", "image"]])
        mean = emb.mean(0) if cfg.center else None
        refs = (("bad", cfg.bad, cfg.bad_sim, "--bad"), ("dup", cfg.real, cfg.dup_sim, "--real"))
        for name, src, thr, option in refs:
            if not cfg.enabled(name):
                continue
            paths = image_set(src, option)
            ref = embed_files(enc, paths, cfg.batch_size, progress, f"embedding {option[2:]} images")
            np.save(run.file(f"embeddings/{name}.npy"), ref)
            write_csv(run.file(f"embeddings/{name}.csv"), pd.DataFrame({"image": paths}))
            best, found = _similarity_filter(name, live["key"].tolist(), live["image"].tolist(), emb, paths, ref,
                                             mean, thr, device)
            scores[f"{name}_sim"] = scores["image"].map(dict(zip(live["image"], best, strict=True)))
            findings += found
            stats[f"{name}_references"] = len(paths)
            run.log(f"{name}: {len(found)} images above cosine {thr:g} against {len(paths)} references")

    # 5. zero-shot quality
    if (cfg.enabled("zero_shot") or (clip is not None and "zero_shot" not in cfg.skip)) and len(live):
        if clip is None:

            clip = load_clip_model(cfg.clip_model, cfg.device)
        p = F.zero_shot_scores(clip, live["image"].tolist(), cfg.batch_size, progress)
        scores["echo_prob"] = scores["image"].map(dict(zip(live["image"], p, strict=True)))
        findings += [F.Finding(k, im, "zero_shot", "echo_prob", float(v), cfg.clip_min, ">=")
                     for k, im, v in zip(live["key"], live["image"], p, strict=True) if v < cfg.clip_min]

    # 6. MLLM quality question
    if judge is not None and "mllm" not in cfg.skip and len(live):
        findings += _mllm_filter(judge, cfg, live, scores, stats, progress)
        run.log(f"mllm: {stats['mllm_kept']} of {len(live)} answers match {cfg.mllm_keep!r}")

    # 7. balance among the images still kept
    image_out = {f.image for f in findings if f.filter != "agreement" or cfg.aggregate != "structure"}
    if cfg.enabled("balance"):
        findings += _balance(df, images, image_out, cfg, stats)
        image_out = {f.image for f in findings if f.filter != "agreement" or cfg.aggregate != "structure"}

    # outputs
    rejected = pd.DataFrame([f.row() for f in findings], columns=F.FINDING_COLUMNS)
    rejected["primary"] = _primary(rejected).to_numpy() if len(rejected) else []
    row_out = set(rejected.loc[rejected["structure"] != "", "sample"]) if len(rejected) else set()
    kept_rows = df[~df["image"].isin(image_out) & ~df["sample_id"].isin(row_out)]
    if len(kept_rows):
        write_manifest(kept_rows, run.file("manifest.csv"))
    else:  # keep the input's columns (write_manifest would reduce an empty table to the standard ones)
        write_csv(run.file("manifest.csv"), relative_paths(kept_rows, run.path))
    write_csv(run.file("rejected.csv"), rejected)
    write_csv(run.file("scores.csv"), scores)
    kept_keys = set(images.loc[images["image"].isin(set(kept_rows["image"])), "key"])
    thresholds = _thresholds(cfg)
    figures = write_figures(run.file("figures/kept.png").parent, scores, rejected, kept_keys, thresholds,
                            cfg.sheet_limit)
    summary = _summary(cfg, df, images, kept_rows, rejected, scores, thresholds, stats, figures)
    run.write_summary(summary)
    run.log(f"kept {summary['kept']['images']} of {len(images)} images ({len(kept_rows)} of {len(df)} samples)")
    if kept_rows.empty:
        run.log("warning: every sample was rejected; see rejected.csv and figures/ (thresholds too strict, or a "
                "synthesis model trained too briefly)", style="yellow")
    return summary


def _mllm_filter(judge, cfg: CurateConfig, live: pd.DataFrame, scores: pd.DataFrame, stats: dict[str, Any],
                 progress: bool) -> list[F.Finding]:
    """Ask the judge about every live image; a finding for each answer that does not match ``mllm_keep``."""
    pattern = keep_pattern(cfg.mllm_keep)
    answers = ask_files(judge, live["image"].tolist(), cfg.batch_size, progress)
    match = np.array([bool(pattern.search(a)) for a in answers])
    by_image = dict(zip(live["image"], answers, strict=True))
    scores["mllm_answer"] = scores["image"].map(by_image)
    scores["mllm_match"] = scores["image"].map(dict(zip(live["image"], match.astype(float), strict=True)))
    counts = pd.Series(answers, dtype=str).value_counts().head(20)
    stats.update(mllm_model=getattr(judge, "name", cfg.mllm), mllm_question=cfg.mllm_question,
                 mllm_keep=cfg.mllm_keep, mllm_kept=int(match.sum()),
                 mllm_answers={str(a): int(n) for a, n in counts.items()})
    return [F.Finding(k, im, "mllm", "answer", 0.0, 1.0, ">=", detail=a)
            for k, im, a, ok in zip(live["key"], live["image"], answers, match, strict=True) if not ok]


def _balance(df: pd.DataFrame, images: pd.DataFrame, image_out: set[str], cfg: CurateConfig,
             stats: dict[str, Any]) -> list[F.Finding]:

    first = df.drop_duplicates("image").set_index("image").loc[images["image"]].reset_index()
    remaining = first[~first["image"].isin(image_out)].reset_index(drop=True)
    keep = F.cap_attributes(remaining, cfg.balance, int(cfg.tau_max), cfg.seed)
    stats["balance_before"] = distribution(remaining, cfg.balance)
    stats["balance_after"] = distribution(remaining[keep], cfg.balance)
    values = attribute_values(remaining, cfg.balance)
    key_of = dict(zip(images["image"], images["key"], strict=True))
    out = []
    for i in np.flatnonzero(~keep):
        full = [f"{a}={values.at[i, a]}" for a in cfg.balance
                if stats["balance_after"][a].get(values.at[i, a], 0) >= cfg.tau_max]
        count = max((stats["balance_after"][a].get(values.at[i, a], 0) for a in cfg.balance), default=0)
        im = remaining.at[i, "image"]
        out.append(F.Finding(key_of[im], im, "balance", "tau_max", float(count), float(cfg.tau_max), "<",
                             detail="capped: " + ", ".join(full)))
    return out


def _thresholds(cfg: CurateConfig) -> dict[str, tuple[float | None, str]]:
    return {"std": (cfg.min_std, ">="), "saturated": (cfg.max_saturated, "<="),
            "dice_min": (cfg.min_dice if cfg.aggregate == "min" else None, ">="),
            "dice_mean": (cfg.min_dice if cfg.aggregate == "mean" else None, ">="),
            "bad_sim": (cfg.bad_sim, "<="), "dup_sim": (cfg.dup_sim, "<="), "echo_prob": (cfg.clip_min, ">="),
            "mllm_match": (1.0 if cfg.mllm else None, ">=")}


def _summary(cfg: CurateConfig, df: pd.DataFrame, images: pd.DataFrame, kept_rows: pd.DataFrame,
             rejected: pd.DataFrame, scores: pd.DataFrame, thresholds: dict, stats: dict, figures: list[str]) -> dict:
    per_filter: dict[str, Any] = {}
    for name in FILTERS:
        part = rejected[rejected["filter"] == name]
        entry: dict[str, Any] = {"enabled": name in set(rejected["filter"]) or cfg.enabled(name)
                                 or (name == "agreement" and "dice_min" in scores.columns)
                                 or (name == "mllm" and "mllm_answer" in scores.columns),
                                 "failed_images": int(part["image"].nunique()),
                                 "primary_images": int(part.loc[part["primary"].astype(bool), "image"].nunique())}
        if name == "sanity":
            entry["checks"] = {k: int(v) for k, v in part.groupby("check")["image"].nunique().items()}
        if name == "agreement":
            entry.update(threshold=cfg.min_dice, aggregate=cfg.aggregate, failed_samples=int(
                part["sample"].nunique() if cfg.aggregate == "structure" else
                df["image"].isin(set(part["image"])).sum()))
        for key, thr in (("bad", cfg.bad_sim), ("dup", cfg.dup_sim), ("zero_shot", cfg.clip_min)):
            if name == key:
                entry["threshold"] = thr
        if name == "mllm":
            entry.update(question=cfg.mllm_question, keep=cfg.mllm_keep)
        if name == "balance":
            entry.update(attributes=list(cfg.balance), tau_max=cfg.tau_max)
        per_filter[name] = entry
    kept_images = int(kept_rows["image"].nunique())
    return {
        "synthetic_run": str(Path(cfg.synth).resolve()),
        "input": {"images": len(images), "samples": len(df)},
        "kept": {"images": kept_images, "samples": len(kept_rows)},
        "rejected": {"images": len(images) - kept_images, "samples": len(df) - len(kept_rows)},
        "filters": per_filter,
        "scores": {c: score_stats(scores[c].to_numpy(np.float64)) for c in scores.columns
                   if c not in ("key", "image") and (c in thresholds or c.endswith("_pixels") or c == "nonfinite")},
        "center_embeddings": cfg.center,
        **stats,
        "config": asdict(cfg),
        "figures": [f"figures/{f}" for f in figures],
    }
