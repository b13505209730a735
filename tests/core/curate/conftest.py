"""A toy synthetic run with planted defects, known-bad exemplars, a real run and a segmenter stand-in."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from echoseg.core.curate.embed import model_inputs
from echoseg.core.data.imaging import load_image, load_mask
from echoseg.core.data.manifest import STRUCTURES, write_manifest
from echoseg.core.data.sdm_camus import SDM_LABELS
from echoseg.core.data.toy.sdm import write_toy_sdm_camus
from echoseg.core.io import write_png
from echoseg.core.models.unet import UNet


class OracleUNet(UNet):
    """Segmenter stand-in: predicts the true label map of every image it was told about, nothing elsewhere.

    It looks up the nearest registered image (mean absolute difference of the network inputs below ``tol``), so
    lightly noised copies are recognised while unknown images (noise) get an empty prediction. Its U-Net encoder
    (random weights) still serves ``--encoder segmenter``.
    """

    def __init__(self, tol: float = 0.05) -> None:
        torch.manual_seed(0)
        super().__init__(64, (0.5,) * 3, (0.5,) * 3, channels=4, depth=2)
        self.tol = tol
        self.known: list[torch.Tensor] = []
        self.truth: list[np.ndarray] = []

    def learn(self, image: np.ndarray, mask: np.ndarray) -> None:
        """Register an image and its true (sector) label map."""
        self.known.append(model_inputs([image], self)[0])
        self.truth.append(mask)

    def forward(self, images, texts=None, structures=None):  # noqa: ARG002
        from echoseg.core.data.cache import resize_mask

        stack = torch.stack(self.known)
        out = torch.full((len(images), 1, self.input_size, self.input_size), -10.0)
        for i, x in enumerate(images):
            diff = (stack - x.cpu()).abs().mean(dim=(1, 2, 3))
            j = int(diff.argmin())
            if float(diff[j]) < self.tol:
                label = SDM_LABELS[STRUCTURES[int(structures[i])]]
                hit = resize_mask(self.truth[j], self.input_size) == label
                out[i, 0][torch.from_numpy(hit)] = 10.0
        return out


@dataclass
class Planted:
    """The toy curation set-up."""

    synth: Path
    real: Path
    bad: Path
    oracle: OracleUNet
    planted: dict[str, str]  # image stem -> the defect
    clean: list[str]  # stems of the clean images


def _add(rows: list[dict], template: dict, root: Path, stem: str, image, mask, suffix: str = ".png") -> None:
    folder = root / "planted"
    img_path, mask_path = folder / "images" / f"{stem}{suffix}", folder / "annotations" / f"{stem}.png"
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, Path):
        shutil.copyfile(image, img_path)
    elif suffix == ".png":
        write_png(img_path, image)
    else:
        sitk.WriteImage(sitk.GetImageFromArray(image), str(img_path))
    write_png(mask_path, mask)
    for structure, label in SDM_LABELS.items():
        rows.append({**template, "sample_id": f"{stem}_{structure}", "image": str(img_path), "mask": str(mask_path),
                     "label": label, "structure": structure, "stem": stem})


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Planted:
    root = tmp_path_factory.mktemp("curate")
    synth, real, extra, bad = root / "synth", root / "real", root / "extra", root / "bad"
    syn = write_toy_sdm_camus(synth, patients=3, copies=1, size=64, seed=0)
    rl = write_toy_sdm_camus(real, patients=2, copies=1, size=64, seed=1)
    ex = write_toy_sdm_camus(extra, patients=1, copies=1, size=64, seed=2)
    write_manifest(rl, real / "manifest.csv")
    oracle = OracleUNet()
    for df in (syn, rl):
        for r in df.drop_duplicates("image").itertuples():
            oracle.learn(load_image(r.image), load_mask(r.mask))
    first = syn.drop_duplicates("image").reset_index(drop=True)
    template = first.iloc[0].to_dict()
    clean_mask = load_mask(first.at[0, "mask"])
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    planted: dict[str, str] = {}

    def add(stem, defect, image, mask, suffix=".png", **attrs):
        _add(rows, {**template, **attrs}, synth, stem, image, mask, suffix)
        planted[stem] = defect

    add("patient0090_2CH_ED_training_0", "blank", np.zeros((64, 64), np.uint8), clean_mask)
    add("patient0091_2CH_ED_training_0", "noise", rng.integers(0, 255, (64, 64)).astype(np.uint8), clean_mask)
    nan = load_image(first.at[1, "image"]).astype(np.float32)
    nan[10:20, 10:20] = np.nan
    add("patient0092_2CH_ED_training_0", "nan", nan, clean_mask, suffix=".mha")
    add("patient0093_2CH_ED_training_0", "empty_mask", load_image(first.at[1, "image"]), np.zeros((64, 64), np.uint8))
    r0 = rl.drop_duplicates("image").iloc[0]
    add("patient0094_2CH_ED_training_0", "real_copy", Path(r0["image"]), load_mask(r0["mask"]))
    # the image of a 2CH sample with the label map of a 4CH one
    src = first[first["view"] == "2CH"].iloc[0]
    other = first[first["view"] == "4CH"].iloc[0]
    add("patient0095_2CH_ED_training_0", "contradiction", Path(src["image"]), load_mask(other["mask"]))
    # a known-bad exemplar (a banded artefact) and two near-copies of it
    e0 = ex.drop_duplicates("image").iloc[0]
    exemplar = load_image(e0["image"]).astype(np.int16)
    exemplar[:, 24:40] = np.clip(exemplar[:, 24:40] + 120, 0, 230)
    exemplar = exemplar.astype(np.uint8)
    bad.mkdir()
    write_png(bad / "exemplar.png", exemplar)
    oracle.learn(exemplar, load_mask(e0["mask"]))
    for k in range(2):
        noisy = np.clip(exemplar + rng.normal(0, 3, exemplar.shape), 0, 254).astype(np.uint8)
        add(f"patient0096_2CH_ED_training_{k}", "near_bad", noisy, load_mask(e0["mask"]))
    manifest = pd.concat([syn, pd.DataFrame(rows)], ignore_index=True)
    write_manifest(manifest, synth / "manifest.csv")
    return Planted(synth, real, bad, oracle, planted, first["stem"].astype(str).tolist())
