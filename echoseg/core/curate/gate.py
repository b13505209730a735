"""The known-bad gate of `synth generate --regenerate-bad`: curation's ``bad`` filter, applied during generation.

:class:`BadImageGate` measures what ``echoseg curate --bad`` measures (the same encoders, the same reference image
sets, the same centred cosine similarity), one batch of freshly generated images at a time; the re-query loop that
uses it lives in the synth stage (``echoseg.core.synth.regenerate``), which defines the interface it fills.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from echoseg.core.curate.embed import Encoder, embed_files, make_encoder
from echoseg.core.curate.run import image_set
from echoseg.core.curate.similarity import nearest
from echoseg.core.env import resolve_device
from echoseg.core.errors import UserError

OPTION = "--regenerate-bad"
GATE_ENCODERS = "pixels[:N], open_clip:PATH or hf:PATH_OR_ID"


def check_gate_encoder(spec: str | None) -> str:
    """The ``--encoder`` of a gate (a segmenter needs a training run, which generation has not).

    Raises:
        UserError: no encoder, or one generation cannot use.
    """
    if not spec:
        raise UserError(f"{OPTION} needs --encoder ({GATE_ENCODERS}): the embedding the similarity is measured in")
    kind = str(spec).partition(":")[0]
    if kind not in ("pixels", "open_clip", "hf") or (kind != "pixels" and ":" not in str(spec)):
        raise UserError(f"--encoder {spec!r}: expected {GATE_ENCODERS} with {OPTION}")
    return str(spec)


class BadImageGate:
    """Cosine similarity of images to the nearest known-bad exemplar (see the module notes).

    Args:
        bad: the exemplars: a run or folder with manifest.csv, an SDM CAMUS folder, a folder of images or one image.
        encoder: an ``--encoder`` spec (pixels[:N], open_clip:PATH, hf:PATH_OR_ID) or an encoder object.
        threshold: an image passes when its similarity is <= this (``--bad-sim``).
        center: centre embeddings on a mean before the cosine (the caller supplies the mean).
    Raises:
        UserError: no exemplar images, or an encoder that cannot be built.
    """

    def __init__(self, bad: str, encoder: str | Encoder | None, threshold: float, *, center: bool = True,
                 device: str = "auto", batch_size: int = 32) -> None:
        if not -1.0 <= float(threshold) <= 1.0:
            raise UserError(f"--bad-sim must be a cosine similarity in -1..1, got {threshold}")
        self.references = image_set(bad, OPTION)
        if encoder is None or isinstance(encoder, str):
            encoder = make_encoder(check_gate_encoder(encoder), None, device)
        self.encoder = encoder
        self.name = self.encoder.name
        self.threshold, self.center = float(threshold), bool(center)
        self.batch_size, self.device = int(batch_size), resolve_device(device)
        self._refs: np.ndarray | None = None

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 embeddings of grey uint8 images."""
        return np.asarray(self.encoder.embed(list(images)), np.float32)

    def reference_embeddings(self, progress: bool = True) -> np.ndarray:
        """The exemplars' embeddings (computed once)."""
        if self._refs is None:
            self._refs = embed_files(self.encoder, self.references, self.batch_size, progress,
                                     f"embedding {OPTION} images")
        return self._refs

    def nearest(self, emb: np.ndarray, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarity to the nearest exemplar, its index) per row of ``emb``, centred on ``mean`` when given."""
        return nearest(emb, self.reference_embeddings(), mean, self.device)
