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

Inference (eval mode, no autograd or autocast, 3x3 kernels) takes a faster path with the same outputs (float
rounding aside), from weights folded once and cached outside the state dict (rebuilt whenever a parameter or buffer
changes, dropped by ``train()``): tensors are time-major and channels-last; a layer's input and previous hidden state
live side by side in one buffer, so the per-frame convolution over ``concat(x_t, h)`` reads them in place (for
narrow inputs; wide ones keep the batched ``conv_x``); ``tanh(z) = 2 sigmoid(2z) - 1`` (g rows pre-scaled by 2, the
cell kept as 2c) turns the gates into one sigmoid and avoids torch's CPU tanh, several times slower; each
BatchNorm is applied while writing the next layer's input, after the max-pool when its scale is non-negative (4x
fewer pixels); every decoder level ``conv3x3(upsample2(x))`` runs at the coarse size as four 2x2 phase convolutions
(BatchNorm folded in, 16/36 of the multiply-adds), with the 1x1 head applied per phase before interleaving, so no
full-resolution decoder map is built. On CPU, B4L1 at 112x112 runs ~2.5x faster than on the reference path, its
convolutions (~3/4 of the time) near the core's peak FLOP rate. ``forward(..., fast=False)`` forces the reference.

Warm-up (``warmup`` frames, 16 in the named configs; not a layer, no parameter): from a zero state the recurrence needs
a few frames to gather spatial context (each step widens it by one 3x3 neighbourhood per layer), so the first frames
of a cold start come out under-segmented, which moves ED/ES estimates on videos whose first frames are an ED or ES
frame. :meth:`ConvLSTMStudent.predict` therefore starts each video from :meth:`ConvLSTMStudent.warm_state`: the
state after frames ``k..1`` played backwards (a temporal reflection, ``k = min(warmup, T - 1)``; outputs discarded).
The output of frame ``t`` then depends on frames ``0..max(t, k)``: causal after the first ``k`` frames; ``warmup=0``
(a spec without the key, i.e. students distilled before it existed) is the strictly causal cold start.

Horizon (``horizon`` frames; ``echoseg distill`` sets it to its training window, ``--seq-len``): a student trained on
windows of L frames has never carried its state much further, and over longer videos its masks drift (on 48-frame toy
videos a student trained on 16-frame windows shrank the LV from frame ~32 on, and put ES at the last frame). So a
video is segmented in spans of ``horizon`` frames, each from a fresh state warmed on the ``warmup`` frames before it
(played forwards: still causal); the first span starts from the reflected warm state above. Frame ``t`` then depends
on at most ``warmup + horizon`` frames, the regime validation measured. ``horizon=0`` (also a spec without the key)
carries one state over the whole video.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from echoseg.core.errors import UserError
from echoseg.core.models import register
from echoseg.core.models.convlstm_fast import FastLayer, FoldedPlan, interleave, max_pool

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
                 kernel: int = 3, skips: bool = False, mean: float = 0.0, std: float = 255.0, warmup: int = 0,
                 horizon: int = 0) -> None:
        super().__init__()
        if not 1 <= int(blocks) <= 4:
            raise UserError(f"--blocks must be 1..4, got {blocks}")
        if not 1 <= int(layers) <= 4:
            raise UserError(f"--layers must be 1..4, got {layers}")
        if float(std) <= 0:
            raise UserError(f"convlstm: std must be > 0, got {std}")
        if int(warmup) < 0:
            raise UserError(f"convlstm: warmup must be >= 0, got {warmup}")
        if int(horizon) < 0:
            raise UserError(f"convlstm: horizon must be >= 0, got {horizon}")
        self.blocks, self.layers, self.base_filters = int(blocks), int(layers), int(base_filters)
        self.in_channels, self.kernel, self.skips = int(in_channels), int(kernel), bool(skips)
        self.mean, self.std, self.warmup, self.horizon = float(mean), float(std), int(warmup), int(horizon)
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

    def warm_state(self, x: torch.Tensor) -> State | None:
        """The state a video starts from (see the module docstring): after frames ``k..1`` of its normalised first
        frames ``x`` (1, >= k + 1, 1, H, W) run backwards, ``k = min(warmup, frames - 1)``; None (zeros) when k is 0."""
        k = min(self.warmup, x.shape[1] - 1)
        return self(x[:, 1 : k + 1].flip(1), None, return_state=True)[1] if k > 0 else None

    def stream(self, frames: Callable[[int, int], torch.Tensor], total: int, chunk: int
               ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Logits of a whole video, chunk by chunk, in spans of :attr:`horizon` frames (see the module docstring).

        Args:
            frames: ``frames(a, b)`` gives the normalised frames ``a..b-1`` as (1, b - a, 1, H, W).
            total: the video's frame count.
            chunk: frames per forward call (the state carries across chunks, so the result does not depend on it).
        Yields:
            ``(start, stop, logits)`` with logits (1, stop - start, 1, H, W), in frame order.
        """
        span = self.horizon or total
        for first in range(0, total, span):
            if first == 0:
                state = self.warm_state(frames(0, min(self.warmup + 1, total)))
            else:
                k = min(self.warmup, first)
                state = self(frames(first - k, first), None, return_state=True)[1] if k > 0 else None
            end = min(first + span, total)
            for start in range(first, end, max(1, int(chunk))):
                stop = min(start + max(1, int(chunk)), end)
                logits, state = self(frames(start, stop), state, return_state=True)
                yield start, stop, logits

    def forward(self, x: torch.Tensor, state: State | None = None, return_state: bool = False,
                fast: bool | None = None):
        """Logits for normalised clips.

        Args:
            x: (B, T, 1, H, W) or (B, T, H, W) normalised frames (see :meth:`normalise`).
            state: the recurrent state returned by a previous call on the preceding frames (None: a new clip).
            return_state: also return the state after the last frame.
            fast: use the folded inference path (None: whenever in eval mode without autograd or autocast).
        Returns:
            (B, T, 1, H, W) logits, and the state when ``return_state``.
        """
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if fast is None:
            fast = (not self.training and not torch.is_grad_enabled() and self.kernel == 3
                    and not torch.is_autocast_enabled(x.device.type))
        if fast:
            if self.training or self.kernel != 3:
                raise ValueError("the fast path needs eval mode and 3x3 kernels")
            with torch.no_grad():
                logits, new_state = self._fast_forward(x, state)
        else:
            logits, new_state = self._reference_forward(x, state)
        return (logits, new_state) if return_state else logits

    def _reference_forward(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The layer-by-layer definition (training and autograd use it)."""
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
        return _per_frame(self.head, x)[..., :h, :w], new_state

    def _plan(self) -> FoldedPlan:
        """The folded inference weights, rebuilt when any parameter or buffer changed (in place or replaced)."""
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in self.state_dict(keep_vars=True).values())
        plan = self.__dict__.get("_fast_plan")
        if plan is None or plan.key != key:
            with torch.no_grad():
                plan = FoldedPlan(self, key)
            self.__dict__["_fast_plan"] = plan
        return plan

    def train(self, mode: bool = True) -> ConvLSTMStudent:
        """Also drops the cached inference weights when switching to training."""
        if mode:
            self.__dict__.pop("_fast_plan", None)
        return super().train(mode)

    def _fast_forward(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Eval-mode forward from the folded weights (see the module docstring); same outputs as the reference."""
        plan = self._plan()
        b, t, _, h, w = x.shape
        m = self.multiple
        hp, wp = h + (-h) % m, w + (-w) % m
        frames = F.pad(x.transpose(0, 1), (0, wp - w, 0, hp - h))  # time-major (T, B, C, H, W)
        # the next layer's input and the layer whose BatchNorm it still needs (applied while writing it)
        source: tuple[torch.Tensor, FastLayer | None] = (frames, None)
        new_state: State = []
        feats: list[torch.Tensor] = []
        k, size = 0, (hp, wp)
        prev: FastLayer | None = None
        raw = frames  # the last layer's raw (un-normalised) hidden states
        for i, block in enumerate(plan.layers):
            if i > 0:
                size = (size[0] // 2, size[1] // 2)
                if self.skips:  # the normalised full-size map is needed anyway
                    feats.append(prev.normed(raw.flatten(0, 1)))
                    source = (max_pool(feats[-1].unflatten(0, (t, b))), None)
                elif prev.pool_first:
                    source = (max_pool(raw), prev)
                else:
                    source = (max_pool(prev.normed(raw)), None)
            for j, layer in enumerate(block):
                if j > 0:
                    source = (raw, prev)
                raw, s = layer.run(source, t, b, *size, like=frames, state=None if state is None else state[k])
                new_state.append(s)
                prev, k = layer, k + 1
        x = prev.normed(raw.flatten(0, 1))  # (T*B, C, h, w)
        logits = None
        for j, level in enumerate(plan.decoder):
            y = F.conv2d(x, level.phase_w, level.phase_b if level.skip_w is None else None, padding=1)
            if level.skip_w is not None:
                hi = F.conv2d(feats[self.blocks - 2 - j], level.skip_w, level.bias, padding=1)
                x = interleave(y, level.out_channels, out=hi).relu_()
            elif j == len(plan.decoder) - 1:  # head per phase at the coarse size, then interleave one channel
                logits = interleave(F.conv2d(y.relu_(), plan.head4_w, plan.head4_b, groups=4), 1)
            else:
                x = interleave(y.relu_(), level.out_channels)
        if logits is None:
            logits = F.conv2d(x, plan.head_w, plan.head_b)
        logits = logits.unflatten(0, (t, b)).transpose(0, 1)[..., :h, :w]
        return logits.contiguous(), new_state

    # ------------------------------------------------------------------ inference helpers
    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) frames -> ``(frames - mean) / std`` float32."""
        return (frames.float() - self.mean) / self.std

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """LV probabilities of one video from its :meth:`warm_state`, in spans of :attr:`horizon` frames.

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
        try:
            def window(a: int, b: int) -> torch.Tensor:
                return self.normalise(torch.from_numpy(np.ascontiguousarray(frames[a:b])).to(device))[None]

            for start, stop, logits in self.stream(window, len(frames), batch_size):
                out[start:stop] = torch.sigmoid(logits[0, :, 0].float()).cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def num_parameters(self) -> int:
        """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def gflops(self, h: int, w: int, fast: bool = False) -> float:
        """GFLOPs (2 x multiply-accumulates) of one frame of size ``h`` x ``w`` (torch's FLOP counter): of the
        architecture as defined, or with ``fast`` of the folded inference path (its decoder needs fewer)."""

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                self(torch.zeros(1, 1, 1, h, w, device=device), fast=fast)
        finally:
            self.train(was_training)
        return counter.get_total_flops() / 1e9

    # ------------------------------------------------------------------ registry interface
    def spec(self) -> dict[str, Any]:
        """The architecture and input normalisation (``build_model('convlstm', spec)`` rebuilds it)."""
        return {"blocks": self.blocks, "layers": self.layers, "base_filters": self.base_filters,
                "in_channels": self.in_channels, "kernel": self.kernel, "skips": self.skips,
                "mean": self.mean, "std": self.std, "warmup": self.warmup,
                "horizon": self.horizon}

    def save_assets(self, folder: Path) -> None:
        """Nothing besides the weights and model.json is needed."""


SPEC_KEYS = ("blocks", "layers", "base_filters", "in_channels", "kernel", "skips", "mean", "std", "warmup",
             "horizon")


@register("convlstm")
def build(config: dict[str, Any], weights: str | None = None, assets: Path | None = None) -> ConvLSTMStudent:
    """Build the student from a named config or a spec; ``weights`` may name a safetensors file of its weights."""
    model = ConvLSTMStudent(**{k: config[k] for k in SPEC_KEYS if k in config})
    if weights is not None:

        p = Path(weights)
        if not p.is_file():
            raise UserError(f"--weights {weights}: convlstm weights must be a local .safetensors file")
        try:
            model.load_state_dict(load_file(str(p)), strict=True)
        except RuntimeError as exc:
            raise UserError(f"--weights {weights}: does not fit this convlstm config ({str(exc)[:160]})") from None
    return model
