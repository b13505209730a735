"""VQA shape backend: answer normalisation, the green box, load errors, and a tiny offline ViLT model."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.core.errors import UserError
from echoseg.core.prompts.shape import SHAPES
from echoseg.core.prompts.vqa import VQAShapes, boxed_image, normalise_answer, question

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] what is the shape of left ventricular cavity in green box ? "
         "myocardium atrium").split()


def tiny_vilt(folder, labels: list[str]) -> str:
    """Save a randomly initialised ViLT VQA model + processor (tokenizer from a hand-written vocab) offline."""
    from transformers import BertTokenizerFast, ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    processor = ViltProcessor(image_processor=ViltImageProcessor(size={"shortest_edge": 64}, size_divisor=32),
                              tokenizer=BertTokenizerFast(vocab_file=str(vocab)))
    config = ViltConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, image_size=64, patch_size=32, max_position_embeddings=40,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={name: i for i, name in enumerate(labels)})
    out = folder / "model"
    ViltForQuestionAnswering(config).save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize(("answer", "word"), [
    ("triangular", "triangle"), ("Round.", "circle"), ("an elliptical shape", "oval"), ("oval", "oval"),
    ("RECTANGULAR", "rectangle"), ("square", "square"), ("circle", "circle"), ("heart", ""), ("", ""), (None, ""),
    ("green box", ""),
])
def test_normalise_answer(answer, word):
    assert normalise_answer(answer) == word


def test_question_names_the_structure():
    assert question("LV") == "What is the shape of the left ventricular cavity in the green box?"
    assert question("MYO") == "What is the shape of the myocardium in the green box?"


def test_green_box_surrounds_the_mask():
    img = np.full((64, 80), 50, np.uint8)
    mask = np.zeros((64, 80), bool)
    mask[20:30, 30:50] = True
    rgb = boxed_image(img, mask, margin=2)
    assert rgb.shape == (64, 80, 3) and rgb.dtype == np.uint8
    green = (rgb[..., 0] == 0) & (rgb[..., 1] == 255) & (rgb[..., 2] == 0)
    ys, xs = np.nonzero(green)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (18, 31, 28, 51)
    assert not green[22:28, 32:48].any()  # the structure itself is not painted over
    assert (rgb[0, 0] == 50).all()
    assert not ((boxed_image(img, np.zeros_like(mask))[..., 1] == 255).any())
    with pytest.raises(ValueError):
        boxed_image(img, np.zeros((10, 10), bool))


def test_missing_weights_is_a_clear_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        VQAShapes("nobody/no-such-vqa-model-xyz")
    msg = str(info.value)
    assert "--vqa-model nobody/no-such-vqa-model-xyz" in msg and "--allow-download" in msg and "save_pretrained" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        VQAShapes(tmp_path / "empty")


def test_tiny_vilt_answers_are_normalised(tmp_path):
    labels = ["round", "elliptical", "triangular", "square", "rectangular"]
    model = VQAShapes(tiny_vilt(tmp_path, labels), device="cpu", batch_size=2)
    assert not model.generative
    rng = np.random.default_rng(0)
    items = []
    for structure in ("LV", "MYO", "LA"):
        mask = np.zeros((48, 40), bool)
        mask[10:30, 8:30] = True
        items.append((rng.integers(0, 255, (48, 40), dtype=np.uint8), mask, structure))
    out = model.shapes(items)
    assert len(out) == 3
    for raw, word in out:
        assert raw in labels and word in SHAPES and word == normalise_answer(raw)


def test_unknown_answers_give_empty_words(tmp_path):
    model = VQAShapes(tiny_vilt(tmp_path, ["banana", "heart"]), device="cpu")
    mask = np.zeros((32, 32), bool)
    mask[5:20, 5:20] = True
    (raw, word), = model.shapes([(np.zeros((32, 32), np.uint8), mask, "LA")])
    assert raw in ("banana", "heart") and word == ""


def test_build_with_vqa_shapes(tmp_path):
    from echoseg.core.data.toy.camus import write_toy_camus
    from echoseg.core.prompts.build import build, schema_problems

    labels = ["round", "elliptical", "triangular", "square", "banana"]
    model = tiny_vilt(tmp_path / "vqa", labels)
    write_toy_camus(tmp_path / "data", patients=1, size=64, layout="nifti", seed=0)
    res = build(tmp_path / "data", shape="vqa", vqa_model=model, device="cpu", progress=False)
    m = res.manifest
    assert len(m) == 12 and set(m["shape_answer"]) <= set(labels)
    assert (m["shape"] == m["shape_answer"].map(normalise_answer)).all()
    assert res.shape_unknown == int((m["shape_answer"] == "banana").sum())
    assert ((m["p7"] == "") == (m["shape"] == "")).all()
    assert all(schema_problems(r) == [] for r in res.records.values())
