"""Curation of synthetic data sets: filters, embeddings, similarity and reports (`echoseg curate`)."""

from echoseg.core.curate.run import FILTERS, CurateConfig, curate

__all__ = ["FILTERS", "CurateConfig", "curate"]
