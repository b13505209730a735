"""Each method's training objective on a batch of :class:`~echoseg.core.models.vlp.VLPOutput`, over all processes.

Contrastive terms see the global batch: embeddings are gathered from every process *with* gradients
(``torch.distributed.nn.all_gather``, whose backward sums the gradients back to their owners), so with DDP's gradient
averaging a step on N processes equals a step on one process with the N batches concatenated. MGCA's Sinkhorn codes
are those of the global batch (distributed Sinkhorn); its token loss is per sample and needs no gathering.

Published defaults (all overridable with ``--set``):

- ConVIRT: tau 0.1, lambda 0.75;
- GLoRIA: temp1 4, temp2 5, temp3 10, ``sum`` aggregation, local and global weights 1;
- MGCA: ITA temperature 0.07, token temperature 0.1, prototype temperature 0.2, epsilon 0.05, 3 Sinkhorn iterations,
  weights 1 / 0.7 / 0.5, bidirectional token alignment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from echoseg.core.errors import UserError
from echoseg.core.pretrain import losses as L

DEFAULTS: dict[str, dict[str, Any]] = {
    "convirt": {"temperature": 0.1, "weight": 0.75},
    "gloria": {"temp1": 4.0, "temp2": 5.0, "temp3": 10.0, "agg": "sum", "local_weight": 1.0, "global_weight": 1.0},
    "mgca": {"ita_temperature": L.MGCA_ITA_TEMPERATURE, "local_temperature": L.MGCA_LOCAL_TEMPERATURE,
             "proto_temperature": L.MGCA_PROTO_TEMPERATURE, "epsilon": L.MGCA_EPSILON,
             "sinkhorn_iterations": L.MGCA_SINKHORN_ITERATIONS, "lambda_ita": L.MGCA_LAMBDA_ITA,
             "lambda_local": L.MGCA_LAMBDA_LOCAL, "lambda_proto": L.MGCA_LAMBDA_PROTO, "bidirectional": True,
             "freeze_prototypes_epochs": 1},
}
#: the loss terms each method logs (train_<term>, val_<term> in metrics.jsonl)
TERMS = {"convirt": ["loss"], "gloria": ["loss", "global_i2t", "global_t2i", "local_i2t", "local_t2i"],
         "mgca": ["loss", "ita", "token", "proto"]}


def hyperparameters(method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's published defaults updated with ``overrides`` (unknown names are an error)."""
    hp = dict(DEFAULTS[method])
    for key, value in (overrides or {}).items():
        if key not in hp:
            raise UserError(f"--set {key}: not a {method} loss setting (known: {', '.join(sorted(hp))})")
        hp[key] = type(hp[key])(value) if not isinstance(hp[key], bool) else bool(value)
    return hp


@dataclass
class Collective:
    """How to see the other processes: their number and the gather/sum functions (identity for one process)."""

    world: int = 1

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate ``x`` from every process along dim 0, keeping gradients to this process's part."""
        if self.world == 1:
            return x
        import torch.distributed.nn as dist_nn  # deferred: only multi-process runs gather

        return torch.cat(dist_nn.all_gather(x.contiguous()), dim=0)

    def gather_plain(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate ``x`` from every process along dim 0 (no gradient)."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over processes (a new tensor)."""
        if self.world == 1:
            return x
        y = x.clone()
        dist.all_reduce(y)
        return y


def objective(out, method: str, hp: dict[str, Any], coll: Collective) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and its terms (detached) for one batch.

    Args:
        out: the model's :class:`VLPOutput` for this process's batch.
        method: convirt, gloria or mgca.
        hp: :func:`hyperparameters` of the method.
        coll: the processes to gather negatives from (``Collective()`` in validation: one batch, one process).
    """
    if method == "convirt":
        loss = L.convirt_loss(coll.gather(out.img_global), coll.gather(out.txt_global), hp["temperature"],
                              hp["weight"])
        return loss, {"loss": loss.detach()}
    if method == "gloria":
        g0, g1 = L.gloria_global_loss(coll.gather(out.img_global), coll.gather(out.txt_global), hp["temp3"])
        lens = coll.gather_plain(out.cap_lens).tolist()
        l0, l1, _ = L.gloria_local_loss(coll.gather(out.img_local), coll.gather(out.txt_words), lens,
                                        hp["temp1"], hp["temp2"], hp["temp3"], hp["agg"])
        loss = (l0 + l1) * hp["local_weight"] + (g0 + g1) * hp["global_weight"]
        return loss, {"loss": loss.detach(), "global_i2t": g0.detach(), "global_t2i": g1.detach(),
                      "local_i2t": l0.detach(), "local_t2i": l1.detach()}
    ita = L.mgca_ita_loss(coll.gather(out.img_global), coll.gather(out.txt_global), hp["ita_temperature"])
    word_weights = L.mgca_attention_weights(out.word_weights)
    patch_weights = None if out.patch_weights is None else L.mgca_attention_weights(out.patch_weights)
    token = L.mgca_token_loss(out.img_local, out.txt_words, word_weights, patch_weights, out.pad_mask,
                              hp["local_temperature"], hp["bidirectional"])
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = coll.sum if coll.world > 1 else None
    proto = L.mgca_proto_loss_from_scores(out.img_proto, out.txt_proto, hp["proto_temperature"], hp["epsilon"],
                                          hp["sinkhorn_iterations"], reduce, coll.world)
    loss = hp["lambda_ita"] * ita + hp["lambda_local"] * token + hp["lambda_proto"] * proto
    return loss, {"loss": loss.detach(), "ita": ita.detach(), "token": token.detach(), "proto": proto.detach()}


def attention_maps(out, method: str, hp: dict[str, Any], limit: int) -> list[torch.Tensor]:
    """Word-region attention of the first ``limit`` pairs over their own image: (n_words, h, w) each.

    GLoRIA: the local loss's attention (softmax over regions, temp1). MGCA: each word's softmax over its image's
    patches at the token temperature (the word-to-patch cross-attention of its token loss). ConVIRT has none.
    """
    n = min(limit, out.img_global.shape[0])
    if method == "gloria":
        _, _, maps = L.gloria_local_loss(out.img_local[:n], out.txt_words[:n], out.cap_lens[:n].tolist(),
                                         hp["temp1"], hp["temp2"], hp["temp3"], hp["agg"])
        return [m[0].detach() for m in maps]
    if method == "mgca":
        side = int(round(out.img_local.shape[1] ** 0.5))
        maps = []
        for i in range(n):
            words = out.txt_words[i][~out.pad_mask[i]]  # (W_i, D), normalised
            att = (words @ out.img_local[i].T / hp["local_temperature"]).softmax(dim=-1)
            maps.append(att.reshape(-1, side, side).detach())
        return maps
    return []
