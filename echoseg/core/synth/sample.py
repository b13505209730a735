"""Sampling from the mask-conditioned model: DDIM, DDPM or DPM-Solver++, with classifier-free guidance.

Every sample has its own ``torch.Generator`` (seeded per sample), used for its initial noise and, with the
stochastic DDPM sampler, for the noise added at each step, so a sample's image does not depend on which other
samples share its batch: a resumed run gives byte-identical images for the same seeds, batch size and device; a
different batch size or process count can change a rare pixel by one grey level (floating-point rounding).

Guidance: ``eps = eps_null + g * (eps_cond - eps_null)`` with the all-zero null condition; ``g = 1`` is plain
conditional sampling (one UNet pass per step), ``g > 1`` needs a model trained with ``--cond-dropout``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from echoseg.core.errors import UserError
from echoseg.core.models.diffusion import model_input, one_hot, tensor_to_images

SAMPLERS = ("ddim", "ddpm", "dpm-solver")


def make_sampler(name: str, train_scheduler) -> Any:
    """A diffusers scheduler for ``name`` built from the training scheduler's config."""
    from diffusers import (  # deferred: heavy import, loaded only when this path runs
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
    )

    cfg = train_scheduler.config
    if name == "ddim":
        return DDIMScheduler.from_config(cfg)
    if name == "ddpm":
        return DDPMScheduler.from_config(cfg)
    if name == "dpm-solver":
        return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)
    raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def generators(seeds: list[int] | np.ndarray) -> list[torch.Generator]:
    """One CPU generator per sample."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def sample(
    unet: torch.nn.Module,
    scheduler,
    labels: np.ndarray | torch.Tensor,
    seeds: list[int] | np.ndarray,
    *,
    steps: int = 50,
    guidance: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    mask_outside_cone: bool = True,
) -> np.ndarray:
    """Generate one grey image per label map.

    Args:
        unet: the conditional UNet (already on ``device`` in ``dtype``).
        scheduler: a sampling scheduler (:func:`make_sampler`); its timesteps are set here.
        labels: (B, H, W) SDM label maps.
        seeds: one seed per label map.
        steps: number of denoising steps (the DDPM sampler usually takes all training steps).
        guidance: classifier-free guidance scale (1: none).
        device: where to run.
        dtype: model dtype (float16/bfloat16 on GPU).
        mask_outside_cone: set pixels outside the cone (label 0) to black, as in real sector scans.

    Returns:
        uint8 (B, H, W) images.
    """
    lab = torch.as_tensor(np.asarray(labels)).long()
    if lab.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(lab.shape)}")
    b, h, w = lab.shape
    if len(seeds) != b:
        raise ValueError("need one seed per label map")
    gens = generators(seeds)
    x = torch.stack([torch.randn((1, h, w), generator=g) for g in gens]).to(device)
    cond = one_hot(lab).to(device)
    guided = float(guidance) != 1.0
    if guided:
        cond = torch.cat([torch.zeros_like(cond), cond])
    cond = cond.to(dtype)
    scheduler.set_timesteps(int(steps), device=device)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        xin = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
        eps = unet(model_input(xin.to(dtype), cond), t).sample.float()
        if guided:
            e_null, e_cond = eps.chunk(2)
            eps = e_null + float(guidance) * (e_cond - e_null)
        # The DDPM sampler draws its step noise with these per-sample generators (diffusers randn_tensor).
        x = scheduler.step(eps, t, x, generator=gens).prev_sample
    images = tensor_to_images(x)
    if mask_outside_cone:
        images[lab.numpy() == 0] = 0
    return images
