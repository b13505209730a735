"""Image-text pre-training losses of ConVIRT, GLoRIA and MGCA, as plain functions on embeddings.

- ConVIRT (Zhang et al., "Contrastive Learning of Medical Visual Representations from Paired Images and Text",
  MLHC 2022 / arXiv:2010.00747): bidirectional InfoNCE on cosine similarities, ``lambda`` on image->text.
- GLoRIA (Huang et al., "GLoRIA: A Multimodal Global-Local Representation Learning Framework for Label-efficient
  Medical Image Recognition", ICCV 2021): a global and a word-region (local) contrastive loss, following the
  authors' ``gloria/loss/gloria_loss.py`` (marshuang80/gloria), the local one vectorised over captions.
- MGCA (Wang et al., "Multi-Granularity Cross-modal Alignment for Generalized Medical Visual Representation
  Learning", NeurIPS 2022): instance (ITA), token (cross-attention) and prototype (Sinkhorn-Knopp) alignment,
  following ``MGCA.forward``/``MGCA.sinkhorn`` of the authors' ``mgca/models/mgca/mgca_module.py`` (HKU-MedAI/MGCA).

In a batch of B pairs, sample ``i``'s image and text are the positive pair; every loss is an average over the batch.
All functions keep the dtype of their inputs (the authors' ``sinkhorn`` casts its result to float32; this one does
not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# MGCA defaults (the keyword defaults of MGCA.__init__). Its command line (add_model_specific_args) sets
# lambda_1 = lambda_2 = lambda_3 = 1.0 instead; the constants keep the __init__ values.
MGCA_NUM_PROTOTYPES = 500
MGCA_EPSILON = 0.05
MGCA_SINKHORN_ITERATIONS = 3
MGCA_ITA_TEMPERATURE = 0.07  # softmax_temperature
MGCA_LOCAL_TEMPERATURE = 0.1
MGCA_PROTO_TEMPERATURE = 0.2
MGCA_LAMBDA_ITA = 1.0  # lambda_1
MGCA_LAMBDA_LOCAL = 0.7  # lambda_2
MGCA_LAMBDA_PROTO = 0.5  # lambda_3

_COSINE_EPS = 1e-8  # GLoRIA's clamp on the product of norms


def _targets(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def _check_pairs(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (B, D) embeddings of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


# --- ConVIRT -------------------------------------------------------------------------------------------------------


def convirt_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor, temperature: float = 0.1,
                 weight: float = 0.75) -> torch.Tensor:
    """ConVIRT's bidirectional contrastive loss (Zhang et al. 2020).

    ``L = mean_i [lambda * l_i(v->u) + (1 - lambda) * l_i(u->v)]`` with ``l_i(v->u)`` the InfoNCE loss of image i
    against all texts of the batch on cosine similarities divided by ``temperature`` (paper: tau = 0.1,
    lambda = 0.75; lambda weighs the image-to-text term).

    Args:
        img_emb: image embeddings v (B, D), not necessarily normalised.
        txt_emb: text embeddings u (B, D).
        temperature: tau.
        weight: lambda, the weight of the image-to-text term.

    Returns:
        The scalar loss.
    """
    _check_pairs(img_emb, txt_emb)
    logits = F.normalize(img_emb, dim=-1) @ F.normalize(txt_emb, dim=-1).T / temperature
    targets = _targets(logits.shape[0], logits.device)
    return weight * F.cross_entropy(logits, targets) + (1.0 - weight) * F.cross_entropy(logits.T, targets)


# --- GLoRIA --------------------------------------------------------------------------------------------------------


def _gloria_cosine(dots: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    return dots / norms.clamp(min=_COSINE_EPS)


def gloria_global_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor,
                       temp3: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """GLoRIA's global contrastive loss (Huang et al. 2021; the authors' ``global_loss``).

    Cosine similarities scaled by ``temp3`` (the logits are multiplied by it, as in the authors' code).

    Args:
        img_emb: global image embeddings (B, D).
        txt_emb: global text embeddings (B, D).
        temp3: the scale of the similarity logits.

    Returns:
        ``(loss0, loss1)``: image->text (each image's row over the texts) and text->image cross-entropies.
    """
    _check_pairs(img_emb, txt_emb)
    norms = img_emb.norm(dim=1)[:, None] * txt_emb.norm(dim=1)[None, :]
    scores = _gloria_cosine(img_emb @ txt_emb.T, norms) * temp3
    targets = _targets(scores.shape[0], scores.device)
    return F.cross_entropy(scores, targets), F.cross_entropy(scores.T, targets)


def gloria_local_loss(img_regions: torch.Tensor, words_emb: torch.Tensor, cap_lens: Sequence[int],
                      temp1: float = 4.0, temp2: float = 5.0, temp3: float = 10.0,
                      agg: str = "sum") -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """GLoRIA's local (word-region) contrastive loss (Huang et al. 2021; the authors' ``local_loss``).

    For caption i (its first ``cap_lens[i]`` words) and image j: word-region dot products, a softmax over the words,
    then ``temp1`` x that, transposed, a softmax over the regions (the authors' ``attention_fn``); each word's
    attention-weighted region context ``c``; ``Z(i, j) = log agg_w exp(temp2 * cos(word_w, c_w))`` (``agg`` "sum"
    or "mean" over the caption's words). The B x B matrix ``temp3 * Z`` (rows images, columns captions) is scored
    with cross-entropy both ways. Computed for every caption at once, padding words masked out and the columns after
    the longest caption dropped; the largest tensors are (B, B, H*W, T) word-region scores, as many numbers as the
    authors' per-caption loop computes in total (the (B, B, D, T) contexts are never formed: see the code).

    Args:
        img_regions: region features (B, D, H, W).
        words_emb: word features (B, D, T) as the authors' text encoder returns them: column 0 is [CLS] (not
            used), caption i's words in columns ``1 .. cap_lens[i]``.
        cap_lens: the number of words of each caption, 1 <= cap_lens[i] <= T - 1.
        temp1: sharpness of the attention over regions.
        temp2: sharpness of the word-level aggregation.
        temp3: scale of the caption-image logits.
        agg: "sum" or "mean" over words.

    Returns:
        ``(loss0, loss1, attention_maps)``: image->text and text->image cross-entropies, and for each caption i its
        attention over its own image's regions, (1, cap_lens[i], H, W), as the authors' ``att_maps``.
    """
    if agg not in ("sum", "mean"):
        raise ValueError(f"agg must be 'sum' or 'mean', got {agg!r}")
    if img_regions.dim() != 4 or words_emb.dim() != 3:
        raise ValueError(f"expected img_regions (B, D, H, W) and words_emb (B, D, T), got "
                         f"{tuple(img_regions.shape)} and {tuple(words_emb.shape)}")
    b, d, h, w = img_regions.shape
    t = words_emb.shape[2] - 1  # column 0 ([CLS]) is skipped, as the authors' words_emb[i, :, 1:words_num + 1]
    if words_emb.shape[:2] != (b, d):
        raise ValueError(f"img_regions {tuple(img_regions.shape)} and words_emb {tuple(words_emb.shape)} disagree")
    lens = [int(n) for n in cap_lens]
    if len(lens) != b or not all(1 <= n <= t for n in lens):
        raise ValueError(f"cap_lens must give B={b} lengths in 1..{t}, got {lens}")

    t = max(lens)  # columns after the longest caption are padding for every caption: not computed
    words_emb = words_emb[:, :, 1:1 + t]
    regions = img_regions.reshape(b, d, h * w)  # (B_img, D, R)
    lens_t = torch.tensor(lens, device=words_emb.device)
    pad = torch.arange(t, device=words_emb.device)[None, :] >= lens_t[:, None]  # (B_cap, T)

    # [i, j, r, w]: caption i's word w . image j's region r; softmax over the caption's words
    raw = torch.einsum("idw,jdr->ijrw", words_emb, regions)
    attn = raw.masked_fill(pad[:, None, None, :], float("-inf")).softmax(dim=-1)
    # [i, j, w, r]: then over the regions, sharpened by temp1
    attn = (attn.transpose(-1, -2) * temp1).softmax(dim=-1)
    # The word's attention-weighted context c = sum_r attn_r region_r is never built (it would be B x B x D x T):
    # word . c = sum_r attn_r (word . region_r), and |c|^2 = attn^T G attn with G = the image's region Gram matrix.
    dots = (attn * raw.transpose(-1, -2)).sum(dim=-1)  # (B_cap, B_img, T)
    gram = torch.einsum("jdr,jds->jrs", regions, regions)  # (B_img, R, R)
    ctx_sq = (torch.einsum("ijwr,jrs->ijws", attn, gram) * attn).sum(dim=-1)
    ctx_norm = torch.where(ctx_sq > 0, ctx_sq, torch.ones_like(ctx_sq)).sqrt() * (ctx_sq > 0)
    norms = words_emb.norm(dim=1)[:, None, :] * ctx_norm
    logits = (temp2 * _gloria_cosine(dots, norms)).masked_fill(pad[:, None, :], float("-inf"))
    sim = torch.logsumexp(logits, dim=-1)  # log sum_w exp(temp2 * cos), (B_cap, B_img)
    if agg == "mean":
        sim = sim - torch.log(lens_t.to(sim.dtype))[:, None]
    scores = sim.T * temp3  # rows images, columns captions

    targets = _targets(b, scores.device)
    maps = [attn[i, i, :n].reshape(1, n, h, w) for i, n in enumerate(lens)]
    return F.cross_entropy(scores, targets), F.cross_entropy(scores.T, targets), maps


# --- MGCA ----------------------------------------------------------------------------------------------------------


def mgca_ita_loss(img_emb: torch.Tensor, report_emb: torch.Tensor,
                  temperature: float = MGCA_ITA_TEMPERATURE) -> torch.Tensor:
    """MGCA's instance-wise image-text alignment loss (Wang et al. 2022; ``loss_ita``).

    Both embeddings are L2-normalised (MGCA's forward does so first); the result is the *sum* of the
    image->report and report->image cross-entropies, as in the authors' code.

    Args:
        img_emb: global image embeddings (B, D).
        report_emb: global report embeddings (B, D).
        temperature: the softmax temperature (MGCA: 0.07).

    Returns:
        The scalar loss.
    """
    _check_pairs(img_emb, report_emb)
    scores = F.normalize(img_emb, dim=-1) @ F.normalize(report_emb, dim=-1).T / temperature
    targets = _targets(scores.shape[0], scores.device)
    return F.cross_entropy(scores, targets) + F.cross_entropy(scores.T, targets)


@torch.no_grad()
def mgca_attention_weights(attn: torch.Tensor, low: float = 0.1, high: float = 0.9) -> torch.Tensor:
    """MGCA's token weights: each sample's non-zero attentions clipped to their [10 %, 90 %] quantiles, summing to 1.

    For words MGCA uses BERT's last-layer [CLS] attention to each token (zero on padding); for ViT patches the
    last block's [CLS]-to-patch attention averaged over heads. A CNN image encoder has no such attention: pass
    ``patch_weights=None`` to `mgca_token_loss` (uniform weights).

    Args:
        attn: attentions (B, N), non-negative; zeros stay zero.
        low: lower quantile.
        high: upper quantile.

    Returns:
        Weights (B, N) without gradient, each row summing to 1.
    """
    attn = attn.detach()
    nonzero = attn != 0
    masked = torch.where(nonzero, attn, torch.full_like(attn, float("nan")))
    lo = torch.nanquantile(masked, low, dim=1, keepdim=True)
    hi = torch.nanquantile(masked, high, dim=1, keepdim=True)
    clipped = torch.where(nonzero, torch.minimum(torch.maximum(attn, lo), hi), attn)
    return clipped / clipped.sum(dim=1, keepdim=True)


def _cross_attention_alignment(queries: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor,
                               key_padding: torch.Tensor | None, temperature: float,
                               normalize_output: bool) -> torch.Tensor:
    """One direction of MGCA's token alignment: queries attend to keys; each query must pick out its own output."""
    bsz, n, _ = queries.shape
    att = queries @ keys.transpose(1, 2) / temperature  # (B, N, M)
    if key_padding is not None:
        att = att.masked_fill(key_padding[:, None, :], float("-inf"))
    out = att.softmax(dim=-1) @ keys  # (B, N, D)
    if normalize_output:
        out = F.normalize(out, dim=-1)
    sim = queries @ out.transpose(1, 2) / temperature  # [b, n1, n2] = <query n1, output n2>
    targets = _targets(n, sim.device).repeat(bsz)
    flat = weights.reshape(-1)
    to_outputs = F.cross_entropy(sim.reshape(bsz * n, n), targets, reduction="none")
    to_queries = F.cross_entropy(sim.transpose(1, 2).reshape(bsz * n, n), targets, reduction="none")
    return ((to_outputs * flat).sum() / bsz + (to_queries * flat).sum() / bsz) / 2.0


def mgca_token_loss(patch_emb: torch.Tensor, word_emb: torch.Tensor, word_weights: torch.Tensor,
                    patch_weights: torch.Tensor | None = None, pad_mask: torch.Tensor | None = None,
                    temperature: float = MGCA_LOCAL_TEMPERATURE, bidirectional: bool = True,
                    normalize_patch_output: bool | None = None) -> torch.Tensor:
    """MGCA's token-wise cross-attention alignment loss (Wang et al. 2022; ``loss_local``).

    Word side: each word attends to the patches of its image (softmax of dot products / temperature), the
    output is L2-normalised, and the word must be closest to its own output among the report's outputs and vice
    versa (two cross-entropies, weighted per word by ``word_weights``, averaged). Patch side (``bidirectional``):
    the same with patches attending to the words, padding words (``pad_mask``) excluded from that attention.
    Returns ``loss_word + loss_patch``.

    As in the authors' code: the word-to-patch attention uses no mask, and padding words stay among the
    candidates of the word-side cross-entropies (only their weight, zero, drops them as anchors); the patch-side
    attention output is normalised only with a CNN encoder (uniform patch weights), not with ViT weights.

    Args:
        patch_emb: patch embeddings (B, P, D), L2-normalised here.
        word_emb: word embeddings (B, W, D), L2-normalised here.
        word_weights: (B, W), each row summing to 1 (`mgca_attention_weights`); zero on padding.
        patch_weights: (B, P) rows summing to 1 (ViT), or None for uniform weights 1/P (CNN).
        pad_mask: (B, W) bool, True at padding words (MGCA's ``mask``), or None.
        temperature: MGCA's local temperature (0.1).
        bidirectional: add the patch side (MGCA default True).
        normalize_patch_output: normalise the patch-side attention output; None follows MGCA: only when
            ``patch_weights`` is None.

    Returns:
        The scalar loss.
    """
    if patch_emb.dim() != 3 or word_emb.dim() != 3 or patch_emb.shape[0] != word_emb.shape[0]:
        raise ValueError(f"expected patch_emb (B, P, D) and word_emb (B, W, D), got {tuple(patch_emb.shape)} and "
                         f"{tuple(word_emb.shape)}")
    if word_weights.shape != word_emb.shape[:2]:
        raise ValueError(f"word_weights {tuple(word_weights.shape)} must be (B, W) = {tuple(word_emb.shape[:2])}")
    patches = F.normalize(patch_emb, dim=-1)
    words = F.normalize(word_emb, dim=-1)
    loss = _cross_attention_alignment(words, patches, word_weights.detach(), None, temperature, True)
    if not bidirectional:
        return loss
    bsz, p, _ = patches.shape
    if normalize_patch_output is None:
        normalize_patch_output = patch_weights is None
    if patch_weights is None:
        patch_weights = torch.full((bsz, p), 1.0 / p, dtype=patches.dtype, device=patches.device)
    elif patch_weights.shape != (bsz, p):
        raise ValueError(f"patch_weights {tuple(patch_weights.shape)} must be (B, P) = {(bsz, p)}")
    if pad_mask is not None and pad_mask.shape != word_emb.shape[:2]:
        raise ValueError(f"pad_mask {tuple(pad_mask.shape)} must be (B, W) = {tuple(word_emb.shape[:2])}")
    return loss + _cross_attention_alignment(patches, words, patch_weights.detach(), pad_mask, temperature,
                                             normalize_patch_output)


@torch.no_grad()
def sinkhorn(Q: torch.Tensor, iterations: int = MGCA_SINKHORN_ITERATIONS,
             all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, world: int = 1) -> torch.Tensor:
    """Sinkhorn-Knopp soft assignments of samples to prototypes (SwAV, Caron et al. 2020; MGCA's ``sinkhorn``).

    ``Q`` is normalised to sum 1, then each iteration scales its rows (prototypes) to sum 1/K and its columns
    (samples) to sum 1/B; the result is each sample's distribution over prototypes. The caller applies epsilon,
    as MGCA does: ``Q = exp(scores / epsilon).T``. ``Q`` is not modified (the authors' version divides it in place).

    Args:
        Q: positive scores (K, B): K prototypes, B samples.
        iterations: the number of row/column normalisation rounds (MGCA: 3).
        all_reduce: with several processes, a function summing a tensor over them (MGCA's
            ``distributed_sinkhorn``): each process passes its own columns of the global Q and gets its samples'
            rows of the global assignments.
        world: the number of processes (the global batch is ``world`` x B).

    Returns:
        Assignments (B, K) without gradient, each row summing to 1.
    """
    if Q.dim() != 2:
        raise ValueError(f"expected Q (K, B), got {tuple(Q.shape)}")
    total = (lambda t: t) if all_reduce is None else all_reduce
    Q = Q.detach() / total(Q.sum())
    k, b = Q.shape
    for _ in range(iterations):
        Q = Q * ((1.0 / k) / total(Q.sum(dim=1, keepdim=True)))
        Q = Q * ((1.0 / (world * b)) / Q.sum(dim=0, keepdim=True))
    return (Q / Q.sum(dim=0, keepdim=True)).T


@torch.no_grad()
def normalize_prototypes_(prototypes: torch.Tensor) -> torch.Tensor:
    """L2-normalise each prototype (row of a (K, D) weight) in place, as MGCA does before every step."""
    return prototypes.copy_(F.normalize(prototypes, dim=1))


def mgca_proto_loss(img_emb: torch.Tensor, report_emb: torch.Tensor, prototypes: torch.Tensor,
                    temperature: float = MGCA_PROTO_TEMPERATURE, epsilon: float = MGCA_EPSILON,
                    iterations: int = MGCA_SINKHORN_ITERATIONS) -> torch.Tensor:
    """MGCA's prototype-level (cross-modal cluster) alignment loss (Wang et al. 2022; ``loss_proto``).

    Both embeddings are L2-normalised and scored against the prototypes; each modality's Sinkhorn codes
    (``sinkhorn(exp(scores / epsilon).T)``, no gradient) are the targets of the other modality's softmax over
    prototypes at ``temperature``; the two cross-entropies are averaged. The prototypes are used as given: MGCA
    re-normalises its prototype layer's weight in place before each step (`normalize_prototypes_`) and does not
    update it during the first epoch.

    Args:
        img_emb: global image embeddings (B, D).
        report_emb: global report embeddings (B, D).
        prototypes: the prototype weight (K, D) (MGCA: K = 500, a bias-free linear layer).
        temperature: the prototype softmax temperature (0.2).
        epsilon: the Sinkhorn entropy parameter (0.05).
        iterations: Sinkhorn iterations (3).

    Returns:
        The scalar loss.
    """
    _check_pairs(img_emb, report_emb)
    if prototypes.dim() != 2 or prototypes.shape[1] != img_emb.shape[1]:
        raise ValueError(f"prototypes {tuple(prototypes.shape)} must be (K, D) with D = {img_emb.shape[1]}")
    img_scores = F.normalize(img_emb, dim=-1) @ prototypes.T  # (B, K)
    report_scores = F.normalize(report_emb, dim=-1) @ prototypes.T
    return mgca_proto_loss_from_scores(img_scores, report_scores, temperature, epsilon, iterations)


def mgca_proto_loss_from_scores(img_scores: torch.Tensor, report_scores: torch.Tensor,
                                temperature: float = MGCA_PROTO_TEMPERATURE, epsilon: float = MGCA_EPSILON,
                                iterations: int = MGCA_SINKHORN_ITERATIONS,
                                all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                                world: int = 1) -> torch.Tensor:
    """`mgca_proto_loss` on prototype scores (B, K) already computed (MGCA's ``prototype_layer`` outputs on the
    normalised embeddings); ``all_reduce``/``world`` make the Sinkhorn codes those of the global batch."""
    img_code = sinkhorn(torch.exp(img_scores.detach() / epsilon).T, iterations, all_reduce, world)
    report_code = sinkhorn(torch.exp(report_scores.detach() / epsilon).T, iterations, all_reduce, world)
    img_logp = F.log_softmax(img_scores / temperature, dim=1)
    report_logp = F.log_softmax(report_scores / temperature, dim=1)
    i2t = -(img_code * report_logp).sum(dim=1).mean()
    t2i = -(report_code * img_logp).sum(dim=1).mean()
    return (i2t + t2i) / 2.0
