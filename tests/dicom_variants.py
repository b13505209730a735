"""Edited copies of pydicom's real cardiac cine (examples_ybr_color.dcm), shared by the DICOM tests."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file


def testdata(name: str) -> str:
    """A file pydicom (or pydicom-data) ships; the test is skipped when it is not installed."""
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available")
    return path


def grey_cine():
    """The real cardiac cine as a dataset and its (30, 240, 320) BT.601 luma frames."""
    ds = pydicom.dcmread(testdata("examples_ybr_color.dcm"))
    grey = (ds.pixel_array @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
    return ds, grey


def variant(path, frames=None, *, drop=(), region=None, burn=False, **attrs):
    """Save an edited copy: uncompressed grey ``frames``, attributes deleted (``drop``) or set, the first
    SequenceOfUltrasoundRegions item moved to ``region`` = (x0, y0, x1, y1); ``burn`` paints a white block (text)
    above that region."""
    ds, grey = grey_cine()
    frames = np.array(grey if frames is None else frames)
    if burn:
        frames[:, 0:12, 0:140] = 255
    ds.set_pixel_data(np.ascontiguousarray(frames), "MONOCHROME2", 8)
    for key in drop:
        if key in ds:
            delattr(ds, key)
    for key, value in attrs.items():
        setattr(ds, key, value)
    if region is not None:
        item = ds.SequenceOfUltrasoundRegions[0]
        (item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1,
         item.RegionLocationMaxY1) = region
    ds.save_as(path)
    return path
