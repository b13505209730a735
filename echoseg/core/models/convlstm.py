"""The EchoDFKD student (Petit et al. 2024): a small causal ConvLSTM encoder-decoder for LV video segmentation.

Architecture (grey input, one channel):

- encoder of ``blocks`` blocks (1..4); block ``i`` (0-based) has ``layers`` ConvLSTM layers (1..4) of
  ``base_filters * 2**i`` filters (12, 24, 48, 96 by default). A ConvLSTM layer is one 3x3 convolution over
  ``concat(input, hidden)`` to the four gates i, f, o, g (with bias), ``c = f*c + i*g``, ``h = o*tanh(c)``,
  zero initial state per clip; a per-frame BatchNorm (affine) follows each layer; 2x2 max-pool between blocks;
- decoder: per level, nearest x2 upsampling, 3x3 conv to the next-finer width, BatchNorm, ReLU, back to full size;
- 1x1 head to one logit per pixel.

That layout gives exactly the published parameter counts (B1L1 5,701; B2L1 39,577; B3L1 174,721; B4L1 714,577;
B4L4 3,361,657). ``skips=True`` adds U-Net skip connections (the encoder output of the finer level is concatenated
before each decoder conv): not in the reference, offered for comparison.

The convolution over ``concat(x, h)`` is computed as ``conv_x(x) + conv_h(h)`` (the same parameters, split), so the
input half runs for all frames in one batched call and only ``conv_h`` runs frame by frame. Everything after the
recurrence is per-frame, so the network is causal: the output at frame t depends on frames 0..t only (in eval mode,
where BatchNorm uses its running statistics). :meth:`ConvLSTMStudent.forward` accepts and returns the recurrent
state, so a long video is processed in chunks exactly as in one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echoseg.core.errors import UserError
from echoseg.core.models import register

State = list[tuple[torch.Tensor, torch.Tensor]]


class ConvLSTMLayer(nn.Module):
    """One ConvLSTM layer over a clip (B, T, C, H, W) -> (B, T, F, H, W)."""

    def __init__(self, in_channels: int, filters: int, kernel: int = 3) -> None:
        super().__init__()
        self.filters = int(filters)
        self.conv_x = nn.Conv2d(in_channels, 4 * filters, kernel, padding=kernel // 2, bias=True)
        self.conv_h = nn.Conv2d(filters, 4 * filters, kernel, padding=kernel // 2, bias=False)
        with torch.no_grad():  # forget-gate bias 1 (Jozefowicz et al. 2015; Keras' unit_forget_bias)
            self.conv_x.bias.zero_()
            self.conv_x.bias[filters : 2 * filters] = 1.0

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the recurrence over all frames; ``state`` (h, c) continues a previous chunk (None: zeros)."""
        b, t, c, h, w = x.shape
        gx = self.conv_x(x.reshape(b * t, c, h, w)).reshape(b, t, 4 * self.filters, h, w)
        if state is None:
            hidden = x.new_zeros(b, self.filters, h, w, dtype=gx.dtype)
            cell = torch.zeros_like(hidden)
        else:
            hidden, cell = state
        n = self.filters
        inplace = not (torch.is_grad_enabled() and (gx.requires_grad or hidden.requires_grad))
        out = gx.new_empty(b, t, n, h, w) if inplace else None
        outs = []
        for step in range(t):
            gates = self.conv_h(hidden)
            if inplace:  # inference: no temporaries (allocation dominates these small elementwise ops on CPU)
                gates += gx[:, step]
                torch.sigmoid_(gates[:, : 3 * n])
                torch.tanh_(gates[:, 3 * n :])
                i, f, o, g = gates.split(n, dim=1)
                cell = cell.clone() if step == 0 and state is not None else cell
                cell.mul_(f).addcmul_(i, g)
                torch.mul(o, torch.tanh(cell), out=out[:, step])
                hidden = out[:, step]
            else:
                i, f, o, g = (gates + gx[:, step]).split(n, dim=1)
                cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
                hidden = torch.sigmoid(o) * torch.tanh(cell)
                outs.append(hidden)
        return (out if inplace else torch.stack(outs, dim=1)), (hidden, cell)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to every frame of (B, T, C, H, W)."""
    b, t = x.shape[:2]
    y = module(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class ConvLSTMStudent(nn.Module):
    """Causal ConvLSTM encoder-decoder: normalised clips (B, T, 1, H, W) -> LV logits (B, T, 1, H, W)."""

    name: str = "convlstm"

    def __init__(self, blocks: int = 4, layers: int = 1, base_filters: int = 12, in_channels: int = 1,
                 kernel: int = 3, skips: bool = False, mean: float = 0.0, std: float = 255.0) -> None:
        super().__init__()
        if not 1 <= int(blocks) <= 4:
            raise UserError(f"--blocks must be 1..4, got {blocks}")
        if not 1 <= int(layers) <= 4:
            raise UserError(f"--layers must be 1..4, got {layers}")
        if float(std) <= 0:
            raise UserError(f"convlstm: std must be > 0, got {std}")
        self.blocks, self.layers, self.base_filters = int(blocks), int(layers), int(base_filters)
        self.in_channels, self.kernel, self.skips = int(in_channels), int(kernel), bool(skips)
        self.mean, self.std = float(mean), float(std)
        widths = [self.base_filters * 2**i for i in range(self.blocks)]
        self.widths = widths
        self.encoder = nn.ModuleList()
        self.enc_norms = nn.ModuleList()
        cin = self.in_channels
        for width in widths:
            cells, norms = nn.ModuleList(), nn.ModuleList()
            for _ in range(self.layers):
                cells.append(ConvLSTMLayer(cin, width, self.kernel))
                norms.append(nn.BatchNorm2d(width))
                cin = width
            self.encoder.append(cells)
            self.enc_norms.append(norms)
        self.decoder = nn.ModuleList()
        for i in reversed(range(1, self.blocks)):
            cin = widths[i] + (widths[i - 1] if self.skips else 0)
            self.decoder.append(nn.Sequential(
                nn.Conv2d(cin, widths[i - 1], self.kernel, padding=self.kernel // 2),
                nn.BatchNorm2d(widths[i - 1]),
                nn.ReLU(inplace=True),
            ))
        self.head = nn.Conv2d(widths[0], 1, 1)
        # Binarisation threshold picked on validation (Dice against the teacher); saved with the weights.
        self.register_buffer("threshold", torch.tensor(0.5))

    # ------------------------------------------------------------------ forward
    @property
    def multiple(self) -> int:
        """Frame sides are padded up to a multiple of this (the pooling factor)."""
        return 2 ** (self.blocks - 1)

    def initial_state(self) -> None:
        """The zero state a clip starts from (``None``: every layer starts at zeros)."""
        return None

    def forward(self, x: torch.Tensor, state: State | None = None, return_state: bool = False):
        """Logits for normalised clips.

        Args:
            x: (B, T, 1, H, W) or (B, T, H, W) normalised frames (see :meth:`normalise`).
            state: the recurrent state returned by a previous call on the preceding frames (None: a new clip).
            return_state: also return the state after the last frame.
        Returns:
            (B, T, 1, H, W) logits, and the state when ``return_state``.
        """
        if x.dim() == 4:
            x = x.unsqueeze(2)
        b, t, _, h, w = x.shape
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x.reshape(b * t, -1, h, w), (0, pw, 0, ph)).reshape(b, t, -1, h + ph, w + pw)
        new_state: State = []
        feats = []
        k = 0
        for i, (cells, norms) in enumerate(zip(self.encoder, self.enc_norms, strict=True)):
            if i > 0:
                x = _per_frame(lambda z: F.max_pool2d(z, 2), x)
            for cell, norm in zip(cells, norms, strict=True):
                x, s = cell(x, None if state is None else state[k])
                x = _per_frame(norm, x)
                new_state.append(s)
                k += 1
            feats.append(x)
        for j, level in enumerate(self.decoder):
            x = _per_frame(lambda z: F.interpolate(z, scale_factor=2.0, mode="nearest"), x)
            if self.skips:
                x = torch.cat([x, feats[self.blocks - 2 - j]], dim=2)
            x = _per_frame(level, x)
        logits = _per_frame(self.head, x)[..., :h, :w]
        return (logits, new_state) if return_state else logits

    # ------------------------------------------------------------------ inference helpers
    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) frames -> ``(frames - mean) / std`` float32."""
        return (frames.float() - self.mean) / self.std

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """LV probabilities of one video, frame by frame in one causal pass.

        Args:
            frames: (T, H, W) uint8 grey frames.
            batch_size: frames per chunk (the state carries across chunks, so the result does not depend on it).
        Returns:
            (T, H, W) float32 probabilities.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = np.empty(frames.shape, np.float32)
        state = None
        try:
            for start in range(0, len(frames), max(1, int(batch_size))):
                chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size])).to(device)
                logits, state = self(self.normalise(chunk)[None], state, return_state=True)
                out[start : start + len(chunk)] = torch.sigmoid(logits[0, :, 0].float()).cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def num_parameters(self) -> int:
        """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def gflops(self, h: int, w: int) -> float:
        """GFLOPs (2 x multiply-accumulates) of one frame of size ``h`` x ``w`` (torch's FLOP counter)."""
        from torch.utils.flop_counter import FlopCounterMode

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                self(torch.zeros(1, 1, 1, h, w, device=device))
        finally:
            self.train(was_training)
        return counter.get_total_flops() / 1e9

    # ------------------------------------------------------------------ registry interface
    def spec(self) -> dict[str, Any]:
        """The architecture and input normalisation (``build_model('convlstm', spec)`` rebuilds it)."""
        return {"blocks": self.blocks, "layers": self.layers, "base_filters": self.base_filters,
                "in_channels": self.in_channels, "kernel": self.kernel, "skips": self.skips,
                "mean": self.mean, "std": self.std}

    def save_assets(self, folder: Path) -> None:
        """Nothing besides the weights and model.json is needed."""


SPEC_KEYS = ("blocks", "layers", "base_filters", "in_channels", "kernel", "skips", "mean", "std")


@register("convlstm")
def build(config: dict[str, Any], weights: str | None = None, assets: Path | None = None) -> ConvLSTMStudent:
    """Build the student from a named config or a spec; ``weights`` may name a safetensors file of its weights."""
    model = ConvLSTMStudent(**{k: config[k] for k in SPEC_KEYS if k in config})
    if weights is not None:
        from safetensors.torch import load_file

        p = Path(weights)
        if not p.is_file():
            raise UserError(f"--weights {weights}: convlstm weights must be a local .safetensors file")
        try:
            model.load_state_dict(load_file(str(p)), strict=True)
        except RuntimeError as exc:
            raise UserError(f"--weights {weights}: does not fit this convlstm config ({str(exc)[:160]})") from None
    return model
