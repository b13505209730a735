"""The MLLM check of `curate --mllm` (SynCXR): a local image-text-to-text model answers a quality question per image.

The model is any folder ``transformers.AutoModelForImageTextToText`` (``AutoModelForVision2Seq`` on older versions)
loads with its ``AutoProcessor``: LLaVA, LLaVA-NeXT/OneVision, Qwen2-VL, Idefics3, PaliGemma... The question goes
into the processor's chat template (one user turn: the image, then the text) when it has one, else after the
processor's image token. Images (grey, replicated to RGB) are asked in batches with left padding; generation is greedy
with a few new tokens, so an answer is reproducible. An image is kept when its answer matches ``--mllm-keep`` (a
regular expression searched case-insensitively, e.g. ``^\\s*yes``); every answer is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from echoseg.core.console import track
from echoseg.core.data.imaging import load_image
from echoseg.core.env import resolve_device
from echoseg.core.errors import UserError, first_line
from echoseg.core.synth.entities import load_error, model_source

OPTION = "--mllm"
DEFAULT_QUESTION = "Is this a realistic echocardiography image? Answer yes or no."
DEFAULT_KEEP = r"^\W*yes"


def keep_pattern(regex: str) -> re.Pattern:
    """``--mllm-keep`` compiled (case-insensitive).

    Raises:
        UserError: not a valid regular expression.
    """
    try:
        return re.compile(str(regex), re.IGNORECASE)
    except re.error as exc:
        raise UserError(f"--mllm-keep {regex!r}: not a regular expression ({exc})") from None


def check_mllm(spec: str) -> None:
    """A local model folder (or a cached hub id) for ``--mllm``, checked without loading it.

    Raises:
        UserError: a missing folder or one without config.json.
    """
    model_source(spec, "--mllm")
    if Path(spec).is_dir() and not any((Path(spec) / f).is_file() for f in (
            "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")):
        raise UserError(f"--mllm {spec}: no processor files (processor_config.json / preprocessor_config.json and a "
                        "tokenizer) beside the model")


def _auto_model():
    import transformers  # deferred: heavy import, loaded only when this path runs

    cls = getattr(transformers, "AutoModelForImageTextToText", None) or getattr(transformers,
                                                                               "AutoModelForVision2Seq", None)
    if cls is None:  # pragma: no cover - transformers >= 4.40 has one of them
        raise UserError(f"{OPTION}: this transformers {transformers.__version__} has no image-text-to-text models")
    return cls, transformers.__version__


class MllmJudge:
    """Answers of a local image-text-to-text model to one question (see the module notes)."""

    def __init__(self, spec: str, question: str = DEFAULT_QUESTION, *, device: str = "auto",
                 max_new_tokens: int = 8) -> None:
        import torch  # deferred: heavy imports, loaded only when this path runs
        from transformers import AutoProcessor

        if not str(question).strip():
            raise UserError("--mllm-question must not be empty")
        source, local = model_source(spec, "--mllm")
        self.device = resolve_device(device)
        cls, version = _auto_model()
        kwargs: dict = {"local_files_only": local}
        if self.device.startswith("cuda"):
            new = tuple(int(x) for x in version.split(".")[:2]) >= (4, 56)
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            kwargs["dtype" if new else "torch_dtype"] = dtype
        try:
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=local)
            self.model = cls.from_pretrained(source, **kwargs).to(self.device).eval()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise load_error(spec, "--mllm", exc) from None
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"
            if tok.pad_token is None and tok.eos_token is not None:
                tok.pad_token = tok.eos_token
        self.name, self.question, self.max_new_tokens = str(spec), str(question).strip(), int(max_new_tokens)
        self.prompt = self._prompt()

    def _prompt(self) -> str:
        """The question as the model reads it: the chat template's user turn, else after the image token."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.question}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        token = getattr(self.processor, "image_token", None)
        return f"{token}\n{self.question}" if token else self.question

    def ask(self, images: Sequence[np.ndarray]) -> list[str]:
        """The answer to the question for each grey uint8 image (greedy; single-spaced text)."""
        import torch  # deferred: heavy import, loaded only when this path runs
        from PIL import Image

        pil = [Image.fromarray(np.asarray(im, np.uint8)).convert("RGB") for im in images]
        try:
            enc = self.processor(images=pil, text=[self.prompt] * len(pil), return_tensors="pt", padding=True)
            enc = enc.to(self.device)
            if "pixel_values" in enc and self.model.dtype != torch.float32:
                enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
            with torch.no_grad():
                out = self.model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens)
        except (ValueError, IndexError, RuntimeError) as exc:
            raise UserError(f"{OPTION} {self.name}: cannot answer ({first_line(exc, 160)})") from None
        if not getattr(self.model.config, "is_encoder_decoder", False):
            out = out[:, enc["input_ids"].shape[1]:]
        decode = getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
        texts = decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def ask_files(judge: MllmJudge, paths: Sequence[str], batch_size: int = 8, progress: bool = True) -> list[str]:
    """The judge's answer for each image file, asked ``batch_size`` at a time."""
    paths = [str(p) for p in paths]
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    answers: list[str] = []
    for batch in track(batches, "MLLM check") if progress else batches:
        answers += judge.ask([load_image(p) for p in batch])
    return answers
