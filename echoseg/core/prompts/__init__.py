"""Language prompts for segmentation: Synthetic Boost P0–P7 templates, shape words (geometric or VQA), builds."""

from echoseg.core.prompts.shape import SHAPES, classify_shape, shape_features
from echoseg.core.prompts.templates import Attributes, build_prompts, number_words

__all__ = ["SHAPES", "Attributes", "build_prompts", "classify_shape", "number_words", "shape_features"]
