"""Pre-training pieces: pair texts from manifests, retrieval recall and chance, the WordPiece vocabulary, word
aggregation, gathered objectives and the distributed Sinkhorn (a real 2-process gloo group)."""

from __future__ import annotations

import itertools
import os
import socket

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from echoseg.core.errors import UserError
from echoseg.core.models.vlp_text import aggregate_words, train_wordpiece, word_groups
from echoseg.core.pretrain import losses as L
from echoseg.core.pretrain.data import image_texts, load_pairs
from echoseg.core.pretrain.objectives import hyperparameters
from echoseg.core.pretrain.retrieval import chance_recall, retrieval_recall


def _manifest() -> pd.DataFrame:
    rows = []
    for img, split in (("a.nii", "train"), ("b.nii", "val")):
        for structure, prompt in (("LA", "left atrium"), ("LV", "left ventricle"), ("MYO", "myocardium")):
            rows.append({"image": img, "mask": img + ".gt", "patient": "p1", "split": split, "source": "Real",
                         "structure": structure, "p1": f"{prompt}.", "report": f"report of {img}"})
    return pd.DataFrame(rows)


def test_image_texts_one_row_per_image_structure_prompts_joined_in_lv_myo_la_order():
    df = _manifest()
    rep = image_texts(df, "report", "--data x")
    assert rep["text"].tolist() == ["report of a.nii.", "report of b.nii."] and rep["source"].tolist() == ["real"] * 2
    p1 = image_texts(df, "p1", "--data x")
    assert p1["text"].iloc[0] == "left ventricle. myocardium. left atrium."
    with pytest.raises(UserError, match="no column 'p9'"):
        image_texts(df, "p9", "--data x")
    empty = df.assign(report="")
    with pytest.raises(UserError, match="empty for every image"):
        image_texts(empty, "report", "--data x")


def test_load_pairs_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_pairs([tmp_path / "missing"], "train", "report")


def _brute_recall(img, txt, texts, k):
    sim = img @ txt.T
    i2t = np.mean([any(texts[j] == texts[i] for j in np.argsort(-sim[i])[:k]) for i in range(len(texts))])
    t2i = np.mean([any(texts[j] == texts[i] for j in np.argsort(-sim[:, i])[:k]) for i in range(len(texts))])
    return i2t, t2i


def test_retrieval_recall_counts_identical_texts_as_hits_and_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(9, 5, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(9, 5, generator=g), dim=1)
    texts = ["a", "a", "b", "c", "c", "c", "d", "e", "f"]
    got = retrieval_recall(img, txt, texts)
    for k in (1, 5):
        i2t, t2i = _brute_recall(img.numpy(), txt.numpy(), texts, k)
        assert got[f"i2t_r{k}"] == pytest.approx(i2t) and got[f"t2i_r{k}"] == pytest.approx(t2i)
    perfect = retrieval_recall(img, img, texts)
    assert perfect["i2t_r1"] == 1.0 and perfect["t2i_r1"] == 1.0


def test_chance_recall_equals_exhaustive_average_over_rankings():
    texts = ["a", "a", "b", "c"]
    for k in (1, 2):
        hits = [np.mean([any(texts[j] == texts[q] for j in perm[:k]) for q in range(4)])
                for perm in itertools.permutations(range(4))]
        assert chance_recall(texts, k) == pytest.approx(np.mean(hits))
    assert chance_recall(["x"] * 3, 1) == 1.0


def test_wordpiece_vocabulary_is_deterministic_and_covers_every_character(tmp_path):
    texts = ["Apical four-chamber view at end-diastole.", "Apical two-chamber view, poor image quality."]
    a = train_wordpiece(texts, 100, tmp_path / "a")
    b = train_wordpiece(list(reversed(texts)), 100, tmp_path / "b")
    assert a.get_vocab() == b.get_vocab()
    assert "[UNK]" not in a.tokenize("a poor, apical view")
    small = train_wordpiece(texts, 10, tmp_path / "c")  # no room for whole words: characters only
    assert small.tokenize("view") == ["v", "##i", "##e", "##w"]
    with pytest.raises(UserError):
        train_wordpiece(["", "  "], 100, tmp_path / "d")


def test_word_aggregation_sums_pieces_like_the_authors_loop(tmp_path):
    tok = train_wordpiece(["apical view", "a view"], 12, tmp_path / "t")  # 'apical' splits into pieces
    enc = tok(["apical view", "a view"], padding="max_length", max_length=12, return_tensors="pt")
    cont = torch.tensor([t.startswith("##") for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])])
    groups, n_words = word_groups(enc["input_ids"], enc["attention_mask"], cont)
    feats = torch.randn(2, 12, 3)
    agg = aggregate_words(feats, groups)
    for b in range(2):  # the authors' loop: a token not starting with ## opens a word; stop after [SEP]
        words, bank = [], []
        for t in range(12):
            piece = tok.convert_ids_to_tokens(int(enc["input_ids"][b, t]))
            if piece == "[PAD]":
                break
            if not piece.startswith("##") and bank:
                words.append(torch.stack(bank).sum(0))
                bank = []
            bank.append(feats[b, t])
        words.append(torch.stack(bank).sum(0))
        assert int(n_words[b]) == len(words)
        assert torch.allclose(agg[b, : len(words)], torch.stack(words), atol=1e-6)
        assert (agg[b, len(words):] == 0).all()


def test_loss_settings_are_checked():
    assert hyperparameters("gloria", {"temp1": 3})["temp1"] == 3.0
    with pytest.raises(UserError, match="not a convirt loss setting"):
        hyperparameters("convirt", {"temp1": 3})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sinkhorn_worker(rank: int, world: int, port: int, q: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mine = q.chunk(world, dim=1)[rank]

        def total(t):
            t = t.clone()
            dist.all_reduce(t)
            return t

        torch.save(L.sinkhorn(mine, 3, total, world), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_sinkhorn_equals_sinkhorn_of_the_global_batch(tmp_path):
    q = torch.rand(7, 8, dtype=torch.float64) + 0.1
    out = str(tmp_path / "codes")
    mp.spawn(_sinkhorn_worker, args=(2, _free_port(), q, out), nprocs=2, join=True)
    parts = [torch.load(f"{out}.{r}") for r in range(2)]
    assert torch.allclose(torch.cat(parts), L.sinkhorn(q, 3), atol=1e-12)


def test_gathered_objective_of_one_process_is_the_plain_loss():
    from echoseg.core.models.vlp import VLPOutput
    from echoseg.core.pretrain.objectives import Collective, objective

    g = torch.Generator().manual_seed(3)
    out = VLPOutput(torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g))
    loss, terms = objective(out, "convirt", hyperparameters("convirt"), Collective())
    assert torch.allclose(loss, L.convirt_loss(out.img_global, out.txt_global, 0.1, 0.75))
    assert set(terms) == {"loss"}


def test_image_weights_from_a_local_torchvision_or_timm_file(tmp_path):
    from torchvision.models.resnet import BasicBlock, ResNet

    from echoseg.core.models.vlp import ImageEncoder, load_image_weights

    net = ResNet(BasicBlock, [1, 1, 1, 1])  # a torchvision state dict, classifier included
    torch.save(net.state_dict(), tmp_path / "resnet.pth")
    enc = ImageEncoder("resnet_tiny", 32, None)
    assert load_image_weights(enc, str(tmp_path / "resnet.pth")) == len(enc.backbone.state_dict())
    assert torch.equal(enc.backbone.conv1.weight, net.conv1.weight)
    vit = ImageEncoder("vit_tiny", 32, None)
    torch.save(net.state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="not vit_tiny weights"):
        load_image_weights(vit, str(tmp_path / "wrong.pth"))


@pytest.mark.parametrize(("method", "config"), [("convirt", "tiny"), ("gloria", "tiny"), ("mgca", "tiny"),
                                                ("convirt", "tiny-vit")])
def test_dense_similarity_and_features_for_downstream_evaluation(tmp_path, method, config):
    from echoseg.core.models import build_model

    train_wordpiece(["left ventricle", "myocardium", "left atrium"], 50, tmp_path / "tokenizer")
    model = build_model("vlp", config, assets=tmp_path, method=method)
    images = torch.randn(2, 3, 32, 32)
    sim = model.dense_similarity(images, ["left ventricle", "myocardium", "left atrium"])
    assert sim.shape[:2] == (2, 3) and sim.shape[2] == sim.shape[3] and sim.abs().max() <= 1 + 1e-5
    assert model.image_features(images).shape == (2, model.image.feature_dim)
    assert model.training  # evaluation helpers leave the mode as it was
