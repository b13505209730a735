"""The curation filters' scores: sanity checks, image-mask agreement, zero-shot quality, attribute caps.

Every decision is a :class:`Finding`: which filter and check, the score, the threshold and the direction
(``keep_if`` ``>=`` or ``<=``). Filters act per image (a rejected image drops all its manifest rows), except
image-mask agreement with ``aggregate="structure"``, which drops single (image, structure) rows.

Sanity checks (per image; an image failing one is not scored by the other filters):

- ``unreadable``: the image or its label map cannot be read as a 2-D array;
- ``nonfinite``: fraction of NaN/inf pixels (must be 0);
- ``size``: the image is not the expected size, or its label map is not the image's size;
- ``constant``: standard deviation of the grey levels (blank or constant images have ~0);
- ``saturated``: fraction of pixels at the maximum grey level 255;
- ``mask_empty``: pixels carrying any of the image's structure labels (must be >= 1; not checked for an image
  whose rows name no structure, label 0: a text-to-image sample);
- ``no_cone``: for sector label maps (SDM CAMUS encoding), pixels of the cone label 2 (must be >= 1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from echoseg.core.console import track
from echoseg.core.curate.embed import OpenClipEncoder, embed_files, model_inputs
from echoseg.core.data.imaging import load_image, load_mask, read_array, to_uint8
from echoseg.core.data.manifest import ANY_LABELS, LABEL_SETS, STRUCTURE_LABELS
from echoseg.core.data.sdm_camus import SDM_CONE, detect_encoding
from echoseg.core.errors import UserError
from echoseg.core.metrics.seg import dice_iou
from echoseg.core.models.openclip import encode_texts
from echoseg.core.prompts.build import attributes_of
from echoseg.core.prompts.templates import build_prompts
from echoseg.core.synth.balance import attribute_values

FINDING_COLUMNS = ["sample", "image", "structure", "filter", "check", "score", "threshold", "keep_if", "detail"]
AGGREGATES = ("min", "mean", "structure")
ECHO_PROMPT = "an echocardiography image"
NEGATIVE_PROMPTS = ("noise", "a blank image")


@dataclass
class Finding:
    """One failed check: the sample (image stem, or sample_id for per-structure decisions) and its score."""

    sample: str
    image: str
    filter: str
    check: str
    score: float
    threshold: float
    keep_if: str
    structure: str = ""
    detail: str = ""

    def row(self) -> dict:
        """As a rejected.csv row."""
        return {k: v for k, v in asdict(self).items() if k in FINDING_COLUMNS}


@dataclass
class SanityConfig:
    """Thresholds of the sanity checks."""

    size: tuple[int, int] | None = None  # expected (H, W); None: any
    min_std: float = 1.0
    max_saturated: float = 0.1
    checks: tuple[str, ...] = ("nonfinite", "size", "constant", "saturated", "mask_empty", "no_cone")


@dataclass
class SanityResult:
    """Scores of every image (NaN where not computed) and the failures."""

    scores: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)


def _fail(key: str, image: str, check: str, score: float, threshold: float, keep_if: str, detail: str = "") -> Finding:
    return Finding(key, image, "sanity", check, float(score), float(threshold), keep_if, detail=detail)


def sanity_check_image(key: str, image_path: str, mask_path: str, labels: Sequence[int], encoding: str | None,
                       cfg: SanityConfig) -> tuple[dict, list[Finding]]:
    """Scores and failed checks of one image and its label map (see the module notes)."""
    scores: dict = {"image": image_path}
    try:
        raw = read_array(image_path)  # missing, unreadable or truncated files fail "unreadable", as in data check
        mask = load_mask(mask_path, LABEL_SETS.get(str(encoding), ANY_LABELS))
    except UserError as exc:
        return scores, [_fail(key, image_path, "unreadable", np.nan, np.nan, "", str(exc))]
    out: list[Finding] = []
    raw = np.asarray(raw)
    finite = np.isfinite(raw) if np.issubdtype(raw.dtype, np.floating) else np.ones(raw.shape, bool)
    scores["nonfinite"] = float(1.0 - finite.mean())
    if "nonfinite" in cfg.checks and scores["nonfinite"] > 0:
        out.append(_fail(key, image_path, "nonfinite", scores["nonfinite"], 0.0, "<="))
        return scores, out
    image = to_uint8(raw)
    shape = tuple(int(s) for s in image.shape)
    if "size" in cfg.checks:
        if mask.shape != image.shape:
            out.append(_fail(key, image_path, "size", np.nan, np.nan, "",
                             f"label map {mask.shape[0]}x{mask.shape[1]} != image {shape[0]}x{shape[1]}"))
        elif cfg.size is not None and shape != tuple(cfg.size):
            out.append(_fail(key, image_path, "size", np.nan, np.nan, "",
                             f"image {shape[0]}x{shape[1]} != expected {cfg.size[0]}x{cfg.size[1]}"))
        if out:
            return scores, out
    scores["std"] = float(image.std())
    scores["saturated"] = float((image == 255).mean())
    structures = [v for v in labels if int(v) > 0]  # none: a text-to-image sample, no structure annotated
    scores["label_pixels"] = int(np.isin(mask, structures).sum()) if structures else np.nan
    enc = encoding if encoding in ("sdm", "camus") else detect_encoding(mask)
    scores["cone_pixels"] = int((mask == SDM_CONE).sum()) if enc == "sdm" else np.nan
    if "constant" in cfg.checks and scores["std"] < cfg.min_std:
        out.append(_fail(key, image_path, "constant", scores["std"], cfg.min_std, ">="))
    if "saturated" in cfg.checks and scores["saturated"] > cfg.max_saturated:
        out.append(_fail(key, image_path, "saturated", scores["saturated"], cfg.max_saturated, "<="))
    if "mask_empty" in cfg.checks and structures and scores["label_pixels"] < 1:
        out.append(_fail(key, image_path, "mask_empty", scores["label_pixels"], 1, ">="))
    if "no_cone" in cfg.checks and enc == "sdm" and scores["cone_pixels"] < 1:
        out.append(_fail(key, image_path, "no_cone", scores["cone_pixels"], 1, ">="))
    return scores, out


def expected_size(images: pd.DataFrame, spec: str) -> tuple[int, int] | None:
    """``--size``: 'any' (None), 'auto' (the most common image size of the run) or 'H' / 'HxW'."""
    spec = str(spec).strip().lower()
    if spec == "any":
        return None
    if spec == "auto":

        shapes = Counter()
        for path in images["image"].head(200):  # a sample is enough for the mode
            try:
                if str(path).lower().endswith(".png"):
                    with Image.open(path) as im:
                        shapes[(im.height, im.width)] += 1
                else:
                    shapes[tuple(read_array(path).shape)] += 1
            except (OSError, UserError):
                continue
        return shapes.most_common(1)[0][0] if shapes else None
    try:
        parts = [int(p) for p in spec.split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1 and parts[0] > 0:
        return parts[0], parts[0]
    if len(parts) == 2 and min(parts) > 0:
        return parts[0], parts[1]
    raise UserError(f"--size {spec!r}: expected auto, any, N or HxW")


def run_sanity(images: pd.DataFrame, cfg: SanityConfig, progress: bool = True) -> SanityResult:
    """Sanity checks of every image (``images``: key, image, mask, labels, encoding per image)."""
    rows, findings = [], []
    it = images.itertuples(index=False)
    for r in track(it, "sanity checks", total=len(images)) if progress else it:
        scores, fails = sanity_check_image(r.key, r.image, r.mask, r.labels, r.encoding, cfg)
        rows.append(scores)
        findings.extend(fails)
    return SanityResult(pd.DataFrame(rows), findings)


# ----------------------------------------------------------------------------- image-mask agreement
def _prompt_texts(rows: pd.DataFrame, prompt_col: str | None) -> list[str]:
    """The prompt of each row: the manifest's prompt column, else the P1 template of its structure."""
    if prompt_col and prompt_col in rows.columns:
        return rows[prompt_col].fillna("").astype(str).tolist()

    return [build_prompts(attributes_of(r, None))["p1"][0] for _, r in rows.iterrows()]


@torch.no_grad()
def agreement_dice(
    model, rows: pd.DataFrame, *, threshold: float = 0.5, prompt_col: str | None = None, batch_size: int = 16,
    device: str = "cpu", progress: bool = True,
) -> np.ndarray:
    """Dice between the segmenter's prediction on each row's image and the row's structure in its label map.

    Predictions are logits at the model's input size, bilinearly resized to the label map's size, then
    ``sigmoid > threshold``; the ground truth is ``mask == label``.
    """

    model.eval()
    rows = rows.reset_index(drop=True)
    texts = _prompt_texts(rows, prompt_col)
    names = rows["structure"].astype(str)
    structures = np.where(names.map(STRUCTURE_LABELS).notna(), names.map(STRUCTURE_LABELS).fillna(0),
                          rows["label"]).astype(np.int64)
    dice = np.full(len(rows), np.nan)
    starts = range(0, len(rows), batch_size)
    for start in track(starts, "image-mask agreement") if progress else starts:
        part = rows.iloc[start:start + batch_size]
        images = {p: load_image(p) for p in part["image"].unique()}
        masks = {p: load_mask(p) for p in part["mask"].unique()}
        x = model_inputs([images[p] for p in part["image"]], model, device)
        logits = model(x, texts[start:start + len(part)],
                       torch.from_numpy(structures[start:start + len(part)]).to(device)).float()
        for j, r in enumerate(part.itertuples(index=False)):
            gt = masks[r.mask] == int(r.label)
            up = F.interpolate(logits[j:j + 1], size=gt.shape, mode="bilinear", align_corners=False)
            pred = (torch.sigmoid(up[0, 0]) > threshold).cpu().numpy()
            dice[start + j] = dice_iou(pred, gt)[0]
    return dice


# ----------------------------------------------------------------------------- zero-shot quality
def zero_shot_scores(clip, paths: Sequence[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Probability of "an echocardiography image" against "noise" and "a blank image" for each image.

    Softmax over the three prompts of CLIP's scaled cosine similarities (the model's own logit scale).
    """

    text = encode_texts(clip, (ECHO_PROMPT, *NEGATIVE_PROMPTS)).cpu()
    emb = torch.from_numpy(embed_files(OpenClipEncoder(clip.spec, clip=clip), paths, batch_size, progress,
                                       "zero-shot quality"))
    if len(emb) == 0:
        return np.zeros(0)
    scale = float(clip.model.logit_scale.detach().exp()) if hasattr(clip.model, "logit_scale") else 100.0
    probs = torch.softmax(scale * F.normalize(emb, dim=-1) @ text.T, dim=-1)
    return probs[:, 0].numpy().astype(np.float64)


# ----------------------------------------------------------------------------- attribute caps
def cap_attributes(frame: pd.DataFrame, attributes: Sequence[str], tau_max: int, seed: int = 0) -> np.ndarray:
    """Which rows (one per image) to keep so that no value of any attribute occurs more than ``tau_max`` times.

    Greedy and balanced: repeatedly keep, among the rows none of whose values is at its cap, one whose values
    are least used so far (ties at random), until no row fits. Values come from
    ``echoseg.core.synth.balance.attribute_values`` (age in bins, missing values 'unknown').
    """

    if tau_max < 1:
        raise UserError(f"--tau-max must be >= 1, got {tau_max}")
    values = attribute_values(frame.reset_index(drop=True), list(attributes))
    codes = [np.asarray(pd.Categorical(values[a]).codes, np.int64) for a in attributes]
    counts = [np.zeros(int(c.max()) + 1 if len(c) else 0, np.int64) for c in codes]
    keep = np.zeros(len(frame), bool)
    open_ = np.ones(len(frame), bool)
    rng = np.random.default_rng(seed)
    tie = rng.random(len(frame))
    while open_.any():
        usage = np.stack([counts[j][codes[j]] for j in range(len(codes))], 1)
        open_ &= (usage < tau_max).all(1)
        if not open_.any():
            break
        score = np.where(open_, usage.sum(1) + tie, np.inf)
        pick = int(np.argmin(score))
        keep[pick], open_[pick] = True, False
        for j in range(len(codes)):
            counts[j][codes[j][pick]] += 1
    return keep
