"""Toy CAMUS data sets in the two published on-disk layouts (for demos and CI).

- ``nifti`` (CAMUS 2023 release)::

      database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz
      database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_half_sequence[_gt].nii.gz
      database_nifti/patientNNNN/Info_{2CH,4CH}.cfg
      database_split/subgroup_{training,validation,testing}.txt   (one patient name per line)

- ``mhd`` (legacy 2019 release; patient numbers restart in ``testing/``, as in the real release)::

      training/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].mhd (+ .raw)   and Info_{2CH,4CH}.cfg
      testing/patientNNNN/...

Images are written with SimpleITK from (H, W) arrays whose row 0 is the near field (sector tip and LV apex at
the top), so ``sitk.GetArrayFromImage`` gives back the displayed orientation, as for the real files. NIfTI ED/ES
images are stored 2-D, MHD ones as 3-D volumes with a single slice (``ndim`` overrides both).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from echoseg.core.data.camus import read_camus
from echoseg.core.data.toy.heart import VIEWS, draw_heart, lv_volume_ml, render_echo, sample_anatomy, sample_patient
from echoseg.core.paths import check_native_path

LAYOUTS = ("nifti", "mhd")
FRAME_RATE = 50


def toy_split_counts(patients: int) -> tuple[int, int]:
    """(test, val) patient counts of a toy data set: about 20 % each, none below 3 patients."""
    if patients < 3:
        return 0, 0
    k = max(1, round(0.2 * patients))
    return k, k


def _spacing_mm(size: int) -> float:
    return 0.6 * 256 / size  # ~15 cm imaging depth whatever the pixel size


def _write_itk(path: Path, array: np.ndarray, spacing: float, ndim: int) -> None:

    arr = np.ascontiguousarray(array)
    if arr.ndim == 2 and ndim == 3:
        arr = arr[None]
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((spacing, spacing, 1.0)[: img.GetDimension()])
    sitk.WriteImage(img, check_native_path(path, "image"))  # checked: SimpleITK aborts on a non-UTF-8 path


def _cfg_text(info: dict) -> str:
    return "".join(f"{k}: {v}\n" for k, v in info.items())


def _ease(n: int) -> np.ndarray:
    """Cardiac phase (0 = ED .. 1 = ES) of ``n`` frames from ED to ES."""
    return 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))


def _write_patient(
    pdir: Path,
    name: str,
    rng: np.random.Generator,
    size: int,
    ext: str,
    ndim: int,
    half_sequence: bool,
) -> None:
    """Draw and write one patient (both views) into ``pdir``."""
    attrs = sample_patient(rng)
    spacing = _spacing_mm(size)
    pdir.mkdir(parents=True)
    volumes: dict[str, tuple[float, float]] = {}
    for view in VIEWS:
        anat = sample_anatomy(rng, view)
        nb = int(rng.integers(10, 17))
        phases = _ease(nb) if half_sequence else np.array([0.0, 1.0])
        images, labels = [], []
        for s in phases:
            lab, cone, right = draw_heart(size, anat, float(s))
            images.append(render_echo(lab, cone, right, rng, attrs["ImageQuality"]))
            labels.append(lab)
        for phase, idx in (("ED", 0), ("ES", len(phases) - 1)):
            _write_itk(pdir / f"{name}_{view}_{phase}{ext}", images[idx], spacing, ndim)
            _write_itk(pdir / f"{name}_{view}_{phase}_gt{ext}", labels[idx], spacing, ndim)
        if half_sequence:
            _write_itk(pdir / f"{name}_{view}_half_sequence{ext}", np.stack(images), spacing, 3)
            _write_itk(pdir / f"{name}_{view}_half_sequence_gt{ext}", np.stack(labels), spacing, 3)
        volumes[view] = (lv_volume_ml(labels[0], spacing), lv_volume_ml(labels[-1], spacing))
        edv, esv = volumes[view]
        info = {"ED": 1, "ES": nb, "NbFrame": nb, **attrs,
                "LVedv": round(edv, 1), "LVesv": round(esv, 1),
                "LVef": round(100 * (edv - esv) / edv, 1) if edv > 0 else 0.0, "FrameRate": FRAME_RATE}
        (pdir / f"Info_{view}.cfg").write_text(_cfg_text(info), encoding="utf-8")


def _write_patient_atomic(final: Path, name: str, rng: np.random.Generator, **kw) -> None:
    """Write a patient folder under a temporary name, then rename it into place."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_patient(tmp, name, rng, **kw)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_toy_camus(
    root: str | Path,
    patients: int = 10,
    size: int = 256,
    layout: str = "nifti",
    seed: int = 0,
    *,
    ndim: int | None = None,
    half_sequence: bool | None = None,
) -> pd.DataFrame:
    """Write a toy CAMUS data set under ``root`` and return its manifest (as ``read_camus`` reads it).

    Args:
        root: folder to write into (e.g. a run directory); the layout's folders are created in it.
        patients: number of patients (each: 2CH and 4CH views, ED and ES images with masks, Info cfgs).
        size: image height and width in pixels.
        layout: 'nifti' (2023 release) or 'mhd' (legacy 2019 release).
        seed: random seed; the same seed gives identical files.
        ndim: store ED/ES images 2-D (2) or as single-slice 3-D volumes (3); default 2 for nifti, 3 for mhd.
        half_sequence: also write ``*_half_sequence[_gt]`` ED-to-ES sequences; default True for nifti only.

    About 20 % of the patients are official test patients (``database_split/subgroup_testing.txt`` or the
    legacy ``testing/`` folder) and, in the nifti layout, about 20 % are listed in ``subgroup_validation.txt``.
    """

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if patients < 1 or size < 32:
        raise ValueError("need patients >= 1 and size >= 32")
    root = Path(root)
    nifti = layout == "nifti"
    ndim = ndim or (2 if nifti else 3)
    half_sequence = nifti if half_sequence is None else half_sequence
    ext = ".nii.gz" if nifti else ".mhd"
    rng = np.random.default_rng(seed)
    n_test, n_val = toy_split_counts(patients)
    kw = {"size": size, "ext": ext, "ndim": ndim, "half_sequence": half_sequence}
    if nifti:
        names = [f"patient{i:04d}" for i in range(1, patients + 1)]
        order = [names[i] for i in rng.permutation(patients)]
        lists = {"testing": sorted(order[:n_test]), "validation": sorted(order[n_test:n_test + n_val]),
                 "training": sorted(order[n_test + n_val:])}
        base = root / "database_nifti"
        base.mkdir(parents=True, exist_ok=True)
        for name in names:
            _write_patient_atomic(base / name, name, np.random.default_rng(rng.integers(2**63)), **kw)
        split_dir = root / "database_split"
        split_dir.mkdir(parents=True, exist_ok=True)
        for key, members in lists.items():
            (split_dir / f"subgroup_{key}.txt").write_text("".join(f"{m}\n" for m in members), encoding="utf-8")
    else:
        groups = {"training": patients - n_test, "testing": n_test}
        for group, count in groups.items():
            if count == 0:
                continue
            base = root / group
            base.mkdir(parents=True, exist_ok=True)
            for i in range(1, count + 1):
                name = f"patient{i:04d}"
                _write_patient_atomic(base / name, name, np.random.default_rng(rng.integers(2**63)), **kw)
    return read_camus(root)
