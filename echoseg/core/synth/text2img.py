"""`synth generate --pipeline`: text-to-image with a local diffusers pipeline (SynCXR-style prompt generation).

Any pipeline folder that ``DiffusionPipeline.from_pretrained`` loads offline works (Stable Diffusion, a fine-tuned
RoentGen-like model...); its safety checker, if it has one, is switched off (``safety_checker=None``) because
medical images trip NSFW filters. Defaults follow SynCXR: classifier-free guidance 4, 50 denoising steps.

Prompts file: ``.txt`` (one prompt a line, blank lines and ``#`` comments skipped), ``.csv`` with a ``prompt``
column (other columns, e.g. attributes, are carried into the output), or ``.json`` (a list of strings or of
objects with a ``prompt`` key).

Output::

    <run>/images/prompt<PPPPP>_<KKK>.png   image K of prompt P
    <run>/prompts_manifest.csv             image (relative to the run), prompt_index, k, prompt, seed, guidance,
                                           steps (+ prompt columns)

Image ``(P, K)`` uses seed ``seed + P * count_per_prompt + K``; an existing image is skipped, so a killed run
continues with ``--resume`` and produces the same images. Under ``accelerate launch`` process ``r`` of ``n``
generates the images with index ``i % n == r`` on its own device; the main process writes the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from echoseg.core.console import track
from echoseg.core.errors import UserError
from echoseg.core.io import write_csv, write_png
from echoseg.core.runs import Run

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
) -> dict[str, Any]:
    """Generate ``count_per_prompt`` images per prompt into ``run`` (skipping existing ones); returns the summary."""
    from accelerate import PartialState  # deferred: heavy import, loaded only when this path runs

    if count_per_prompt < 1 or steps < 1 or batch_size < 1:
        raise UserError("--count-per-prompt, --steps and --batch-size must be >= 1")
    table = read_prompts(prompts)
    state = PartialState(cpu=device == "cpu")
    if device == "cuda" and state.device.type != "cuda":
        raise UserError("--device cuda: no CUDA device available")
    pipe = load_pipeline(pipeline, str(state.device), precision)
    rows = []
    for p, rec in enumerate(table.to_dict("records")):
        for k in range(count_per_prompt):
            rows.append({"image_rel": f"images/prompt{p:05d}_{k:03d}.png", "prompt_index": p, "k": k,
                         "seed": int(seed) + p * count_per_prompt + k, "guidance": guidance, "steps": steps, **rec})
    mine = rows[state.process_index::state.num_processes]
    todo = [r for r in mine if not (run.path / r["image_rel"]).is_file()]
    run.log(f"{len(table)} prompts x {count_per_prompt}: {len(rows)} images, {len(mine) - len(todo)} of this "
            f"process's {len(mine)} already written; "
            f"guidance {guidance}, {steps} steps, device {pipe.device}")
    extra = {k: v for k, v in (("height", height), ("width", width)) if v}
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in track(batches, "text-to-image", total=len(batches)):
        gens = [torch.Generator("cpu").manual_seed(r["seed"]) for r in batch]
        with torch.no_grad():
            out = pipe(prompt=[r["prompt"] for r in batch], num_inference_steps=steps, guidance_scale=guidance,
                       generator=gens, output_type="np", **extra)
        for r, img in zip(batch, out.images, strict=True):
            write_png(run.path / r["image_rel"], _to_uint8(img))
    state.wait_for_everyone()
    summary = {"prompts": len(table), "images": len(rows), "guidance": guidance, "steps": steps,
               "pipeline": str(Path(pipeline).resolve()), "pipeline_class": type(pipe).__name__}
    if not state.is_main_process:
        return summary
    manifest = pd.DataFrame(rows)
    manifest.insert(0, "image", manifest["image_rel"])  # relative to the run: a moved run still finds its images
    write_csv(run.file("prompts_manifest.csv"), manifest.drop(columns=["image_rel"]))
    run.write_summary(summary)
    return summary
