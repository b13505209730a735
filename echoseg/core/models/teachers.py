"""Left-ventricle teachers: frame-wise LV segmenters that label echo videos (EchoDFKD's teacher role).

A teacher maps grey frames ``(T, H, W)`` uint8 to LV probabilities ``(T, H, W)`` float32 in [0, 1] at the frames'
own size. Chosen by a spec string (:func:`load_teacher`):

``deeplabv3:CKPT``
    EchoNet-Dynamic's segmentation model (Ouyang et al. 2020): torchvision ``deeplabv3_resnet50`` without the
    auxiliary head, its classifier's last 1x1 conv replaced by a 1-output conv (what echonet/utils/segmentation.py
    builds, equal to torchvision's ``num_classes=1``). The release checkpoint is ``{"state_dict": ..., "epoch":
    ...}`` saved from ``nn.DataParallel`` (keys prefixed ``module.``); a bare state dict is accepted too. Weights
    load strictly (``aux_classifier.*`` keys, which never reach the ``out`` map, are ignored and reported).
    Input: grey frames replicated to 3 channels, ``(x - mean[c]) / std[c]`` on 0..255 levels. The default
    normalisation is EchoDFKD's constants, EchoNet-Dynamic training-set statistics, which EchoDFKD uses with the
    release checkpoint (:data:`ECHODFKD_MEAN` 32.085175, 32.591923, 33.37932; :data:`ECHODFKD_STD` 50.129288,
    50.487717, 51.34619); pass ``mean``/``std`` for a checkpoint trained on other data, or ``"auto"`` with a data
    folder to compute them from its videos as EchoNet-Dynamic does
    (:func:`~echoseg.core.data.echonet.echonet_channel_stats`: a seeded sample of 128 TRAIN videos, per channel
    over all pixels). Output: ``sigmoid(out)``; the network is fully convolutional and its ``out`` map is already
    upsampled to the input, so frames are used at their own size.

``run:TRAIN_RUN``
    An echoseg training run (``checkpoints/best.safetensors``). Frames are resized to the model's input size
    exactly as the training cache does (area averaging when shrinking, bilinear otherwise), normalised with the
    model's mean/std on [0, 1] levels, and the LV logits are resized back (bilinear) before the sigmoid, as in
    ``eval seg``. Text-free models (unet) return their LV channel (structure 1). Text models (clipseg, cris) get
    the run's training prompt level applied to an LV sample of an apical four-chamber view (EchoNet-Dynamic is
    A4C) whose phase, sex, age, quality and shape are unknown: P0 gives ``""``, P1 ``"Left ventricular cavity of
    the heart."``, P2 and every higher level (which need metadata a video frame does not carry) the P2 text
    ``"Left ventricular cavity in four-chamber view of the heart."``; a ``pK_b`` training prompt uses variant B
    (``... in the cardiac ultrasound.``), a ``random[:pK]`` one variant A. The text used is in :attr:`Teacher.info`.

``run:DISTILL_RUN``
    An ``echoseg distill`` run: its ConvLSTM student labels each video in one pass at the frames' own size, from
    its warm start (causal after the first ``warmup`` frames; see :mod:`echoseg.core.models.convlstm`), binarised
    with the threshold the distillation chose (:attr:`Teacher.threshold`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from echoseg.core.data.cache import resize_image
from echoseg.core.data.echonet import STATS_VIDEOS, echonet_channel_stats
from echoseg.core.env import resolve_device
from echoseg.core.errors import UserError
from echoseg.core.io import read_json
from echoseg.core.models.artefacts import CKPT_DIR, find_checkpoint, load_segmenter, load_student
from echoseg.core.models.weights import read_state

# EchoDFKD's constants, EchoNet-Dynamic training-set statistics (per channel R, G, B on 0..255 levels): the default
# DeepLabv3 teacher normalisation. ``"auto"`` computes a data folder's own instead (:func:`deeplab_normalisation`).
ECHODFKD_MEAN = (32.085175, 32.591923, 33.37932)
ECHODFKD_STD = (50.129288, 50.487717, 51.34619)
ECHONET_MEAN, ECHONET_STD = ECHODFKD_MEAN, ECHODFKD_STD  # former names
AUTO = "auto"
TEACHER_KINDS = ("deeplabv3", "run")
PromptFor = Callable[[str], str]
SPEC_FORMS = ("deeplabv3:CKPT (an EchoNet-Dynamic DeepLabv3 checkpoint) or run:RUN (an echoseg training or "
              "distillation run)")
LV_LABEL = 1
VIEW = "4CH"  # EchoNet-Dynamic videos are apical four-chamber views


def _triple(value: float | Sequence[float] | None, default: Sequence[float], what: str) -> tuple[float, ...]:
    if value is None:
        return tuple(float(v) for v in default)
    vals = [float(value)] * 3 if np.isscalar(value) else [float(v) for v in value]  # type: ignore[union-attr]
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or not all(np.isfinite(vals)):
        raise UserError(f"teacher {what} must be one number or three (per channel), got {value!r}")
    if what == "std" and min(vals) <= 0:
        raise UserError(f"teacher std must be > 0, got {value!r}")
    return tuple(vals)


class Teacher(abc.ABC):
    """A frame-wise LV segmenter: :meth:`predict` gives LV probabilities at the frames' own size.

    Attributes:
        name: a short description (kind and source).
        module: the underlying ``nn.Module`` (in eval mode, on :attr:`device`).
        device: the torch device string it runs on.
        info: JSON-serialisable details (spec, preprocessing, prompt text) for run records.
    """

    def __init__(self, name: str, module: nn.Module, device: str, info: dict[str, Any]) -> None:
        self.name = name
        self.module = module.eval().to(device)
        self.device = device
        self.info = info

    #: probability threshold that binarises this model's masks (a distilled student carries its own)
    threshold: float = 0.5

    @abc.abstractmethod
    def _logits(self, frames: np.ndarray) -> torch.Tensor:
        """LV logits ``(B, H, W)`` on :attr:`device` of contiguous uint8 frames ``(B, H, W)`` (numpy, on the CPU)."""

    def predict(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """LV probabilities ``(T, H, W)`` float32 in [0, 1] of grey frames ``(T, H, W)`` uint8, in batches."""
        arr = np.asarray(frames)
        if arr.ndim != 3:
            raise ValueError(f"frames must be (T, H, W), got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty(arr.shape, np.float32)
        with torch.inference_mode():
            for i in range(0, len(arr), batch_size):
                batch = np.ascontiguousarray(arr[i : i + batch_size])
                out[i : i + len(batch)] = torch.sigmoid(self._logits(batch).float()).cpu().numpy()
        return out

    def num_parameters(self) -> int:
        """Number of parameters of :attr:`module`."""
        return sum(p.numel() for p in self.module.parameters())

    def gflops(self, height: int, width: int) -> float:
        """GFLOPs (1e9 floating-point operations, torch's FlopCounterMode) to label one ``height x width`` frame."""

        frame = np.zeros((1, int(height), int(width)), np.uint8)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            self._logits(frame)
        return counter.get_total_flops() / 1e9

    def __repr__(self) -> str:
        return f"Teacher({self.name!r}, {self.num_parameters():,} parameters, device={self.device})"


# ----------------------------------------------------------------------------- EchoNet-Dynamic DeepLabv3
def build_deeplabv3() -> nn.Module:
    """EchoNet-Dynamic's segmentation network: torchvision DeepLabv3-ResNet50, no aux head, 1 output channel."""
    from torchvision.models.segmentation import (
        deeplabv3_resnet50,  # deferred: heavy import, loaded only when this path runs
    )

    return deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False, num_classes=1)


def _read_state_dict(path: Path, option: str) -> dict[str, torch.Tensor]:

    if not path.is_file():
        raise UserError(f"{option} deeplabv3:{path}: checkpoint not found (needed: EchoNet-Dynamic's "
                        "deeplabv3_resnet50_random.pt or a checkpoint saved the same way)")
    return read_state(path, f"{option} deeplabv3:", strip_module=True)


def _fmt_keys(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


class DeepLabTeacher(Teacher):
    """EchoNet-Dynamic's DeepLabv3 (see the module docstring)."""

    def __init__(self, checkpoint: str | Path, device: str, mean=None, std=None, option: str = "--teacher",
                 normalisation: dict[str, Any] | None = None) -> None:
        path = Path(checkpoint)
        state = _read_state_dict(path, option)
        ignored = sorted(k for k in state if k.startswith("aux_classifier."))
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
        module = build_deeplabv3()
        expected = module.state_dict()
        missing = sorted(k for k in expected if k not in state)
        unexpected = sorted(k for k in state if k not in expected)
        if missing or unexpected:
            parts = [f"missing keys {_fmt_keys(missing)}" if missing else "",
                     f"unexpected keys {_fmt_keys(unexpected)}" if unexpected else ""]
            raise UserError(f"{option} deeplabv3:{path}: not an EchoNet-Dynamic DeepLabv3-ResNet50 checkpoint: "
                            + "; ".join(p for p in parts if p))
        bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
        if bad:
            k = bad[0]
            raise UserError(f"{option} deeplabv3:{path}: {len(bad)} tensor(s) of the wrong shape, e.g. {k} "
                            f"{tuple(state[k].shape)} (expected {tuple(expected[k].shape)})")
        module.load_state_dict(state, strict=True)
        self.mean = _triple(mean, ECHODFKD_MEAN, "mean")
        self.std = _triple(std, ECHODFKD_STD, "std")
        info = {"spec": f"deeplabv3:{path.resolve()}", "kind": "deeplabv3", "checkpoint": str(path.resolve()),
                "architecture": "torchvision deeplabv3_resnet50, aux_loss=False, num_classes=1",
                "mean": list(self.mean), "std": list(self.std), "normalisation": "(grey 0..255 - mean) / std",
                "normalisation_source": normalisation or {
                    "mean": "given" if mean is not None else "EchoDFKD's constants",
                    "std": "given" if std is not None else "EchoDFKD's constants"},
                "ignored_keys": ignored}
        super().__init__(f"deeplabv3:{path.name}", module, device, info)
        self._shift = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        self._scale = 1.0 / torch.tensor(self.std, device=device).view(1, 3, 1, 1)

    def _logits(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(frames).to(self.device).float().unsqueeze(1).expand(-1, 3, -1, -1)
        x = (x - self._shift) * self._scale
        return self.module(x)["out"][:, 0]


# ----------------------------------------------------------------------------- echoseg training runs
class RunTeacher(Teacher):
    """An echoseg segmentation run's LV output (see the module docstring)."""

    def __init__(self, run_dir: str | Path, device: str, which: str = "best", option: str = "--teacher",
                 prompt_for: PromptFor | None = None) -> None:
        model, info = load_segmenter(run_dir, which, option=option)
        train_config = info.get("train_config") or {}
        train_prompt = str(train_config.get("prompt") or "p1")
        text = None
        if getattr(model, "uses_text", True):
            if prompt_for is None:
                raise ValueError("a text-prompted teacher run needs prompt_for (the prompts stage's LV frame prompt)")
            text = prompt_for(train_prompt)
        self.prompt_text = text or ""
        self.input_size = int(model.input_size)
        details = {"spec": f"run:{Path(run_dir).resolve()}", "kind": "run", "run": str(Path(run_dir).resolve()),
                   "checkpoint": which, "model": info.get("name"), "input_size": self.input_size,
                   "mean": list(model.mean), "std": list(model.std), "train_prompt": train_prompt,
                   "prompt_text": text, "structure": "LV (label 1)",
                   "resize": "frames to input_size (INTER_AREA shrinking, else INTER_LINEAR); logits back bilinear"}
        super().__init__(f"run:{Path(run_dir).name} ({info.get('name')})", model, device, details)
        mean = torch.tensor(model.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(model.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = mean / std

    def _logits(self, frames: np.ndarray) -> torch.Tensor:
        b, h, w = frames.shape
        s = self.input_size
        if (h, w) != (s, s):  # the training cache's resize, so the model sees what it was trained on
            frames = np.stack([resize_image(f, s) for f in frames])
        x = torch.from_numpy(frames).to(self.device).float().unsqueeze(1).expand(-1, 3, -1, -1)
        x = x * self._scale - self._shift
        structures = torch.full((b,), LV_LABEL, dtype=torch.long, device=self.device)
        logits = self.module(x, [self.prompt_text] * b, structures).float()
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits[:, 0]


class StudentTeacher(Teacher):
    """The ConvLSTM student of an ``echoseg distill`` run: each video in one pass from its warm start, at full size.

    Its binarisation threshold (chosen on validation data by the distillation) is :attr:`threshold`.
    """

    def __init__(self, run_dir: str | Path, device: str, which: str = "best", option: str = "--teacher") -> None:
        model, info = load_student(run_dir, which, option=option)
        self.threshold = float(model.threshold)
        details = {"spec": f"run:{Path(run_dir).resolve()}", "kind": "distilled student",
                   "run": str(Path(run_dir).resolve()), "checkpoint": which, "model": info.get("name"),
                   "threshold": self.threshold, "warmup": int(model.warmup)}
        super().__init__(f"run:{Path(run_dir).name} (convlstm student)", model, device, details)

    def _logits(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(frames).to(self.device)
        return self.module(self.module.normalise(x)[None])[0, :, 0]  # the batch is one clip, in frame order

    def predict(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """LV probabilities of one whole video (the recurrent state carries across ``batch_size`` chunks)."""
        arr = np.asarray(frames)
        if arr.ndim != 3:
            raise ValueError(f"frames must be (T, H, W), got shape {arr.shape}")
        with torch.inference_mode():
            return self.module.predict(np.clip(arr, 0, 255).astype(np.uint8), batch_size=batch_size)


# ----------------------------------------------------------------------------- the spec and entry point
@dataclass(frozen=True)
class TeacherSpec:
    """A parsed teacher spec: ``deeplabv3:CKPT`` or ``run:RUN`` (a training or distillation run)."""

    kind: str
    target: Path
    option: str = "--teacher"

    @classmethod
    def parse(cls, spec: str | TeacherSpec, option: str = "--teacher") -> TeacherSpec:
        """Parse (syntax only); raises UserError naming ``option`` for an unknown form."""
        if isinstance(spec, TeacherSpec):
            return spec
        kind, sep, target = str(spec).partition(":")
        if not sep or not target or kind not in TEACHER_KINDS:
            raise UserError(f"{option} {spec!r}: expected {SPEC_FORMS}")
        return cls(kind, Path(target), option)

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"

    @property
    def is_student(self) -> bool:
        """Whether the spec names a distillation run (its ConvLSTM student teaches)."""
        if self.kind != "run":
            return False
        try:
            return str(read_json(self.target / "run.json").get("command", "")) == "distill"
        except (OSError, ValueError, AttributeError):
            return False

    def check(self) -> None:
        """Raise UserError unless the checkpoint file exists or the run has a readable best checkpoint."""
        if self.kind == "deeplabv3":
            if not self.target.is_file():
                raise UserError(f"{self.option} {self}: checkpoint file not found: {self.target}")
        elif not self.target.is_dir():
            raise UserError(f"{self.option} {self}: run directory not found: {self.target}")
        else:
            find_checkpoint(self.target, "best", f"{self.option} run:")

    def weight_files(self) -> list[Path]:
        """The files whose content identifies the teacher (checkpoint, or the run's best weights and model.json)."""
        if self.kind == "deeplabv3":
            return [self.target]
        return [self.target / CKPT_DIR / name for name in ("best.safetensors", "model.json")]


def _is_auto(value: Any) -> bool:
    """Whether a mean/std value asks for ``auto`` (the string, or a one-element list holding it, as a CLI gives)."""
    if isinstance(value, str):
        return value.strip().lower() == AUTO
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], str):
        return value[0].strip().lower() == AUTO
    return False


def deeplab_normalisation(
    mean: Any, std: Any, data: str | Path | None, option: str = "--teacher", max_videos: int | None = STATS_VIDEOS,
    seed: int = 0,
) -> tuple[Any, Any, dict[str, Any]]:
    """Resolve a DeepLabv3 teacher's ``mean``/``std``: ``"auto"`` becomes ``data``'s per-channel video statistics.

    Returns ``(mean, std, source)``: the values (None still means EchoDFKD's constants) and, per key, where they
    came from (``EchoDFKD's constants``, ``given``, or the statistics' record for ``auto``).

    Raises:
        UserError: ``auto`` without a data folder (or with one that has no readable videos).
    """
    want = {"mean": _is_auto(mean), "std": _is_auto(std)}
    source: dict[str, Any] = {
        key: "given" if value is not None else "EchoDFKD's constants" for key, value in (("mean", mean), ("std", std))
    }
    if not any(want.values()):
        return mean, std, source
    if data is None:
        raise UserError(f"{option}: mean/std 'auto' needs the data folder (EchoNet-Dynamic layout) to compute them "
                        "from its videos")
    stats = echonet_channel_stats(data, split=None, max_videos=max_videos, seed=seed)
    record = {"auto": str(Path(data).resolve()), **stats.to_dict()}
    if want["mean"]:
        mean, source["mean"] = list(stats.mean), record
    if want["std"]:
        std, source["std"] = list(stats.std), record
    return mean, std, source


def load_teacher(
    spec: str | TeacherSpec,
    device: str = "auto",
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    option: str = "--teacher",
    prompt_for: PromptFor | None = None,
    data: str | Path | None = None,
) -> Teacher:
    """Load a teacher from ``deeplabv3:CKPT`` or ``run:RUN``.

    Args:
        spec: the teacher spec (a string or a parsed :class:`TeacherSpec`).
        device: ``auto``, ``cpu`` or ``cuda``.
        mean, std: DeepLabv3 input normalisation on 0..255 grey levels, one value or one per channel (default:
            EchoDFKD's constants, EchoNet-Dynamic training-set statistics, see :data:`ECHODFKD_MEAN`), or
            ``"auto"``: ``data``'s own per-channel statistics (:func:`deeplab_normalisation`, recorded in
            :attr:`Teacher.info`); a ``run:`` teacher uses its model's own and rejects them.
        option: the option name used in error messages.
        prompt_for: maps a run's training ``--prompt`` to the text its LV output is asked with (the prompts
            stage's :func:`~echoseg.core.prompts.templates.lv_frame_prompt`); needed for text-prompted runs.
        data: an EchoNet-Dynamic folder, needed when ``mean`` or ``std`` is ``"auto"``.
    Raises:
        UserError: an unknown spec form, a missing or mismatching checkpoint, or a bad run directory.
    """
    parsed = TeacherSpec.parse(spec, option)
    dev = resolve_device(device)
    if parsed.kind == "deeplabv3":
        if _is_auto(mean) or _is_auto(std):
            parsed.check()  # a missing checkpoint fails before the videos are read
        mean, std, source = deeplab_normalisation(mean, std, data, option=option)
        return DeepLabTeacher(parsed.target, dev, mean=mean, std=std, option=option, normalisation=source)
    if mean is not None or std is not None:
        raise UserError(f"{option} {parsed}: mean/std apply to deeplabv3 teachers only (a run uses its model's own)")
    if not parsed.target.is_dir():
        raise UserError(f"{option} {parsed}: run directory not found: {parsed.target}")
    if parsed.is_student:
        return StudentTeacher(parsed.target, dev, option=option)
    return RunTeacher(parsed.target, dev, option=option, prompt_for=prompt_for)
