"""`eval probe` core: linear probes and fine-tuning of a tiny pretrain run's encoder at patient fractions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from echoseg.cli import main
from echoseg.core.errors import UserError
from echoseg.core.eval.probe import (
    TASKS,
    EvalProbeConfig,
    image_labels,
    load_probe_inputs,
    parse_fractions,
    run_probe,
)
from echoseg.core.runs import Run, run_context
from echoseg.core.stats.pairing import KeySpec, pair_tables, read_table

# Trains a toy pre-training run first (15-25 s on 2 cores): the slow tier (`make test-slow`, run by CI);
# tests/cli/test_pretrain.py runs both commands end to end in the fast tier.
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """20 toy CAMUS patients (13 train, 3 val, 4 test; 4 images each) and a 2-epoch tiny ConVIRT run on them."""
    root = tmp_path_factory.mktemp("probe")
    assert main(["data", "toy", "camus", "--patients", "20", "--size", "48", "--out", str(root / "data")]) == 0
    assert main(["prompts", "build", str(root / "data"), "--out", str(root / "prompts")]) == 0
    assert main(["pretrain", "--method", "convirt", "--config", "tiny", "--data", str(root / "prompts"), "--text",
                 "p3", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--out", str(root / "pre")]) == 0
    return {"data": root / "prompts", "pretrain": root / "pre", "root": root}


def _probe(toy: dict[str, Path], out: Path, **options) -> tuple[dict, Path]:
    """What `eval probe` does: validate, load the inputs, then run the stage in a new run directory."""
    cfg = EvalProbeConfig(run=str(toy["pretrain"]), data=str(toy["data"]), device="cpu", n_boot=200, **options)
    cfg.validate()
    inputs = load_probe_inputs(cfg)
    run = Run.create("eval", "probe", out=out, config=cfg.to_dict(), inputs=cfg.inputs())
    with run_context(run):
        summary = run_probe(cfg, run, inputs, progress=False)
    return summary, out


@pytest.fixture(scope="module")
def linear(toy, tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """Linear probes on view and phase at fractions 0.2 and 1."""
    root = tmp_path_factory.mktemp("linear")
    return {task: _probe(toy, root / task, task=task, fractions="0.2,1") for task in ("view", "phase")}


@pytest.mark.parametrize("task", ["view", "phase"])
def test_linear_probe_beats_chance_with_every_training_patient(linear, task):
    summary, out = linear[task]
    assert summary["mode"] == "linear" and summary["classes"] == list(TASKS[task].classes)
    full = summary["fractions"][-1]
    assert full["fraction"] == 1 and full["scorable"] and full["patients"] == full["of_patients"] == 13
    assert full["auc"]["value"] > 0.75 and full["auc"]["ci_low"] <= full["auc"]["value"] <= full["auc"]["ci_high"]
    assert full["C"] in summary["linear"]["C"]["grid"] and set(full["C_selection"]["val_log_loss"]) == {
        f"{c:g}" for c in summary["linear"]["C"]["grid"]}
    assert summary["images"] == {"train": 52, "val": 12, "test": 16} and summary["left_out"]["test"] == 0
    assert (out / "fractions.png").stat().st_size > 0 and json.loads((out / "run.json").read_text())[
        "status"] == "completed"


def test_per_sample_holds_one_row_per_fraction_and_test_image(linear):
    summary, out = linear["view"]
    table = pd.read_csv(out / "per_sample.csv")
    assert list(table.columns) == ["fraction", "sample_id", "image", "patient", "label", "predicted", "prob_2CH",
                                   "prob_4CH", "prob_true", "correct"]
    assert table.groupby("fraction").size().to_dict() == {0.2: 16, 1.0: 16}
    assert not table.duplicated(["sample_id", "fraction"]).any()
    assert table["sample_id"].str.fullmatch(r"patient\d{4}_[24]CH_E[DS]").all()
    np.testing.assert_allclose(table[["prob_2CH", "prob_4CH"]].sum(axis=1), 1.0)
    truth = np.where(table["label"] == "2CH", table["prob_2CH"], table["prob_4CH"])
    np.testing.assert_allclose(table["prob_true"], truth)
    assert ((table["label"] == table["predicted"]).astype(int) == table["correct"]).all()
    small = summary["fractions"][0]
    assert small["n"] == 16 and small["patients"] == 3 and small["n_train"] == 12


def test_reported_metrics_equal_scikit_learn_on_the_probes_own_predictions(linear):
    summary, out = linear["phase"]
    table = pd.read_csv(out / "per_sample.csv")
    for entry in summary["fractions"]:
        rows = table[table["fraction"] == entry["fraction"]]
        positive = (rows["label"] == "ES").astype(int)
        assert entry["auc"]["value"] == pytest.approx(roc_auc_score(positive, rows["prob_ES"]))
        assert entry["accuracy"]["value"] == pytest.approx(accuracy_score(rows["label"], rows["predicted"]))
        assert entry["f1"]["value"] == pytest.approx(f1_score(positive, (rows["predicted"] == "ES").astype(int)))


def test_subsets_are_nested_seeded_patient_draws_recorded_in_run_json(linear):
    _, out = linear["view"]
    subsets = pd.read_csv(out / "subsets.csv")
    small = set(subsets.loc[subsets["fraction"] == 0.2, "patient"])
    full = set(subsets.loc[subsets["fraction"] == 1.0, "patient"])
    assert len(small) == 3 and len(full) == 13 and small < full
    assert (subsets["images"] == 4).all()  # whole patients: all four of their images
    record = json.loads((out / "run.json").read_text())
    assert [(s["fraction"], s["patients"], s["of_patients"], s["rows"], s["seed"]) for s in record["subsets"]] == [
        (0.2, 3, 13, 12, 0), (1.0, 13, 13, 52, 0)]


def test_a_single_class_subset_is_recorded_as_not_scorable(toy, tmp_path):
    summary, out = _probe(toy, tmp_path / "sex", task="sex", fractions="0.01,1", c=1.0)
    tiny, full = summary["fractions"]
    assert tiny["scorable"] is False and "single class" in tiny["reason"] and tiny["patients"] == 1
    assert "auc" not in tiny and full["scorable"] and full["C"] == 1.0 and "C_selection" not in full
    table = pd.read_csv(out / "per_sample.csv")
    assert set(table["fraction"]) == {1.0}


def test_finetune_trains_backbone_and_head_and_pairs_with_the_linear_run(toy, linear, tmp_path):
    summary, out = _probe(toy, tmp_path / "ft", task="view", fractions="0.2,1", finetune=True, epochs=2,
                          batch_size=16)
    assert summary["mode"] == "finetune" and summary["finetune"]["lr"] == 1e-4
    for entry in summary["fractions"]:
        assert entry["scorable"] and entry["epochs_run"] == 2 and entry["best_epoch"] in (1, 2)
        assert entry["n"] == 16 and 0 <= entry["auc"]["value"] <= 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["fraction"], r["epoch"]) for r in rows] == [(0.2, 1), (0.2, 2), (1.0, 1), (1.0, 2)]
    pairing = pair_tables(read_table(linear["view"][1]), read_table(out), metric="prob_true",
                          key=KeySpec(("sample_id", "fraction")), group_by=("fraction",))
    assert pairing.n_paired == 32 and pairing.only_a == pairing.only_b == 0
    assert sorted(pairing.data["fraction"].unique()) == ["0.2", "1.0"]


def test_image_labels_read_one_label_per_image_and_count_the_unknown():
    rows = []
    for i, (view, age, quality, lv_shape) in enumerate([("2CH", 35, "Good", "oval"), ("4ch", 59, "poor", "circle"),
                                                        ("3CH", 80, "", "oval"), ("4CH", None, "Medium", "")]):
        for structure, shape in (("LV", lv_shape), ("MYO", "triangle")):
            rows.append({"sample_id": f"img{i}_{structure}", "image": f"/d/p{i}/img{i}.png",
                         "mask": f"/d/p{i}/m{i}.png", "structure": structure,
                         "view": view, "age": age, "quality": quality, "shape": shape, "patient": f"p{i}",
                         "split": "train" if i < 3 else "test", "source": "real"})
    manifest = pd.DataFrame(rows)
    view, left = image_labels(manifest, "view")
    assert view["label"].tolist() == [0, 1, 1] and left == {"train": 1, "val": 0, "test": 0}
    assert view["sample_id"].tolist() == ["img0", "img1", "img3"]  # as eval zeroshot names images
    age, left = image_labels(manifest, "age")
    assert [TASKS["age"].classes[k] for k in age["label"]] == ["<40", "40-59", ">=80"] and left["test"] == 1
    shape, left = image_labels(manifest, "shape")  # the LV's shape, not the myocardium's
    assert [TASKS["shape"].classes[k] for k in shape["label"]] == ["oval", "circle", "oval"] and left["test"] == 1
    shape, left = image_labels(manifest, "shape", structure="MYO")
    assert set(shape["label"]) == {TASKS["shape"].classes.index("triangle")} and sum(left.values()) == 0
    quality, _ = image_labels(manifest, "quality")
    assert quality["label"].tolist() == [0, 2, 1]
    with pytest.raises(UserError, match="no 'sex' column"):
        image_labels(manifest, "sex")


def test_fractions_parse_from_a_string_or_a_list():
    assert parse_fractions("1, 0.01,0.1") == [0.01, 0.1, 1.0]
    assert parse_fractions("[0.5, 1]") == parse_fractions([1, 0.5]) == [0.5, 1.0]


@pytest.mark.parametrize(("options", "message"), [
    ({"task": "colour"}, "--task must be one of view, phase, sex, quality, age, shape, got 'colour'"),
    ({"task": "view", "fractions": "0.1,1.5"}, "--fractions must be in (0, 1], got 1.5"),
    ({"task": "view", "fractions": "0,1"}, "--fractions must be in (0, 1], got 0"),
    ({"task": "view", "fractions": "a,b"}, "--fractions: expected numbers"),
    ({"task": "view", "split": "train"}, "--split must be test or val, got 'train'"),
    ({"task": "view", "c": 0.0}, "--c must be > 0"),
    ({"task": "shape", "structure": "RV"}, "--structure must be one of LV, MYO, LA, got 'RV'"),
])
def test_bad_options_raise_one_line_user_errors(options, message):
    with pytest.raises(UserError) as err:
        EvalProbeConfig(run="r", data="d", **options).validate()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_inputs_raise_one_line_user_errors_before_any_run(toy, tmp_path):
    from echoseg.core.models import build_model, get_config
    from echoseg.core.models.artefacts import save_model_info, save_weights

    segmenter = build_model("unet", get_config("unet", "tiny"))
    save_weights(segmenter, tmp_path / "seg" / "checkpoints" / "best.safetensors")
    save_model_info(tmp_path / "seg" / "checkpoints", segmenter, {})
    cases = [({"run": str(tmp_path / "seg")}, "not a pretrain run"),
             ({"run": str(toy["data"])}, "no checkpoints/model.json"),
             ({"data": str(tmp_path / "none")}, "not found"),
             ({"data": str(toy["pretrain"])}, "no manifest.csv")]
    for options, message in cases:
        values = {"run": str(toy["pretrain"]), "data": str(toy["data"]), "task": "view", **options}
        with pytest.raises(UserError, match=message) as err:
            load_probe_inputs(EvalProbeConfig(**values))
        assert "\n" not in str(err.value)
