"""Evaluation: segmentation metrics, ED/ES detection scored as aFD, the CLIP mask-quality score (EchoDFKD), and
pre-trained image-text encoders (SynCXR: zero-shot classification and grounding, linear probes).

Entry points, one typed config and a run each (the `echoseg eval` commands):

- :mod:`echoseg.core.eval.seg`: ``run_seg(EvalSegConfig, run)``, a training run's checkpoint scored on a split
  (Dice, IoU, HD95; :mod:`echoseg.core.metrics.seg`).
- :mod:`echoseg.core.eval.afd`: ``run_afd(EvalAfdConfig, run)``, ED/ES detection scored as aFD.
- :mod:`echoseg.core.eval.ef`: ``run_ef(EvalEfConfig, run)``, ejection fraction from the masks at ED and ES
  (volumes: :mod:`echoseg.core.metrics.volumes`) against FileList.csv's EF.
- :mod:`echoseg.core.eval.echoclip`: ``run_echoclip(EvalEchoclipConfig, run)``, the CLIP mask-quality score.
- :mod:`echoseg.core.eval.zeroshot`: ``run_zeroshot(EvalZeroshotConfig, run)``, zero-shot classification by class
  prompts (tasks in :mod:`echoseg.core.eval.zeroshot_tasks`) or grounding (:mod:`echoseg.core.eval.grounding`).
- :mod:`echoseg.core.eval.probe`: ``run_probe(EvalProbeConfig, run)``, linear probes at patient fractions, or
  fine-tuning (:mod:`echoseg.core.eval.probe_finetune`).

Helpers: :mod:`echoseg.core.eval.sources` (masks from files or a labelling model, and ``VideoEvalConfig``: the
options afd, ef and echoclip share), :mod:`echoseg.core.eval.predict` (a model over every frame of EchoNet videos); in
the floor, :mod:`echoseg.core.metrics.afd` (the detection algorithm), :mod:`echoseg.core.metrics.areas` (area
curves, reference frames) and :mod:`echoseg.core.metrics.afd_report` (aFD over a data set, per_video.csv, summary
and figure).
"""

from echoseg.core.metrics.afd import afd, detect, estimate_frame, estimate_frames, estimate_phase, standardise

__all__ = ["afd", "detect", "estimate_frame", "estimate_frames", "estimate_phase", "standardise"]
