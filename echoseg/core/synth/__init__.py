"""Synthetic data: label-map perturbation, mask-conditioned diffusion (train, sample, generate), balanced sampling
and text-to-image generation with local diffusers pipelines."""
