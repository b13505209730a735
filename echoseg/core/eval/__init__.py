"""Evaluation: segmentation metrics, ED/ES detection scored as aFD, and the CLIP mask-quality score (EchoDFKD).

- :mod:`echoseg.core.metrics.afd`: the ED/ES detection algorithm on area curves (pure numpy, vectorised).
- :mod:`echoseg.core.metrics.areas`: area curves from mask files or an areas CSV; reference frames.
- :mod:`echoseg.core.metrics.afd_report`: aFD over a data set, per_video.csv, summary and figure.
- :mod:`echoseg.core.eval.echoclip`: open_clip model loading and the mask-quality score.
- :mod:`echoseg.core.eval.seg` and :mod:`echoseg.core.metrics.seg`: segmentation evaluation (Dice, IoU, HD95).
"""

from echoseg.core.metrics.afd import afd, detect, estimate_frame, estimate_frames, estimate_phase, standardise

__all__ = ["afd", "detect", "estimate_frame", "estimate_frames", "estimate_phase", "standardise"]
