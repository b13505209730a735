"""Measurements shared by several stages (floor): segmentation overlap and distance (:mod:`.seg`), ED/ES frame
detection and aFD (:mod:`.afd`), per-frame areas (:mod:`.areas`) and the aFD table of a data set
(:mod:`.afd_report`). Pure functions over arrays and files; no run orchestration (see docs/architecture.md)."""
