"""`synth generate --pipeline`: text-to-image with a local diffusers pipeline (SynCXR-style prompt generation).

Any pipeline folder that ``DiffusionPipeline.from_pretrained`` loads offline works (Stable Diffusion, a fine-tuned
RoentGen-like model...); its safety checker, if it has one, is switched off (``safety_checker=None``) because
medical images trip NSFW filters. Defaults follow SynCXR: classifier-free guidance 4, 50 denoising steps.

Prompts file: ``.txt`` (one prompt a line, blank lines and ``#`` comments skipped), ``.csv`` with a ``prompt``
column (other columns, e.g. attributes, are carried into the output), or ``.json`` (a list of strings or of
objects with a ``prompt`` key). The ``reports.csv`` of `synth reports` is such a CSV: its report_id, split,
entities and attribute columns travel with each image (its own ``seed`` and ``tries`` as ``prompt_seed``,
``prompt_tries``).

Output::

    <run>/images/prompt<PPPPP>_<KKK>.png   image K of prompt P
    <run>/prompts_manifest.csv             image (relative to the run), prompt_index, k, prompt, seed, guidance,
                                           steps (+ prompt columns)
    <run>/manifest.csv                     the image-report corpus (`read_manifest`'s schema, one row per image):
                                           sample_id <report_id>_<k>, patient = report id, split from the prompts
                                           (default train), source synthetic, report = the prompt, label 0 and
                                           structure none with an all-zero label map masks/none_<H>x<W>.png (no
                                           structure annotated), the attributes and every prompt column
    <run>/regenerate.csv, rejected/        with --regenerate-bad (:mod:`echoseg.core.synth.regenerate`)

So `pretrain --data RUN --text report` trains on the run directly, and `curate RUN` filters it. Why an all-zero label
map rather than rows without one: every reader (the sample cache, `curate`, `data check`) keeps its one validating
read path, and the map says honestly that nothing is annotated.

Image ``(P, K)`` uses seed ``seed + P * count_per_prompt + K``; an existing image is skipped, so a killed run
continues with ``--resume`` and produces the same images. Under ``accelerate launch`` process ``r`` of ``n``
generates the images with index ``i % n == r`` on its own device; the main process writes the manifests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from echoseg.core.console import track
from echoseg.core.data.manifest import SPLITS, write_manifest
from echoseg.core.errors import UserError
from echoseg.core.io import write_csv, write_png
from echoseg.core.runs import Run
from echoseg.core.synth.regenerate import Gate, Sample, gate_summary, load_records, regenerate_bad, write_records

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Columns generation writes itself; a prompts-file column of the same name is carried as prompt_<name>.
GENERATED_COLUMNS = ("image", "image_rel", "key", "prompt_index", "k", "seed", "guidance", "steps", "tries",
                     "bad_sim", "nearest_bad", "given_up", "sample_id", "mask", "label", "structure", "source",
                     "report", "label_encoding", "stem")


def read_prompts(path: str | Path) -> pd.DataFrame:
    """The prompts of a .txt, .csv or .json file as a DataFrame with a ``prompt`` column.

    Raises:
        UserError: missing, unreadable or empty file, or no ``prompt`` column/key.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--prompts {p}: file not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
        elif suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise UserError(f"--prompts {p}: expected a JSON list of prompts")
            df = pd.DataFrame([{"prompt": d} if isinstance(d, str) else d for d in data])
        else:
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
            df = pd.DataFrame({"prompt": [ln for ln in lines if ln and not ln.startswith("#")]})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"--prompts {p}: unreadable ({str(exc).splitlines()[0]})") from None
    if "prompt" not in df.columns:
        raise UserError(f"--prompts {p}: no 'prompt' column")
    df["prompt"] = df["prompt"].astype(str).str.strip()
    df = df[df["prompt"] != ""].reset_index(drop=True)
    if df.empty:
        raise UserError(f"--prompts {p}: no prompts")
    if "split" in df.columns:
        df["split"] = df["split"].fillna("").astype(str).str.strip()
        bad = sorted(set(df["split"]) - {*SPLITS, ""})
        if bad:
            raise UserError(f"--prompts {p}: split {bad[0]!r} is not one of {', '.join(SPLITS)}")
    return df


def load_pipeline(folder: str | Path, device: str = "auto", precision: str = "no"):
    """Load a local diffusers pipeline offline, safety checker off, on ``device``.

    Raises:
        UserError: not a pipeline folder, or it cannot be loaded.
    """
    from diffusers import DiffusionPipeline  # deferred: heavy import, loaded only when this path runs

    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(f"--pipeline {folder}: not a diffusers pipeline folder (no model_index.json)")
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    on_gpu = torch.device(dev).type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device available")
    dtype = DTYPES[precision] if on_gpu else torch.float32
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype != torch.float32:
        kwargs["torch_dtype"] = dtype
    components = json.loads(index.read_text(encoding="utf-8"))
    if "safety_checker" in components:
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    try:
        pipe = DiffusionPipeline.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"--pipeline {folder}: cannot load ({str(exc).splitlines()[0]})") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    img = np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img


def plan_images(table: pd.DataFrame, count_per_prompt: int, seed: int, guidance: float, steps: int) -> list[dict]:
    """One row per image to generate: file, prompt index, k, seed, settings and the prompt's columns (a column whose
    name generation uses itself, e.g. a reports.csv ``seed``, is carried as ``prompt_<name>``)."""
    records = [{(f"prompt_{k}" if k in GENERATED_COLUMNS else k): v for k, v in rec.items()}
               for rec in table.to_dict("records")]
    rows = []
    for p, rec in enumerate(records):
        for k in range(count_per_prompt):
            rows.append({"image_rel": f"images/prompt{p:05d}_{k:03d}.png", "key": f"prompt{p:05d}_{k:03d}",
                         "prompt_index": p, "k": k, "seed": int(seed) + p * count_per_prompt + k,
                         "guidance": guidance, "steps": steps, **rec})
    return rows


def _render(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float, extra: dict) -> list[np.ndarray]:
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    with torch.no_grad():
        out = pipe(prompt=prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                   output_type="np", **extra)
    return [_to_uint8(img) for img in out.images]


def generate_from_prompts(
    run: Run,
    pipeline: str | Path,
    prompts: str | Path,
    *,
    count_per_prompt: int = 1,
    guidance: float = 4.0,
    steps: int = 50,
    batch_size: int = 4,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    precision: str = "no",
    device: str = "auto",
    gate: Gate | None = None,
    max_tries: int = 3,
) -> dict[str, Any]:
    """Generate ``count_per_prompt`` images per prompt into ``run`` (skipping existing ones); returns the summary.

    With ``gate`` (``--regenerate-bad``), every image is checked against the known-bad exemplars and re-queried
    with new seeds up to ``max_tries`` tries (:mod:`echoseg.core.synth.regenerate`).
    """
    from accelerate import PartialState  # deferred: heavy import, loaded only when this path runs

    if count_per_prompt < 1 or steps < 1 or batch_size < 1 or max_tries < 1:
        raise UserError("--count-per-prompt, --steps, --batch-size and --max-tries must be >= 1")
    table = read_prompts(prompts)
    state = PartialState(cpu=device == "cpu")
    if device == "cuda" and state.device.type != "cuda":
        raise UserError("--device cuda: no CUDA device available")
    pipe = load_pipeline(pipeline, str(state.device), precision)
    rows = plan_images(table, count_per_prompt, seed, guidance, steps)
    records = load_records(run.path) if gate is not None else {}
    mine = rows[state.process_index::state.num_processes]
    todo = [r for r in mine if not (run.path / r["image_rel"]).is_file() and r["key"] not in records]
    run.log(f"{len(table)} prompts x {count_per_prompt}: {len(rows)} images, {len(mine) - len(todo)} of this "
            f"process's {len(mine)} already written; "
            f"guidance {guidance}, {steps} steps, device {pipe.device}")
    extra = {k: v for k, v in (("height", height), ("width", width)) if v}
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in track(batches, "text-to-image", total=len(batches)):
        images = _render(pipe, [r["prompt"] for r in batch], [r["seed"] for r in batch], steps, guidance, extra)
        for r, img in zip(batch, images, strict=True):
            write_png(run.path / r["image_rel"], img)
    state.wait_for_everyone()
    summary: dict[str, Any] = {"prompts": len(table), "images": len(rows), "guidance": guidance, "steps": steps,
                               "pipeline": str(Path(pipeline).resolve()), "pipeline_class": type(pipe).__name__}
    if gate is not None:
        by_key = {r["key"]: r for r in rows}
        samples = [Sample(r["key"], run.path / r["image_rel"], int(r["seed"])) for r in rows]

        def render(batch: Sequence[Sample], seeds: Sequence[int]) -> list[np.ndarray]:
            return _render(pipe, [by_key[s.key]["prompt"] for s in batch], list(seeds), steps, guidance, extra)

        records = regenerate_bad(run, samples, render, gate, state, max_tries=max_tries, stride=len(rows),
                                 batch_size=batch_size, progress=state.is_main_process)
    if not state.is_main_process:
        return summary
    kept = [_with_record(r, records.get(r["key"])) for r in rows if not records.get(r["key"], {}).get("given_up")]
    listed = pd.DataFrame(kept, columns=list(rows[0]) if not kept else None)
    listed.insert(0, "image", listed["image_rel"])  # relative to the run: a moved run still finds its images
    write_csv(run.file("prompts_manifest.csv"), listed.drop(columns=["image_rel", "key"]))
    corpus = corpus_manifest(run.path, kept)
    write_manifest(corpus, run.file("manifest.csv"))
    summary.update(kept=len(kept), splits={str(k): int(v) for k, v in corpus["split"].value_counts().items()}
                   if kept else {})
    if not kept:
        run.log("warning: every image was given up (see regenerate.csv); manifest.csv is empty", style="yellow")
    if gate is not None:
        write_records(run, records)
        summary["regenerate"] = gate_summary(records, gate, max_tries)
        g = summary["regenerate"]
        run.log(f"known-bad gate: {g['first_try']} passed first, {g['regenerated']} after re-queries, "
                f"{g['given_up']} given up (left out, see regenerate.csv)")
    run.write_summary(summary)
    return summary


def _with_record(row: dict, rec: dict | None) -> dict:
    """A planned row with its gate record (the seed of the kept attempt, tries, similarity)."""
    if rec is None:
        return row
    return {**row, "seed": int(rec["seed"]), "tries": int(rec["tries"]), "bad_sim": float(rec["bad_sim"]),
            "nearest_bad": rec["nearest_bad"]}


def corpus_manifest(run_path: Path, rows: list[dict]) -> pd.DataFrame:
    """The image-report corpus of the generated images: one manifest row per image (see the module notes).

    ``sample_id`` is ``<report_id>_<k>`` when the prompts have unique report ids, else the image stem; ``patient``
    the prompts' patient, else the report id, else ``prompt<P>``; ``split`` the prompts' (default train); the
    label map is an all-zero map of the image's size (``masks/none_<H>x<W>.png``, shared): no structure annotated.
    """
    run_path = Path(run_path)
    ids = [str(r.get("report_id", "")) for r in rows]
    by_report = all(ids) and len({(i, r["k"]) for i, r in zip(ids, rows, strict=True)}) == len(rows)
    masks: dict[tuple[int, int], Path] = {}
    out = []
    for r, rid in track(list(zip(rows, ids, strict=True)), "image-report manifest"):
        image = run_path / r["image_rel"]
        with Image.open(image) as im:
            shape = (im.height, im.width)
        if shape not in masks:
            masks[shape] = run_path / "masks" / f"none_{shape[0]}x{shape[1]}.png"
            write_png(masks[shape], np.zeros(shape, np.uint8))
        carried = {k: v for k, v in r.items() if k not in ("image_rel", "key")}
        out.append({
            **carried,
            "sample_id": f"{rid}_{r['k']}" if by_report else r["key"], "image": str(image), "mask": str(masks[shape]),
            "label": 0, "structure": "none", "label_encoding": "camus", "source": "synthetic",
            "patient": str(r.get("patient") or rid or f"prompt{r['prompt_index']:05d}"),
            "split": str(r.get("split") or "train"), "report": r["prompt"], "stem": r["key"],
            **{c: r.get(c, "") for c in ("view", "phase", "sex", "age", "quality")},
        })
    return pd.DataFrame(out)
