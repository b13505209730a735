"""The ConvLSTM student's folded inference path (see :mod:`echoseg.core.models.convlstm`, "fast inference").

Eval-mode BatchNorm folded into the convolutions, channels-last buffers, the input-part convolution merged with the
recurrent one where that is cheaper, and each decoder level's ``conv3x3(upsample2(x))`` run at the coarse
resolution as four phase kernels. :class:`FoldedPlan` holds the folded weights of one model state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # annotations only: convlstm imports this module
    from echoseg.core.models.convlstm import ConvLSTMLayer, ConvLSTMStudent

CL = torch.channels_last
# The input-part conv is merged into the per-frame conv when in_channels <= filters * this (else batched over frames).
CONCAT_RATIO = 0.5
# Row r of _PHASE[a] sums the 3x3 taps that nearest x2 upsampling maps onto coarse tap r for output phase a.
_PHASE = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


# ---------------------------------------------------------------------------------------------- fast inference
def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``scale * x + shift`` (per channel, shaped (C, 1, 1))."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return scale[:, None, None].contiguous(), shift[:, None, None].contiguous()


def _phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) kernel applied after nearest x2 upsampling -> (4 * O, I, 2, 2) coarse kernels, phase-major."""
    r = _PHASE.to(weight)
    k = torch.einsum("apy,bqx,oiyx->aboipq", r, r, weight)
    return k.reshape(4 * weight.shape[0], weight.shape[1], 2, 2)


def _cl_empty(*shape: int, like: torch.Tensor) -> torch.Tensor:
    """An empty (..., C, H, W) tensor whose every (N, C, H, W) slice is dense channels-last."""
    *lead, c, h, w = shape
    return like.new_empty(*lead, h, w, c).movedim(-1, -3)


def interleave(y: torch.Tensor, channels: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Phase outputs (N, 4 * C, h + 1, w + 1) of the 2x2 convolutions -> (N, C, 2h, 2w); adds into ``out`` if given."""
    n, _, h1, w1 = y.shape
    add = out is not None
    out = _cl_empty(n, channels, 2 * (h1 - 1), 2 * (w1 - 1), like=y) if out is None else out
    for a in (0, 1):
        for b in (0, 1):
            ph = 2 * a + b
            src = y[:, ph * channels : (ph + 1) * channels, a : a + h1 - 1, b : b + w1 - 1]
            dst = out[:, :, a::2, b::2]
            dst.add_(src) if add else dst.copy_(src)
    return out


class FastLayer:
    """One ConvLSTM layer's folded inference weights (g-gate rows scaled by 2: tanh(g) = 2 sigmoid(2g) - 1)."""

    def __init__(self, cell: ConvLSTMLayer, norm: nn.BatchNorm2d) -> None:
        n = cell.filters
        gain = torch.ones(4 * n, 1, 1, 1, dtype=cell.conv_x.weight.dtype, device=cell.conv_x.weight.device)
        gain[3 * n :] = 2.0
        wx, wh = cell.conv_x.weight * gain, cell.conv_h.weight * gain
        self.filters, self.in_channels, self.pad = n, wx.shape[1], cell.conv_h.padding[0]
        self.bias = cell.conv_x.bias * gain.flatten()
        self.concat = self.in_channels <= n * CONCAT_RATIO
        if self.concat:
            self.w = torch.cat([wx, wh], dim=1).contiguous(memory_format=CL)
        else:
            self.wx, self.wh = wx.contiguous(memory_format=CL), wh.contiguous(memory_format=CL)
        self.scale, self.shift = _bn_affine(norm)
        self.pool_first = bool((self.scale >= 0).all())  # max(s*x) = s*max(x) only for s >= 0

    def run(self, source: tuple[torch.Tensor, FastLayer | None], t: int, b: int, h: int, w: int,
            like: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
            ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Recurrence over ``t`` frames of ``source`` = (T, B, C, H, W) input, the layer whose BatchNorm it still
        needs (or None). Returns the raw (un-normalised) hidden states (T, B, F, H, W) and the final (h, c)."""

        def write_input(dst: torch.Tensor) -> None:
            src, norm = source
            dst.copy_(src) if norm is None else norm.normed(src, out=dst)

        c, n, pad = self.in_channels, self.filters, self.pad
        if self.concat:  # slot s holds [x_s, h_{s-1}]: the step-s conv reads it in place
            z = _cl_empty(t + 1, b, c + n, h, w, like=like)
            write_input(z[:t, :, :c])
            hid = z[:, :, c:]
        else:
            xin = _cl_empty(t, b, c, h, w, like=like)
            write_input(xin)
            gx = F.conv2d(xin.flatten(0, 1), self.wx, self.bias, padding=pad).unflatten(0, (t, b))
            hid = _cl_empty(t + 1, b, n, h, w, like=like)
        cell = _cl_empty(b, n, h, w, like=like)  # holds 2c: tanh(c) = 2 sigmoid(2c) - 1
        if state is None:
            hid[0].zero_()
            cell.zero_()
        else:
            hid[0].copy_(state[0])
            torch.mul(state[1], 2.0, out=cell)
        tmp = torch.empty_like(cell)
        for s in range(t):
            if self.concat:
                gates = F.conv2d(z[s], self.w, self.bias, padding=pad)
            else:
                gates = F.conv2d(hid[s], self.wh, None, padding=pad).add_(gx[s])
            torch.sigmoid_(gates)
            i, f, o, g = gates.split(n, dim=1)
            cell.mul_(f).addcmul_(i, g, value=4.0).sub_(i, alpha=2.0)  # 2c = f*2c + 2i*(2 sigmoid(2g) - 1)
            torch.sigmoid(cell, out=tmp).mul_(2.0).sub_(1.0)  # tanh(c); torch's tanh kernel is ~10x slower on CPU
            torch.mul(o, tmp, out=hid[s + 1])
        return hid[1:], (hid[t].clone(), cell.mul_(0.5))

    def normed(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """BatchNorm of raw hidden states (any leading dims), into ``out`` if given."""
        if out is None:
            out = _cl_empty(*h.shape, like=h)
        return torch.addcmul(self.shift, h, self.scale, out=out)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool of (..., C, H, W) with even H, W (elementwise maxima of the four phases: no copy of a strided x)."""
    top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
    return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]), out=top)


class FastDecoder:
    """One decoder level folded: BatchNorm into the conv, nearest x2 upsampling into four 2x2 phase kernels."""

    def __init__(self, level: nn.Sequential, up_channels: int) -> None:
        conv, norm = level[0], level[1]
        scale, shift = _bn_affine(norm)
        weight = conv.weight * scale[:, :, :, None]
        self.out_channels = weight.shape[0]
        self.bias = (conv.bias * scale.flatten() + shift.flatten())
        self.phase_w = _phase_kernels(weight[:, :up_channels]).contiguous(memory_format=CL)
        self.phase_b = self.bias.repeat(4)
        self.skip_w = weight[:, up_channels:].contiguous(memory_format=CL) if weight.shape[1] > up_channels else None


class FoldedPlan:
    """Folded inference weights of a whole student, valid while ``key`` (tensor versions) is unchanged."""

    def __init__(self, model: ConvLSTMStudent, key: tuple) -> None:
        self.key = key
        self.layers = [[FastLayer(c, nn_) for c, nn_ in zip(cells, norms, strict=True)]
                       for cells, norms in zip(model.encoder, model.enc_norms, strict=True)]
        self.decoder = [FastDecoder(level, model.widths[model.blocks - 1 - j])
                        for j, level in enumerate(model.decoder)]
        hw, hb = model.head.weight, model.head.bias
        self.head_w, self.head_b = hw.contiguous(memory_format=CL), hb
        self.head4_w, self.head4_b = hw.repeat(4, 1, 1, 1).contiguous(memory_format=CL), hb.repeat(4)
