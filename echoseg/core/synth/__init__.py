"""Synthetic data: label-map perturbation, mask-conditioned diffusion (train, sample, generate), balanced sampling,
text-to-image generation with local diffusers pipelines, re-querying samples like known-bad images, and synthetic
reports."""
