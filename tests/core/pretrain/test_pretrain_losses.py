"""The pre-training losses against loop-form transcriptions of the published algorithms (float64, within 1e-6).

The references below are written from the papers and the authors' code, one caption / image / sample at a time:
ConVIRT (Zhang et al. 2020, eqs. 2-4), GLoRIA (marshuang80/gloria, gloria/loss/gloria_loss.py: global_loss,
local_loss, attention_fn), MGCA (HKU-MedAI/MGCA, mgca/models/mgca/mgca_module.py: MGCA.forward, MGCA.sinkhorn).
"""

from __future__ import annotations

import math

import pytest
import torch

from echoseg.core.pretrain import losses as L

TOL = 1e-6


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _close(a, b):
    return abs(float(a) - float(b)) < TOL


# --- loop-form references ------------------------------------------------------------------------------------------


def _unit(x):
    return x / torch.sqrt(torch.sum(x * x))


def _cos(a, b, eps=0.0):
    """Cosine similarity; with eps, GLoRIA's clamp on the product of norms."""
    denom = torch.sqrt(torch.sum(a * a)) * torch.sqrt(torch.sum(b * b))
    return torch.sum(a * b) / max(denom, torch.tensor(eps, dtype=denom.dtype))


def _softmax(values):
    m = max(values)
    exps = [torch.exp(v - m) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _nll(logits, target):
    """-log softmax(logits)[target] for a list of scalar logits."""
    return -torch.log(_softmax(logits)[target])


def _mean_ce_rows(matrix):
    """Mean over rows i of the cross-entropy of row i with target i (matrix: list of lists of scalars)."""
    return sum(_nll(row, i) for i, row in enumerate(matrix)) / len(matrix)


def _transpose(matrix):
    return [[matrix[i][j] for i in range(len(matrix))] for j in range(len(matrix[0]))]


def ref_convirt(img, txt, tau, lam):
    n = img.shape[0]
    v = [_unit(img[i]) for i in range(n)]
    u = [_unit(txt[i]) for i in range(n)]
    total = 0.0
    for i in range(n):
        l_v2u = _nll([torch.dot(v[i], u[k]) / tau for k in range(n)], i)
        l_u2v = _nll([torch.dot(u[i], v[k]) / tau for k in range(n)], i)
        total = total + lam * l_v2u + (1 - lam) * l_u2v
    return total / n


def ref_gloria_global(img, txt, temp3):
    n = img.shape[0]
    scores = [[_cos(img[i], txt[j], 1e-8) * temp3 for j in range(n)] for i in range(n)]
    return _mean_ce_rows(scores), _mean_ce_rows(_transpose(scores))


def ref_gloria_local(img_regions, words_emb, cap_lens, temp1, temp2, temp3, agg):
    """The authors' local_loss: one caption at a time against every image, attention_fn written out."""
    b, d, h, w = img_regions.shape
    r_num = h * w
    sims = [[None] * b for _ in range(b)]  # sims[image j][caption i]
    maps = []
    for i in range(b):
        n = cap_lens[i]
        words = [words_emb[i, :, k + 1] for k in range(n)]  # words_emb[i, :, 1:words_num + 1]
        for j in range(b):
            regions = [img_regions[j, :, r // w, r % w] for r in range(r_num)]
            # softmax over the words for each region, then temp1 x, softmax over the regions for each word
            over_words = [_softmax([torch.dot(regions[r], words[k]) for k in range(n)]) for r in range(r_num)]
            attn = [_softmax([temp1 * over_words[r][k] for r in range(r_num)]) for k in range(n)]
            if j == i:
                maps.append(torch.stack([torch.stack(attn[k]) for k in range(n)]).reshape(1, n, h, w))
            terms = []
            for k in range(n):
                context = sum(attn[k][r] * regions[r] for r in range(r_num))
                terms.append(torch.exp(temp2 * _cos(words[k], context, 1e-8)))
            agg_value = sum(terms) if agg == "sum" else sum(terms) / n
            sims[j][i] = torch.log(agg_value) * temp3
    return _mean_ce_rows(sims), _mean_ce_rows(_transpose(sims)), maps


def ref_mgca_ita(img, rep, tau):
    n = img.shape[0]
    v = [_unit(img[i]) for i in range(n)]
    u = [_unit(rep[i]) for i in range(n)]
    scores = [[torch.dot(v[i], u[j]) / tau for j in range(n)] for i in range(n)]
    return _mean_ce_rows(scores) + _mean_ce_rows(_transpose(scores))


def ref_attention_weights(attn):
    rows = []
    for b in range(attn.shape[0]):
        row = attn[b].clone()
        nonzero = [k for k in range(row.shape[0]) if row[k] != 0]
        values = torch.stack([row[k] for k in nonzero])
        low, high = torch.quantile(values, 0.1), torch.quantile(values, 0.9)
        for k in nonzero:
            row[k] = min(max(row[k], low), high)
        rows.append(row / sum(row[k] for k in range(row.shape[0])))
    return torch.stack(rows)


def _ref_alignment(queries, keys, weights, key_pad, tau, normalize):
    """One direction of MGCA's token alignment, one sample and one token at a time; summed over samples / B."""
    bsz = queries.shape[0]
    loss_1 = loss_2 = 0.0
    for b in range(bsz):
        q = [_unit(queries[b, k]) for k in range(queries.shape[1])]
        keys_b = [_unit(keys[b, m]) for m in range(keys.shape[1])]
        valid = [m for m in range(len(keys_b)) if key_pad is None or not bool(key_pad[b, m])]
        outs = []
        for k in range(len(q)):
            att = _softmax([torch.dot(q[k], keys_b[m]) / tau for m in valid])
            out = sum(a * keys_b[m] for a, m in zip(att, valid, strict=True))
            outs.append(_unit(out) if normalize else out)
        sim = [[torch.dot(q[n1], outs[n2]) / tau for n2 in range(len(q))] for n1 in range(len(q))]
        for k in range(len(q)):
            loss_1 = loss_1 + _nll(sim[k], k) * weights[b, k]
            loss_2 = loss_2 + _nll([sim[n1][k] for n1 in range(len(q))], k) * weights[b, k]
    return (loss_1 / bsz + loss_2 / bsz) / 2


def ref_mgca_token(patch, word, word_w, patch_w, pad, tau, normalize_patch):
    loss_word = _ref_alignment(word, patch, word_w, None, tau, True)
    return loss_word + _ref_alignment(patch, word, patch_w, pad, tau, normalize_patch)


def ref_sinkhorn(Q, iterations):
    k_num, b_num = Q.shape
    q = [[Q[k, b] for b in range(b_num)] for k in range(k_num)]
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        for k in range(k_num):
            row_sum = sum(q[k])
            q[k] = [x * (1 / k_num) / row_sum for x in q[k]]
        for b in range(b_num):
            col_sum = sum(q[k][b] for k in range(k_num))
            for k in range(k_num):
                q[k][b] = q[k][b] * (1 / b_num) / col_sum
    out = torch.empty(b_num, k_num, dtype=Q.dtype)
    for b in range(b_num):
        col_sum = sum(q[k][b] for k in range(k_num))
        for k in range(k_num):
            out[b, k] = q[k][b] / col_sum
    return out


def ref_mgca_proto(img, rep, protos, tau, eps, iterations):
    bsz, k_num = img.shape[0], protos.shape[0]
    img_s = torch.stack([torch.stack([torch.dot(_unit(img[b]), protos[k]) for k in range(k_num)]) for b in range(bsz)])
    rep_s = torch.stack([torch.stack([torch.dot(_unit(rep[b]), protos[k]) for k in range(k_num)]) for b in range(bsz)])
    img_code = ref_sinkhorn(torch.exp(img_s / eps).T, iterations)
    rep_code = ref_sinkhorn(torch.exp(rep_s / eps).T, iterations)
    i2t = t2i = 0.0
    for b in range(bsz):
        rep_p = _softmax([rep_s[b, k] / tau for k in range(k_num)])
        img_p = _softmax([img_s[b, k] / tau for k in range(k_num)])
        i2t = i2t - sum(img_code[b, k] * torch.log(rep_p[k]) for k in range(k_num))
        t2i = t2i - sum(rep_code[b, k] * torch.log(img_p[k]) for k in range(k_num))
    return (i2t / bsz + t2i / bsz) / 2


# --- ConVIRT -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tau", "lam"), [(0.1, 0.75), (0.5, 0.3)])
def test_convirt_equals_loop(tau, lam):
    img, txt = _rand(5, 8, seed=1), _rand(5, 8, seed=2)
    assert _close(L.convirt_loss(img, txt, temperature=tau, weight=lam), ref_convirt(img, txt, tau, lam))


def test_convirt_lambda_weighs_image_to_text():
    img, txt = _rand(4, 6, seed=3), _rand(4, 6, seed=4)
    # lambda = 1 leaves the image->text term alone: image i's row over the texts
    logits = torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(txt, dim=1).T / 0.1
    i2t = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert _close(L.convirt_loss(img, txt, weight=1.0), i2t)
    assert not _close(L.convirt_loss(img, txt, weight=0.0), i2t)


# --- GLoRIA --------------------------------------------------------------------------------------------------------


def test_gloria_global_equals_loop():
    img, txt = _rand(5, 8, seed=5), _rand(5, 8, seed=6)
    loss0, loss1 = L.gloria_global_loss(img, txt, temp3=10.0)
    ref0, ref1 = ref_gloria_global(img, txt, 10.0)
    assert _close(loss0, ref0) and _close(loss1, ref1)


def _local_inputs(seed=7):
    img = _rand(3, 4, 2, 3, seed=seed)  # B=3, D=4, 2x3 regions
    words = _rand(3, 4, 6, seed=seed + 1)  # T=6: [CLS] + up to 5 words
    return img, words, [5, 2, 3]


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_gloria_local_equals_per_caption_loop(agg):
    img, words, cap_lens = _local_inputs()
    loss0, loss1, maps = L.gloria_local_loss(img, words, cap_lens, agg=agg)
    ref0, ref1, ref_maps = ref_gloria_local(img, words, cap_lens, 4.0, 5.0, 10.0, agg)
    assert _close(loss0, ref0) and _close(loss1, ref1)
    assert [tuple(m.shape) for m in maps] == [(1, n, 2, 3) for n in cap_lens]
    for got, want in zip(maps, ref_maps, strict=True):
        assert torch.allclose(got, want, atol=TOL, rtol=0)


def test_gloria_local_other_temperatures_and_sum_differs_from_mean():
    img, words, cap_lens = _local_inputs(seed=11)
    got = L.gloria_local_loss(img, words, cap_lens, temp1=2.0, temp2=3.0, temp3=7.0)
    ref = ref_gloria_local(img, words, cap_lens, 2.0, 3.0, 7.0, "sum")
    assert _close(got[0], ref[0]) and _close(got[1], ref[1])
    mean = L.gloria_local_loss(img, words, cap_lens, agg="mean")
    assert not _close(L.gloria_local_loss(img, words, cap_lens)[0], mean[0])


def test_gloria_local_ignores_padding_words():
    img, words, cap_lens = _local_inputs()
    padded = words.clone()
    padded[:, :, 0] = 7.0  # [CLS] is not a word
    padded[1, :, 3:] = 1e3  # caption 1 has 2 words (columns 1, 2)
    padded[2, :, 4:] = 0.0
    base = L.gloria_local_loss(img, words, cap_lens)
    other = L.gloria_local_loss(img, padded, cap_lens)
    assert _close(base[0], other[0]) and _close(base[1], other[1])


def test_gloria_local_rejects_bad_arguments():
    img, words, _ = _local_inputs()
    with pytest.raises(ValueError, match="cap_lens"):
        L.gloria_local_loss(img, words, [5, 0, 3])
    with pytest.raises(ValueError, match="cap_lens"):
        L.gloria_local_loss(img, words, [5, 6, 3])
    with pytest.raises(ValueError, match="agg"):
        L.gloria_local_loss(img, words, [5, 2, 3], agg="max")


# --- MGCA ----------------------------------------------------------------------------------------------------------


def test_mgca_defaults():
    assert (L.MGCA_NUM_PROTOTYPES, L.MGCA_EPSILON, L.MGCA_SINKHORN_ITERATIONS) == (500, 0.05, 3)
    assert (L.MGCA_LAMBDA_ITA, L.MGCA_LAMBDA_LOCAL, L.MGCA_LAMBDA_PROTO) == (1.0, 0.7, 0.5)
    assert (L.MGCA_ITA_TEMPERATURE, L.MGCA_LOCAL_TEMPERATURE, L.MGCA_PROTO_TEMPERATURE) == (0.07, 0.1, 0.2)


def test_mgca_ita_equals_loop():
    img, rep = _rand(5, 8, seed=20), _rand(5, 8, seed=21)
    assert _close(L.mgca_ita_loss(img, rep), ref_mgca_ita(img, rep, 0.07))


def test_mgca_attention_weights_equal_loop():
    attn = _rand(3, 9, seed=22).abs()
    attn[0, 6:] = 0.0  # padding tokens of sample 0
    got = L.mgca_attention_weights(attn)
    assert torch.allclose(got, ref_attention_weights(attn), atol=TOL, rtol=0)
    assert torch.allclose(got.sum(1), torch.ones(3, dtype=got.dtype))
    assert (got[0, 6:] == 0).all() and not got.requires_grad


def _token_inputs(seed=30):
    patch = _rand(3, 6, 4, seed=seed)  # B=3, P=6, D=4
    word = _rand(3, 5, 4, seed=seed + 1)  # W=5
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[1, 3:] = True
    pad[2, 4:] = True
    raw = _rand(3, 5, seed=seed + 2).abs().masked_fill(pad, 0.0)
    return patch, word, L.mgca_attention_weights(raw), pad


def test_mgca_token_loss_cnn_branch_equals_loop():
    patch, word, word_w, pad = _token_inputs()
    got = L.mgca_token_loss(patch, word, word_w, pad_mask=pad)
    uniform = torch.full((3, 6), 1 / 6, dtype=torch.float64)
    assert _close(got, ref_mgca_token(patch, word, word_w, uniform, pad, 0.1, True))


def test_mgca_token_loss_vit_branch_equals_loop():
    patch, word, word_w, pad = _token_inputs(seed=40)
    patch_w = L.mgca_attention_weights(_rand(3, 6, seed=43).abs())
    got = L.mgca_token_loss(patch, word, word_w, patch_weights=patch_w, pad_mask=pad, temperature=0.2)
    # with ViT weights MGCA leaves the patch-side attention output unnormalised
    assert _close(got, ref_mgca_token(patch, word, word_w, patch_w, pad, 0.2, False))
    forced = L.mgca_token_loss(patch, word, word_w, patch_weights=patch_w, pad_mask=pad, temperature=0.2,
                               normalize_patch_output=True)
    assert _close(forced, ref_mgca_token(patch, word, word_w, patch_w, pad, 0.2, True))


def test_mgca_token_loss_word_side_only():
    patch, word, word_w, _ = _token_inputs(seed=50)
    got = L.mgca_token_loss(patch, word, word_w, bidirectional=False)
    assert _close(got, _ref_alignment(word, patch, word_w, None, 0.1, True))


def test_sinkhorn_equals_loop_and_leaves_q_alone():
    Q = torch.exp(_rand(7, 4, seed=60) / 0.5)
    before = Q.clone()
    for iterations in (1, 3):
        assert torch.allclose(L.sinkhorn(Q, iterations), ref_sinkhorn(Q, iterations), atol=1e-12, rtol=0)
    assert torch.equal(Q, before)


def test_sinkhorn_marginals():
    k, b = 9, 4
    scores = torch.exp(_rand(k, b, seed=61) / L.MGCA_EPSILON / 10)
    codes = L.sinkhorn(scores.requires_grad_(), iterations=3)
    assert codes.shape == (b, k) and not codes.requires_grad and codes.dtype == torch.float64
    # every sample's assignment is a distribution over the prototypes
    assert torch.allclose(codes.sum(1), torch.ones(b, dtype=codes.dtype), atol=1e-12)
    # iterated to convergence, each prototype receives B/K of the mass (equipartition)
    converged = L.sinkhorn(scores, iterations=500)
    assert torch.allclose(converged.sum(0), torch.full((k,), b / k, dtype=codes.dtype), atol=1e-8)
    assert not torch.allclose(L.sinkhorn(scores, iterations=0).sum(0), converged.sum(0), atol=1e-3)


def test_mgca_proto_loss_equals_loop():
    img, rep = _rand(4, 6, seed=70), _rand(4, 6, seed=71)
    protos = _rand(7, 6, seed=72)
    L.normalize_prototypes_(protos)
    assert torch.allclose(protos.norm(dim=1), torch.ones(7, dtype=protos.dtype))
    got = L.mgca_proto_loss(img, rep, protos)
    assert _close(got, ref_mgca_proto(img, rep, protos, 0.2, 0.05, 3))
    got = L.mgca_proto_loss(img, rep, protos, temperature=0.5, epsilon=0.1, iterations=1)
    assert _close(got, ref_mgca_proto(img, rep, protos, 0.5, 0.1, 1))


# --- gradients -----------------------------------------------------------------------------------------------------


def _grads_ok(loss, *tensors):
    loss.backward()
    for t in tensors:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gradients_flow():
    img, txt = _rand(4, 6, seed=80).requires_grad_(), _rand(4, 6, seed=81).requires_grad_()
    _grads_ok(L.convirt_loss(img, txt), img, txt)

    img, txt = _rand(4, 6, seed=82).requires_grad_(), _rand(4, 6, seed=83).requires_grad_()
    _grads_ok(sum(L.gloria_global_loss(img, txt)), img, txt)

    regions, words, cap_lens = _local_inputs(seed=84)
    words[1, :, 3:] = 0.0  # zero padding after caption 1's 2 words: no NaN from its zero norm
    regions.requires_grad_()
    words.requires_grad_()
    loss0, loss1, _ = L.gloria_local_loss(regions, words, cap_lens, agg="mean")
    _grads_ok(loss0 + loss1, regions, words)
    assert (words.grad[1, :, 3:] == 0).all()  # padding words get no gradient
    assert (words.grad[:, :, 0] == 0).all()  # nor does [CLS]

    img, rep = _rand(4, 6, seed=85).requires_grad_(), _rand(4, 6, seed=86).requires_grad_()
    protos = torch.nn.functional.normalize(_rand(7, 6, seed=87), dim=1).requires_grad_()
    _grads_ok(L.mgca_ita_loss(img, rep) + L.mgca_proto_loss(img, rep, protos), img, rep, protos)

    patch, word, word_w, pad = _token_inputs(seed=88)
    patch.requires_grad_()
    word.requires_grad_()
    _grads_ok(L.mgca_token_loss(patch, word, word_w, pad_mask=pad), patch, word)


def test_float32_runs():
    img, words, cap_lens = _local_inputs()
    loss0, _, _ = L.gloria_local_loss(img.float(), words.float(), cap_lens)
    assert loss0.dtype == torch.float32 and math.isfinite(loss0.item())
