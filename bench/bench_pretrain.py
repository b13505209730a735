"""Benchmark of `echoseg pretrain` on CPU, as ratios within one run.

- GLoRIA local loss: echoseg's ``gloria_local_loss`` (vectorised over captions: one (B, B, regions, words) tensor)
  vs the authors' per-caption loop (``local_loss`` and ``attention_fn`` of marshuang80/gloria
  ``gloria/loss/gloria_loss.py``, re-written below: each caption's words repeated over the batch, attention over
  the regions of every image, cosine of each word with its weighted context, ``exp(temp2 x)`` summed over words,
  log, then the B x B similarities x temp3 and two cross-entropies). Inputs have GLoRIA's published sizes (words
  and regions 768-d, 19 x 19 regions of a 299 px image, 97 token columns with [CLS] in column 0, caption lengths
  drawn in 24..96) at batches 16 and 48. Equal values: losses, attention maps and input gradients in float64
  (max abs diff, must be < 1e-6); speed: forward + backward in float32, the two interleaved (5 rounds at batch
  16, 2 at batch 48), median of the per-round speed-ups (loop seconds / vectorised seconds): reported, not gated.
- step overhead: one echoseg pre-training step (``pretrain.loop.train_step`` through accelerate: the split's
  cached images and pre-tokenized texts, the method's ``objective``, AdamW, the warm-up + cosine schedule) vs a
  bare PyTorch step (model forward on the same batch already in memory, the same loss functions of
  ``pretrain.losses`` called directly, backward, AdamW step, scheduler step) on a copy of the same tiny ``vlp``
  model (WordPiece tokenizer trained on toy CAMUS reports), for ConVIRT, GLoRIA and MGCA. Both sides take the same
  batches in the same order, interleaved (order alternating), after warm-up; the ratio is the median of the
  per-round ratios. Both models must end with the same weights (the same work was done). Target <= 1.05.
  ``split_batch_ms`` is the time ``Split.batch`` (cache read + normalisation, inside the echoseg step) takes.

One thread (steadier timings on a shared machine). Run: ``python bench/bench_pretrain.py [--quick]`` (prints
JSON) or ``python bench/run_all.py pretrain``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _toy import toy_prompts  # noqa: E402

from echoseg.core.pretrain import losses as L  # noqa: E402

METHODS = ("convirt", "gloria", "mgca")
TARGET = 1.05
TOL = 1e-6

# GLoRIA's published sizes: batch, feature dim, region grid side, token columns (with [CLS])
LOSS_SIZES = ((16, 768, 19, 97), (48, 768, 19, 97))
QUICK_LOSS_SIZES = ((8, 64, 7, 25),)


# --- GLoRIA's local loss, one caption at a time (the authors' algorithm) ----------------------------------------------


def _attend(query: torch.Tensor, context: torch.Tensor, temp1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GLoRIA's attention_fn: query (B, D, n) words, context (B, D, h, w) regions -> weighted context (B, D, n)
    and the attention over the regions (B, n, h, w)."""
    b, _, n = query.shape
    h, w = context.shape[2:]
    regions = context.reshape(b, -1, h * w)  # (B, D, R)
    over_words = torch.bmm(regions.transpose(1, 2), query).softmax(dim=-1)  # (B, R, n), each region over words
    over_regions = (over_words.transpose(1, 2) * temp1).softmax(dim=-1)  # (B, n, R), each word over regions
    return torch.bmm(regions, over_regions.transpose(1, 2)), over_regions.reshape(b, n, h, w)


def loop_local_loss(img_regions: torch.Tensor, words_emb: torch.Tensor, cap_lens: list[int], temp1: float = 4.0,
                    temp2: float = 5.0, temp3: float = 10.0,
                    agg: str = "sum") -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The authors' local_loss: for each caption, its words against every image of the batch."""
    b = img_regions.shape[0]
    columns, maps = [], []
    for i in range(b):
        n = int(cap_lens[i])
        words = words_emb[i, :, 1:n + 1].unsqueeze(0).repeat(b, 1, 1)  # (B, D, n): caption i for every image
        context, attn = _attend(words, img_regions, temp1)
        maps.append(attn[i].unsqueeze(0))  # caption i over its own image, (1, n, h, w)
        w_flat = words.transpose(1, 2).reshape(b * n, -1)
        c_flat = context.transpose(1, 2).reshape(b * n, -1)
        cos = (w_flat * c_flat).sum(dim=1) / (w_flat.norm(dim=1) * c_flat.norm(dim=1)).clamp(min=1e-8)
        row = cos.view(b, n).mul_(temp2).exp_()  # in place, as the authors
        row = row.sum(dim=1, keepdim=True) if agg == "sum" else row.mean(dim=1, keepdim=True)
        columns.append(torch.log(row))  # (B images, 1): column i
    sims = torch.cat(columns, dim=1) * temp3  # rows images, columns captions
    targets = torch.arange(b, device=sims.device)
    return F.cross_entropy(sims, targets), F.cross_entropy(sims.T, targets), maps


def _loss_inputs(b: int, d: int, side: int, t: int, dtype: torch.dtype, seed: int = 0):
    """Regions (B, D, side, side), words (B, D, T) and caption lengths in T/4 .. T-1.

    Features are scaled so word-region dot products are O(1): unscaled N(0, 1) features at D = 768 give dot products
    of +-30, softmaxes of exactly 0/1 and float32 denormals, which make CPU matrix products ~20x slower (an artefact
    of random inputs, not of either implementation).
    """
    g = torch.Generator().manual_seed(seed)
    scale = d ** -0.25
    img = torch.randn(b, d, side, side, generator=g, dtype=dtype) * scale
    words = torch.randn(b, d, t, generator=g, dtype=dtype) * scale
    lens = torch.randint(max(1, t // 4), t, (b,), generator=g).tolist()
    return img, words, lens


def _forward_backward(fn, img: torch.Tensor, words: torch.Tensor, lens: list[int]):
    a, w = img.detach().clone().requires_grad_(), words.detach().clone().requires_grad_()
    l0, l1, maps = fn(a, w, lens)
    (l0 + l1).backward()
    return l0.detach(), l1.detach(), maps, a.grad, w.grad


def check_local_values(b: int, d: int, side: int, t: int) -> float:
    """Max abs difference (float64) between the two implementations: losses, attention maps, input gradients."""
    img, words, lens = _loss_inputs(b, d, side, t, torch.float64, seed=1)
    ours = _forward_backward(L.gloria_local_loss, img, words, lens)
    ref = _forward_backward(loop_local_loss, img, words, lens)
    diffs = [float((x - y).abs().max()) for x, y in zip(ours[:2] + ours[3:], ref[:2] + ref[3:], strict=True)]
    diffs += [float((x - y).abs().max()) for x, y in zip(ours[2], ref[2], strict=True)]
    return max(diffs)


def time_local(b: int, d: int, side: int, t: int, repeats: int, warmup: int) -> dict:
    """Forward + backward seconds of both implementations (float32), interleaved; and their float32 disagreement."""
    img, words, lens = _loss_inputs(b, d, side, t, torch.float32)
    vec, loop = [], []
    for k in range(warmup + repeats):
        for fn, times in ((L.gloria_local_loss, vec), (loop_local_loss, loop))[:: 1 if k % 2 else -1]:
            t0 = time.perf_counter()
            out = _forward_backward(fn, img, words, lens)
            if k >= warmup:
                times.append(time.perf_counter() - t0)
            if fn is L.gloria_local_loss:
                vec_loss = out[0] + out[1]
            else:
                loop_loss = out[0] + out[1]
    tag = f"b{b}"
    return {f"local_{tag}_loop_s": statistics.median(loop), f"local_{tag}_vectorised_s": statistics.median(vec),
            f"local_{tag}_speedup": statistics.median(lp / v for lp, v in zip(loop, vec, strict=True)),
            f"local_{tag}_float32_loss_abs_diff": float((vec_loss - loop_loss).abs()),
            f"local_{tag}_mean_words": sum(lens) / len(lens)}


# --- one pre-training step: echoseg vs bare PyTorch ------------------------------------------------------------------


def _bare_loss(out, method: str, hp: dict) -> torch.Tensor:
    """The method's loss from ``pretrain.losses``, one process (no gathering)."""
    if method == "convirt":
        return L.convirt_loss(out.img_global, out.txt_global, hp["temperature"], hp["weight"])
    if method == "gloria":
        g0, g1 = L.gloria_global_loss(out.img_global, out.txt_global, hp["temp3"])
        l0, l1, _ = L.gloria_local_loss(out.img_local, out.txt_words, out.cap_lens.tolist(), hp["temp1"],
                                        hp["temp2"], hp["temp3"], hp["agg"])
        return (l0 + l1) * hp["local_weight"] + (g0 + g1) * hp["global_weight"]
    ita = L.mgca_ita_loss(out.img_global, out.txt_global, hp["ita_temperature"])
    patch_w = None if out.patch_weights is None else L.mgca_attention_weights(out.patch_weights)
    token = L.mgca_token_loss(out.img_local, out.txt_words, L.mgca_attention_weights(out.word_weights), patch_w,
                              out.pad_mask, hp["local_temperature"], hp["bidirectional"])
    proto = L.mgca_proto_loss_from_scores(out.img_proto, out.txt_proto, hp["proto_temperature"], hp["epsilon"],
                                          hp["sinkhorn_iterations"])
    return hp["lambda_ita"] * ita + hp["lambda_local"] * token + hp["lambda_proto"] * proto


def _bare_step(model, batch, method: str, hp: dict, optimizer, scheduler) -> torch.Tensor:
    if method == "mgca":
        L.normalize_prototypes_(model.prototype_layer.weight)
    out = model(*batch)
    loss = _bare_loss(out, method, hp)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.detach()


def step_overhead(method: str, pairs, assets: Path, cache: Path, input_size: int, batch_size: int, rounds: int,
                  warmup: int = 3) -> dict:
    """Per-round echoseg / bare step-time ratios (median) for ``method``, and checks that both did the same work."""
    from transformers import get_cosine_schedule_with_warmup

    from echoseg.core.engine.batches import epoch_batches
    from echoseg.core.env import make_accelerator
    from echoseg.core.models import build_model
    from echoseg.core.pretrain.config import PretrainConfig
    from echoseg.core.pretrain.loop import Split, _schedule, train_step
    from echoseg.core.pretrain.objectives import Collective, hyperparameters

    cfg = PretrainConfig(method=method, model_config="tiny", input_size=input_size, batch_size=batch_size,
                         epochs=100, cache_dir=str(cache))
    hp = hyperparameters(method, cfg.loss)
    accelerator = make_accelerator("no", "cpu")
    torch.manual_seed(0)
    model = build_model("vlp", cfg.model_dict(), assets=assets)
    bare = copy.deepcopy(model)
    split = Split(pairs, model, cfg, accelerator, progress=False)
    batches = [b for b in epoch_batches(len(split), batch_size, cfg.seed, 1, True) if len(b) == batch_size]
    steps_per_epoch = len(batches)

    def adamw(m):
        return torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=cfg.learning_rate(),
                                 betas=(0.9, 0.999), weight_decay=cfg.weight_decay)

    opt, bare_opt = adamw(model), adamw(bare)
    sched = _schedule(opt, cfg, steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    bare_sched = get_cosine_schedule_with_warmup(bare_opt, int(cfg.warmup_fraction * total), total)
    wrapped, wopt = accelerator.prepare(model, opt)
    raw = accelerator.unwrap_model(wrapped)
    coll = Collective()
    in_memory = [split.batch(idx, torch.device("cpu")) for idx in batches]  # what a bare loop's loader delivers
    wrapped.train()
    bare.train()

    ours, theirs, fetch, loss_diff = [], [], [], 0.0
    for k in range(warmup + rounds):
        j = k % len(batches)
        for side in (("echoseg", "bare") if k % 2 == 0 else ("bare", "echoseg")):
            t0 = time.perf_counter()
            if side == "echoseg":
                terms = train_step(wrapped, raw, split, batches[j], cfg, hp, coll, wopt, sched, accelerator, False)
                a = time.perf_counter() - t0
            else:
                loss = _bare_step(bare, in_memory[j], method, hp, bare_opt, bare_sched)
                b = time.perf_counter() - t0
        loss_diff = max(loss_diff, abs(float(terms[0]) - float(loss)))
        t0 = time.perf_counter()
        split.batch(batches[j], torch.device("cpu"))
        f = time.perf_counter() - t0
        if k >= warmup:
            ours.append(a)
            theirs.append(b)
            fetch.append(f)
    weight_diff = max(float((p - q).abs().max()) for p, q in zip(raw.parameters(), bare.parameters(), strict=True))
    ratio = statistics.median(x / y for x, y in zip(ours, theirs, strict=True))
    return {f"{method}_step_overhead_ratio": ratio,
            f"{method}_step_overhead_ratio_min_times": min(ours) / min(theirs),
            f"{method}_echoseg_step_ms": 1000 * statistics.median(ours),
            f"{method}_bare_step_ms": 1000 * statistics.median(theirs),
            f"{method}_split_batch_ms": 1000 * statistics.median(fetch),
            f"{method}_loss_abs_diff": loss_diff, f"{method}_weights_abs_diff": weight_diff}


def _tokenizer(pairs, root: Path) -> Path:
    """The tiny text encoder's WordPiece vocabulary, trained on the pairs' texts as `pretrain` does."""
    from echoseg.core.models import get_config
    from echoseg.core.models.vlp_text import TOKENIZER_DIR, train_wordpiece

    vocab = int(get_config("vlp", "tiny").get("vocab_size", 1000))
    train_wordpiece(sorted(set(pairs.frame["text"])), vocab, root / TOKENIZER_DIR)
    return root


def run(quick: bool = False, threads: int = 1) -> dict:
    """GLoRIA local-loss agreement and speed-up; echoseg vs bare pre-training step ratios."""
    from echoseg.core.pretrain.data import load_pairs

    torch.set_num_threads(threads)
    sizes = QUICK_LOSS_SIZES if quick else LOSS_SIZES
    input_size, batch_size = (32, 8) if quick else (64, 16)
    rounds = 25 if quick else 40
    metrics: dict = {"threads": torch.get_num_threads(), "quick": quick}

    b, d, side, t = sizes[0]
    metrics["local_float64_max_abs_diff"] = check_local_values(b, d, side, t)
    metrics["local_float64_check_size"] = f"B={b} D={d} {side}x{side} T={t}"
    for b, d, side, t in sizes:  # the float64 check warmed up; batch 48 is too slow on one core for more rounds
        metrics.update(time_local(b, d, side, t, *((2, 0) if b > 16 else (5, 1))))

    with tempfile.TemporaryDirectory(prefix="echoseg-bench-pretrain-") as tmp:
        root = Path(tmp)
        prompts = toy_prompts(root, 8 if quick else 20, 128)
        pairs = load_pairs([prompts], "train", "report")
        assets = _tokenizer(pairs, root / "assets")
        metrics.update(pairs=len(pairs), input_size=input_size, batch_size=batch_size, rounds=rounds)
        for method in METHODS:
            metrics.update(step_overhead(method, pairs, assets, root / "cache", input_size, batch_size, rounds))

    ratios = {m: metrics[f"{m}_step_overhead_ratio"] for m in METHODS}
    same_work = all(metrics[f"{m}_loss_abs_diff"] < 1e-4 for m in METHODS)
    passed = metrics["local_float64_max_abs_diff"] < TOL and same_work and max(ratios.values()) <= TARGET
    return {"name": "pretrain",
            "description": "GLoRIA local loss: vectorised (echoseg) vs the authors' per-caption loop (values, "
                           "speed-up); one pretrain step (accelerate, objective, schedule) vs a bare PyTorch step, "
                           "tiny vlp model, per method",
            "metrics": metrics,
            "target": f"local loss equal to the loop (float64 max abs diff < {TOL:g}); step_overhead_ratio <= "
                      f"{TARGET} for {', '.join(METHODS)} (speed-up reported, not gated)",
            "passed": passed}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print the result as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 25 rounds: a smoke test (~20 s); its ratios are noisier (+-6 %%)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.quick, args.threads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
