"""`eval zeroshot` on toy CAMUS prompts: classification above chance after toy pre-training and at chance for random
initialisations, the per-sample tables `stats wilcoxon` pairs, user task files, bad inputs, and grounding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echoseg.cli import main
from echoseg.core.data.manifest import load_split, read_manifest, write_manifest
from echoseg.core.errors import UserError
from echoseg.core.eval.grounding import choose_thresholds, similarity_maps
from echoseg.core.eval.zeroshot import (
    EvalZeroshotConfig,
    class_embeddings,
    classify,
    image_embeddings,
    load_zeroshot_inputs,
    run_zeroshot,
)
from echoseg.core.eval.zeroshot_tasks import builtin_specs, image_batch, image_labels, load_task, split_cache
from echoseg.core.metrics.classification import auc
from echoseg.core.models import build_model
from echoseg.core.models.artefacts import read_model_info, save_model_info, save_weights
from echoseg.core.prompts.reports import ImageFacts, image_report
from echoseg.core.prompts.templates import Attributes, build_prompts
from echoseg.core.runs import Run, run_context
from echoseg.core.synth.balance import age_bin
from echoseg.core.train.evaluate import EXTRA_COLUMNS, PER_SAMPLE_COLUMNS

# Trains a toy pre-training run first (15-25 s on 2 cores): the slow tier (`make test-slow`, run by CI);
# tests/cli/test_pretrain.py runs both commands end to end in the fast tier.
pytestmark = pytest.mark.slow

RANDOM_SEEDS = range(12)
TEST_IMAGES = 16  # 20 toy patients: 4 test patients x 2 views x 2 phases


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A toy CAMUS prompts run (20 patients, 48 px) and a tiny ConVIRT pre-trained on its p3 texts (12 epochs)."""
    root = tmp_path_factory.mktemp("zeroshot")
    cache = root / "cache"
    assert main(["data", "toy", "camus", "--patients", "20", "--size", "48", "--out", str(root / "data")]) == 0
    assert main(["prompts", "build", str(root / "data"), "--out", str(root / "prompts")]) == 0
    assert main(["pretrain", "--method", "convirt", "--config", "tiny", "--data", str(root / "prompts"), "--text", "p3",
                 "--epochs", "12", "--early-stop-patience", "12", "--batch-size", "16", "--device", "cpu",
                 "--cache-dir", str(cache), "--out", str(root / "pretrain")]) == 0
    retrieval = json.loads((root / "pretrain" / "retrieval.json").read_text())
    assert (retrieval["i2t_r1"] + retrieval["t2i_r1"]) / 2 > retrieval["chance_r1"] + 0.15, retrieval
    return {"root": root, "cache": cache, "data": root / "prompts", "trained": root / "pretrain"}


def evaluate(world: dict[str, Path], out: Path, **options) -> dict:
    """What `echoseg eval zeroshot` does: validate, load the inputs, open the run, run the stage."""
    base = dict(run=str(world["trained"]), data=str(world["data"]), device="cpu", n_boot=200, eval_size=48,
                cache_dir=str(world["cache"]))
    base.update({k: str(v) if isinstance(v, Path) else v for k, v in options.items()})
    cfg = EvalZeroshotConfig(**base)
    cfg.validate()
    inputs = load_zeroshot_inputs(cfg)
    run = Run.create("eval", "zeroshot", out=out, config=cfg.to_dict(), inputs=cfg.inputs())
    with run_context(run):
        return run_zeroshot(cfg, run, inputs)


def random_model(world: dict[str, Path], seed: int):
    """A randomly initialised model: the trained run's architecture and tokenizer, the weights the pretrain stage
    starts from under ``seed``."""
    folder = world["trained"] / "checkpoints"
    torch.manual_seed(seed)
    return build_model("vlp", read_model_info(folder, "--run", world["trained"])["spec"], assets=folder).eval()


def random_run(world: dict[str, Path], seed: int) -> Path:
    """A "pretrain run" holding :func:`random_model` (what `eval zeroshot --run` loads)."""
    out = world["root"] / f"random-{seed}"
    if not out.exists():
        model = random_model(world, seed)
        save_model_info(out / "checkpoints", model, {})
        save_weights(model, out / "checkpoints" / "best.safetensors")
    return out


def random_aucs(world: dict[str, Path], task_names: tuple[str, ...]) -> dict[str, list[float]]:
    """The test-split AUC of each task for each random initialisation of ``RANDOM_SEEDS``."""
    frame = load_split(world["data"], "test").frame
    tasks = {name: load_task(name) for name in task_names}
    images = {name: image_labels(frame, task, "LV", "--data")[0] for name, task in tasks.items()}
    aucs: dict[str, list[float]] = {name: [] for name in task_names}
    for seed in RANDOM_SEEDS:
        model = random_model(world, seed)
        cache = split_cache(frame, model.input_size, world["cache"])
        for name, task in tasks.items():
            rows = np.array([cache.row_of(p) for p in images[name]["image"]])
            _, probs = classify(image_embeddings(model, cache, rows, 32, torch.device("cpu")),
                                class_embeddings(model, task.prompts("LV")), 0.1)
            aucs[name].append(auc(images[name]["label"].to_numpy(), probs))
    return aucs


@pytest.fixture(scope="module")
def view_runs(world) -> dict[str, Path]:
    """Zero-shot view classification of the trained model and of one random initialisation."""
    runs = {"trained": world["root"] / "zs-view-trained", "random": world["root"] / "zs-view-random"}
    evaluate(world, runs["trained"], task="view")
    evaluate(world, runs["random"], task="view", run=random_run(world, 0))
    return runs


@pytest.fixture(scope="module")
def trained_summaries(world, view_runs) -> dict[str, dict]:
    """The trained model's zero-shot summaries of view and phase."""
    phase = evaluate(world, world["root"] / "zs-phase-trained", task="phase")
    return {"view": json.loads((view_runs["trained"] / "summary.json").read_text()), "phase": phase}


def test_pretrained_encoder_is_above_chance_for_view_and_phase(trained_summaries, view_runs):
    """The acceptance check, first half: after toy pre-training, AUC and its 95 % CI sit above 0.5."""
    view, phase = trained_summaries["view"], trained_summaries["phase"]
    for summary in (view, phase):
        assert summary["n"] == TEST_IMAGES and summary["skipped"]["missing"] == 0
        assert summary["auc"]["value"] > 0.75 and summary["auc"]["ci_low"] > 0.5, summary["auc"]
        assert summary["auc"]["ci_low"] <= summary["auc"]["value"] <= summary["auc"]["ci_high"]
        assert {"f1", "accuracy"} <= set(summary) and summary["bootstrap"] == {"n_boot": 200, "seed": 0, "level": 0.95}
        assert summary["model"]["method"] == "convirt" and "pretrain run" in summary["model"]["description"]
    assert view["classes"] == ["2CH", "4CH"] and view["positive"] == "4CH" and phase["classes"] == ["ED", "ES"]
    assert (view_runs["trained"] / "zeroshot.png").stat().st_size > 1000


def test_randomly_initialised_encoders_are_at_chance(world, view_runs, trained_summaries):
    """The acceptance check, second half. One random network is not at chance image by image: its random features
    still separate the toy views, and its random text embeddings pick which way, so its AUC lands anywhere in
    [0, 1]. Chance is the expectation over initialisations: the mean AUC of many seeds is 0.5, far below the
    trained model's."""
    aucs = random_aucs(world, ("view", "phase"))
    for task, values in aucs.items():
        trained = trained_summaries[task]["auc"]["value"]
        assert abs(np.mean(values) - 0.5) < 0.2, (task, values)
        assert min(values) < 0.5 < max(values), (task, values)  # either way round: no learnt direction
        assert trained > np.mean(values) + 0.25, (task, trained, values)
    # the run of seed 0 (through `--run`, the summary and its CI) scores what the first initialisation scored
    summary = json.loads((view_runs["random"] / "summary.json").read_text())
    assert summary["auc"]["value"] == pytest.approx(aucs["view"][0])
    assert summary["auc"]["ci_low"] <= summary["auc"]["value"] <= summary["auc"]["ci_high"]


def test_per_sample_rows_are_images_that_stats_wilcoxon_pairs(world, view_runs, capsys):
    table = pd.read_csv(view_runs["trained"] / "per_sample.csv")
    assert list(table.columns[:7]) == ["sample_id", "image", "task", "label", "predicted", "correct", "prob_true"]
    assert {"prob_2CH", "prob_4CH", "sim_2CH", "sim_4CH", "value", "patient", "view", "phase"} <= set(table.columns)
    assert len(table) == TEST_IMAGES and table["sample_id"].is_unique and table["image"].is_unique
    assert table["sample_id"].str.fullmatch(r"patient\d{4}_[24]CH_E[DS]").all()
    np.testing.assert_allclose(table["prob_2CH"] + table["prob_4CH"], 1.0, atol=1e-9)
    assert ((table["label"] == table["predicted"]).astype(int) == table["correct"]).all()
    assert (table["label"] == table["view"]).all()
    picked = np.where(table["label"] == "2CH", table["prob_2CH"], table["prob_4CH"])
    np.testing.assert_allclose(table["prob_true"], picked)
    out = world["root"] / "wilcoxon-view"
    capsys.readouterr()
    assert main(["stats", "wilcoxon", str(view_runs["random"]), str(view_runs["trained"]), "--metric", "prob_true",
                 "--bootstrap", "100", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    result = pd.read_csv(out / "results.csv").iloc[0]
    assert result["n"] == TEST_IMAGES and result["mean_b"] > result["mean_a"]


def test_builtin_tasks_label_images_from_the_manifest(world):
    frame = load_split(world["data"], "test").frame
    first = frame.drop_duplicates("image").set_index("image")
    lv = frame[frame["structure"] == "LV"].set_index("image")
    for name in builtin_specs():
        task = load_task(name)
        images, skipped = image_labels(frame, task, "LV", "--data")
        assert len(images) == TEST_IMAGES and skipped == {"missing": 0, "unmapped": 0, "unmapped_values": {}}
        truth = [task.class_names[k] for k in images["label"]]
        for image, label in zip(images["image"], truth, strict=True):
            if name == "age":
                assert label == age_bin(first.loc[image, "age"])  # the bins synth balances reports over
            elif name == "sex":
                assert label == {"M": "male", "F": "female"}[first.loc[image, "sex"]]
            elif name == "shape":
                assert label == lv.loc[image, "shape"]
            else:
                assert label.lower() == str(first.loc[image, task.column]).lower()


def test_builtin_prompts_are_echoseg_report_and_template_words():
    def prompts(task, cls, structure="LV"):
        return load_task(task).prompts(structure)[cls]

    assert image_report(ImageFacts(view="2CH")) in prompts("view", "2CH")
    assert build_prompts(Attributes("MYO", view="4CH"))["p2"][0] in prompts("view", "4CH")
    assert image_report(ImageFacts(phase="ES")) in prompts("phase", "ES")
    assert build_prompts(Attributes("LA", view="2CH", phase="ED"))["p3"][0] in prompts("phase", "ED")
    assert image_report(ImageFacts(sex="female")) in prompts("sex", "female")
    assert image_report(ImageFacts(quality="poor")) in prompts("quality", "poor")
    assert image_report(ImageFacts(age=85)) in prompts("age", "80+")
    assert image_report(ImageFacts(age=45)) in prompts("age", "40-59")
    assert image_report(ImageFacts(shapes={"MYO": "triangle"})) in prompts("shape", "triangle", "MYO")
    assert image_report(ImageFacts(shapes={"LV": "oval"})) in prompts("shape", "oval", "LV")


def test_user_task_file_and_left_out_images(world, tmp_path):
    spec = tmp_path / "myo_shape.yaml"
    spec.write_text(
        "column: shape\nper_structure: true\nclasses:\n"
        "  oval:\n    prompts: ['{Structure} of oval shape.', 'The {structure} has an oval shape.']\n"
        "  rectangle: ['{Structure} of rectangle shape.']\n"
    )
    summary = evaluate(world, tmp_path / "run", task=spec, structure="MYO", temperature=0.05, checkpoint="last")
    myo = load_split(world["data"], "test").frame.query("structure == 'MYO'")
    counts = myo["shape"].value_counts()
    others = {k: int(v) for k, v in counts.items() if k not in ("oval", "rectangle")}
    assert others, "the toy MYO shapes of the test split include one in no class"
    assert summary["task"] == "myo_shape" and summary["task_source"] == str(spec)
    assert summary["classes"] == ["oval", "rectangle"] and summary["column"] == "shape"
    assert summary["prompts"]["oval"] == ["Myocardium of oval shape.", "The myocardium has an oval shape."]
    assert summary["n"] == counts.get("oval", 0) + counts.get("rectangle", 0)
    assert summary["skipped"] == {"missing": 0, "unmapped": sum(others.values()), "unmapped_values": others}
    assert summary["temperature"] == 0.05 and summary["structure"] == "MYO"
    assert summary["model"]["checkpoint"] == "last" and "last weights" in summary["model"]["description"]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["inputs"]["task"]["path"] == str(spec.resolve())
    table = pd.read_csv(tmp_path / "run" / "per_sample.csv")
    assert set(table["label"]) <= {"oval", "rectangle"} and len(table) == summary["n"]


def test_missing_values_are_left_out_and_counted(world, tmp_path):
    df = read_manifest(world["data"])
    test_images = df.loc[df["split"] == "test", "image"].drop_duplicates()
    df.loc[df["image"].isin(test_images.iloc[:2]), "sex"] = np.nan
    df.loc[df["image"] == test_images.iloc[2], "view"] = "3CH"
    write_manifest(df, tmp_path / "manifest.csv")
    frame = load_split(tmp_path, "test").frame
    images, skipped = image_labels(frame, load_task("sex"), "LV", "--data")
    assert len(images) == TEST_IMAGES - 2 and skipped["missing"] == 2 and skipped["unmapped"] == 0
    images, skipped = image_labels(frame, load_task("view"), "LV", "--data")
    assert len(images) == TEST_IMAGES - 1 and skipped["unmapped_values"] == {"3ch": 1}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _task_file(tmp_path: Path, text: str) -> str:
    return _write(tmp_path / "task.yaml", text)


TWO = "  a: [first]\n  b: [second]\n"


@pytest.mark.parametrize(("options", "message"), [
    ({"task": "colour"}, "--task 'colour': unknown"),
    ({"task": "missing.yaml"}, "file not found"),
    ({"task": lambda p: _task_file(p, "column: view\nclasses: [unclosed\n")}, "not valid YAML"),
    ({"task": lambda p: _task_file(p, "column: nope\nclasses:\n" + TWO)}, "manifest has no column 'nope'"),
    ({"task": lambda p: _task_file(p, "column: view\nclasses:\n  a: [first]\n")}, "two or more class names"),
    ({"task": lambda p: _task_file(p, "column: view\nkind: x\nclasses:\n" + TWO)}, "unknown key 'kind'"),
    ({"task": lambda p: _task_file(p, "column: view\nclasses:\n  a: []\n  b: [x]\n")}, "non-empty list"),
    ({"task": lambda p: _task_file(p, "column: view\nclasses:\n  a: ['{colour} view']\n  b: [x]\n")},
     "may only use {structure}"),
    ({"task": lambda p: _task_file(p, "column: view\nclasses:\n  a: {values: [2CH], prompts: [x]}\n"
                                   "  b: {values: [2ch], prompts: [y]}\n")}, "in both class 'a' and class 'b'"),
    ({"task": lambda p: _task_file(p, "column: age\nclasses:\n  a: {range: [0, 50], prompts: [x]}\n"
                                   "  b: {range: [40, null], prompts: [y]}\n")}, "overlap"),
    ({"task": lambda p: _task_file(p, "column: age\nclasses:\n  a: {range: [50, 10], prompts: [x]}\n"
                                   "  b: [y]\n")}, "must be below high"),
    ({"task": "view", "prompt": "p1"}, "--prompt applies to --task grounding only"),
    ({"task": "view", "threshold": 0.2}, "--threshold applies to --task grounding only"),
    ({"task": "grounding", "prompt": "p0"}, "grounding takes one fixed prompt column"),
    ({"task": "grounding", "prompt": "random:p3"}, "grounding takes one fixed prompt column"),
    ({"task": "view", "structure": "RV"}, "--structure must be one of"),
    ({"task": "view", "temperature": 0.0}, "--temperature must be > 0"),
    ({"task": "view", "split": "holdout"}, "no rows with split 'holdout'"),
    ({"task": "view", "run": lambda p: p / "nowhere"}, "not found"),
    ({"task": "view", "run": "DATA"}, "not a training run"),
    ({"task": "view", "run": lambda p: _write(p / "gloria.ckpt", "not a checkpoint")},
     "--text-encoder: required"),
])
def test_bad_inputs_are_user_errors_before_any_run(world, tmp_path, options, message):
    options = {k: (v(tmp_path) if callable(v) else v) for k, v in options.items()}
    if options.get("run") == "DATA":
        options["run"] = world["data"]
    cfg = EvalZeroshotConfig(**{"run": str(world["trained"]), "data": str(world["data"]), "device": "cpu",
                                **{k: str(v) if isinstance(v, Path) else v for k, v in options.items()}})
    with pytest.raises(UserError) as err:
        cfg.validate()
        load_zeroshot_inputs(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_run_of_another_model_is_refused(world, tmp_path):
    model = build_model("convlstm", "tiny")
    save_model_info(tmp_path / "student" / "checkpoints", model, {})
    save_weights(model, tmp_path / "student" / "checkpoints" / "best.safetensors")
    cfg = EvalZeroshotConfig(run=str(tmp_path / "student"), data=str(world["data"]), device="cpu")
    with pytest.raises(UserError, match="not a pretrain run"):
        load_zeroshot_inputs(cfg)


def test_grounding_without_a_val_split_needs_a_threshold(world, tmp_path):
    df = read_manifest(world["data"])
    df.loc[df["split"] == "val", "split"] = "train"
    write_manifest(df, tmp_path / "manifest.csv")
    cfg = EvalZeroshotConfig(run=str(world["trained"]), data=str(tmp_path), task="grounding", device="cpu")
    with pytest.raises(UserError, match="give --threshold"):
        load_zeroshot_inputs(cfg)
    cfg.threshold = 0.1
    assert load_zeroshot_inputs(cfg).val_rows is None


class LabelMaps:
    """The two methods of a sample cache that grounding reads masks with, over an array of label maps."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks

    def row_of(self, image: str) -> int:
        return int(image)

    def mask(self, i: int) -> np.ndarray:
        return self.masks[i]


def test_threshold_search_recovers_a_perfect_map():
    rng = np.random.default_rng(0)
    gt = rng.random((6, 16, 16)) > 0.6
    maps = torch.from_numpy(gt * 0.5 + 0.2 + rng.random((6, 16, 16)) * 0.1).float()  # 0.2..0.3 vs 0.7..0.8
    rows = pd.DataFrame({"image": [str(i) for i in range(6)], "structure": ["LV"] * 3 + ["MYO"] * 3,
                         "label": [1, 1, 1, 2, 2, 2]})
    labels = gt.astype(np.uint8) * rows["label"].to_numpy(np.uint8)[:, None, None]
    chosen = choose_thresholds(maps, rows, LabelMaps(labels), 16)
    assert set(chosen) == {"LV", "MYO"}
    for v in chosen.values():
        assert v["val_dice"] == pytest.approx(1.0) and 0.3 <= v["threshold"] < 0.7 and v["val_rows"] == 3


def test_grounding_scores_like_eval_seg_and_pairs_in_stats_wilcoxon(world, capsys):
    first = world["root"] / "ground-name"
    summary = evaluate(world, first, task="grounding")
    table = pd.read_csv(first / "per_sample.csv")
    assert list(table.columns) == [*PER_SAMPLE_COLUMNS, *EXTRA_COLUMNS, "threshold"]
    assert len(table) == 3 * TEST_IMAGES and table["sample_id"].is_unique
    assert set(table["prompt"]) == {"name"}
    assert set(table["prompt_text"]) == {"Left ventricular cavity", "Myocardium", "Left atrium cavity"}
    assert table[["dice", "iou"]].apply(lambda c: c.between(0, 1)).all().all()
    assert set(summary["per_structure"]) == {"LV", "MYO", "LA"} and summary["overall"]["n"] == 3 * TEST_IMAGES
    assert set(summary["thresholds"]) == {"LV", "MYO", "LA"} and summary["threshold_source"].startswith("val")
    for structure, search in summary["threshold_search"].items():
        assert search["grid"][0] <= summary["thresholds"][structure] <= search["grid"][1] and search["val_rows"] == 12
        assert (table.loc[table["structure"] == structure, "threshold"] == summary["thresholds"][structure]).all()
    assert summary["eval_size"] == 48 and (first / "grounding.png").stat().st_size > 1000
    # each row's map is its own text against its own image
    cfg = EvalZeroshotConfig(run=str(world["trained"]), data=str(world["data"]), task="grounding", threshold=0.0)
    inputs = load_zeroshot_inputs(cfg)
    rows = inputs.rows.iloc[[0, 4]].reset_index(drop=True)
    cache = split_cache(inputs.frame, inputs.model.input_size, world["cache"])
    maps = similarity_maps(inputs.model, rows, cache, 8, torch.device("cpu"))
    for i, r in rows.iterrows():
        image = image_batch(cache, np.array([cache.row_of(r["image"])]), inputs.model.mean, inputs.model.std)
        expected = inputs.model.dense_similarity(image, [r["prompt_text"]])[0, 0]
        torch.testing.assert_close(maps[i], expected)
    # a second run (the p1 prompts at a fixed threshold) pairs with the first row by row
    second = world["root"] / "ground-p1"
    evaluate(world, second, task="grounding", prompt="p1", threshold=0.0)
    p1 = pd.read_csv(second / "per_sample.csv")
    assert set(p1["prompt"]) == {"p1"} and p1["prompt_text"].str.endswith("of the heart.").all()
    out = world["root"] / "wilcoxon-ground"
    capsys.readouterr()
    assert main(["stats", "wilcoxon", str(first), str(second), "--group-by", "structure", "--bootstrap", "100",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    results = pd.read_csv(out / "results.csv")
    assert set(results["structure"]) == {"LV", "MYO", "LA"} and (results["n"] == TEST_IMAGES).all()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "config"), [("gloria", "tiny"), ("mgca", "tiny"), ("mgca", "tiny-vit")])
def test_every_method_classifies_and_grounds(world, tmp_path, method, config):
    run = tmp_path / "pretrain"
    assert main(["pretrain", "--method", method, "--config", config, "--data", str(world["data"]), "--text", "p3",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--cache-dir", str(world["cache"]),
                 "--out", str(run)]) == 0
    summary = evaluate(world, tmp_path / "phase", task="phase", run=run)
    assert summary["model"]["method"] == method and summary["n"] == TEST_IMAGES
    assert 0.0 <= summary["auc"]["value"] <= 1.0
    summary = evaluate(world, tmp_path / "grounding", task="grounding", run=run)
    assert summary["overall"]["n"] == 3 * TEST_IMAGES and set(summary["thresholds"]) == {"LV", "MYO", "LA"}
    table = pd.read_csv(tmp_path / "grounding" / "per_sample.csv")
    assert table[["dice", "iou"]].apply(lambda c: c.between(0, 1)).all().all()
