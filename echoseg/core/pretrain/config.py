"""The pre-training recipe: model choice, data, optimisation (all overridable; recorded in run.json).

Optimisation follows MGCA's recipe for every method, so the three compare under one schedule: AdamW (betas 0.9 /
0.999, weight decay 0.05), a linear warm-up over the first 40 % of the steps then a cosine decay, early stopping
when the validation loss has not improved for 5 epochs, at most 50 epochs; the learning rate is the model config's
(2e-5 for the published encoders, 1e-3 for the tiny ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from echoseg.core.config import StageConfig, check_all
from echoseg.core.models import get_config
from echoseg.core.models.vlp import IMAGE_ENCODERS, METHODS, check_image_weights
from echoseg.core.models.weights import resolve_weights

TEXT_DEFAULT = "report"


@dataclass
class PretrainConfig(StageConfig):
    """Everything a pre-training run depends on."""

    method: str = "convirt"
    model_config: str = "resnet50"
    image_encoder: str | None = None  # overrides the model config's
    image_weights: str | None = None  # imagenet | a local file
    text_encoder: str | None = None  # a local HF folder or cached hub id; overrides the model config's
    text: str = TEXT_DEFAULT
    init_from: str | None = None  # a pretrain run (best weights) or a released GLoRIA/MGCA checkpoint
    epochs: int = 50
    batch_size: int = 48
    lr: float | None = None
    weight_decay: float = 0.05
    warmup_fraction: float = 0.4
    grad_clip: float = 0.0
    early_stop_patience: int = 5
    input_size: int | None = None
    attention_pairs: int = 4
    precision: str = "no"
    device: str = "auto"
    seed: int = 0
    cache_dir: str | None = None
    loss: dict[str, Any] = field(default_factory=dict)  # method loss settings (see objectives.DEFAULTS)

    def validate(self) -> None:
        """Raise UserError on out-of-range values, naming the option."""
        check_all([
            (self.method in METHODS, f"--method {self.method!r}: expected one of {', '.join(METHODS)}"),
            (self.image_encoder is None or self.image_encoder in IMAGE_ENCODERS,
             f"--image-encoder {self.image_encoder!r}: expected one of {', '.join(IMAGE_ENCODERS)}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2 (contrastive pairs need negatives), got "
             f"{self.batch_size}"),
            (self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.warmup_fraction < 1, f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction}"),
            (self.grad_clip >= 0, f"--grad-clip must be >= 0 (0 disables), got {self.grad_clip}"),
            (self.early_stop_patience >= 1, f"--early-stop-patience must be >= 1, got {self.early_stop_patience}"),
            (self.input_size is None or self.input_size >= 16, f"--input-size must be >= 16, got {self.input_size}"),
            (self.attention_pairs >= 0, f"--attention-pairs must be >= 0, got {self.attention_pairs}"),
            (self.precision in ("no", "fp16", "bf16"), f"--precision must be no, fp16 or bf16, got {self.precision!r}"),
            (isinstance(self.loss, dict), "loss settings must be a mapping"),
        ])

    def model_dict(self) -> dict[str, Any]:
        """The ``vlp`` model config this run builds: the named config with this run's overrides."""
        mc = get_config("vlp", self.model_config)
        mc["method"] = self.method
        for key in ("image_encoder", "image_weights", "text_encoder", "input_size"):
            value = getattr(self, key)
            if value is not None:
                mc[key] = value
        return mc

    def check_inputs(self) -> None:
        """Fail before a run directory exists on encoders that cannot load (text folder, image weights)."""
        mc = self.model_dict()
        if mc.get("text_encoder") and not self.init_from:
            resolve_weights(str(mc["text_encoder"]), required=("config.json",), what="--text-encoder")
        if mc.get("image_weights"):
            check_image_weights(str(mc["image_weights"]))

    def learning_rate(self) -> float:
        """``--lr`` or the model config's."""
        return float(self.lr) if self.lr is not None else float(get_config("vlp", self.model_config).get("lr", 2e-5))
