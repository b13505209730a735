"""Curation of synthetic data sets: filters, embeddings, similarity, the MLLM check and reports (`echoseg curate`);
the known-bad gate that `synth generate --regenerate-bad` applies during generation."""

from echoseg.core.curate.run import FILTERS, CurateConfig, curate

__all__ = ["FILTERS", "CurateConfig", "curate"]
