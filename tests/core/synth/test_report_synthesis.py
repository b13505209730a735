"""Synthetic reports (SynCXR): entity inventory, the vocabulary matcher, balanced sampling, writers, verification."""

from __future__ import annotations

import numpy as np
import pytest
from report_fixtures import skewed_prompts_run, tiny_causal_lm, tiny_token_classifier

from echoseg.core.data.manifest import read_manifest
from echoseg.core.errors import UserError
from echoseg.core.synth.entities import (
    NerExtractor,
    VocabularyMatcher,
    attribute_inventory,
    image_entities,
    mentioned_age,
    ner_inventory,
)
from echoseg.core.synth.report_sampling import minimal_tau_max, sample_sets, spread
from echoseg.core.synth.report_writers import LlmWriter, TemplateWriter, instruction, write_verified


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return skewed_prompts_run(tmp_path_factory.mktemp("prompts"))


@pytest.fixture(scope="module")
def inventory(run):
    return attribute_inventory(run, ["train", "val"])


def test_inventory_counts_images_of_the_chosen_splits(run, inventory):
    assert inventory.reports == 40 and inventory.kind == "attributes"  # 48 images, the test patients' 8 left out
    assert inventory.counts["sex"] == {"female": 32, "male": 8}
    assert inventory.counts["age"] == {"60-79": 28, "40-59": 4, "80+": 4, "<40": 4}
    assert inventory.categories[:5] == ["view", "phase", "sex", "age", "quality"]
    table = inventory.table()
    assert list(table.columns) == ["entity", "category", "count"] and table["count"].is_monotonic_decreasing


def test_matcher_reads_every_prompts_report_exactly(run):
    matcher = VocabularyMatcher()
    df = read_manifest(run)
    for _, rows in df.groupby("image"):
        assert matcher.extract_one(rows["report"].iloc[0]) == image_entities(rows.to_dict("records"))


@pytest.mark.parametrize("text, expected", [
    ("An oval left ventricle and a circular myocardium in a sixty-three-year-old woman. A4C, end-systolic frame. "
     "The LA is triangular. Image quality is poor.",
     {("shape_LV", "oval"), ("shape_MYO", "circle"), ("shape_LA", "triangle"), ("age", "60-79"),
      ("sex", "female"), ("view", "4CH"), ("phase", "ES"), ("quality", "poor")}),
    ("Two-chamber view at end of diastole, a man aged 38.", {("view", "2CH"), ("phase", "ED"), ("sex", "male"),
                                                              ("age", "<40")}),
    ("Diastolic frame; human heart.", {("phase", "ED")}),  # no "man" inside "human", no systole inside diastole
    ("An oval shape and a cat.", set()),  # a shape word with no structure in its sentence names nothing
])
def test_matcher_word_boundaries_synonyms_and_shape_pairing(text, expected):
    assert VocabularyMatcher().extract_one(text) == expected


def test_mentioned_age():
    assert mentioned_age("a patient aged eighty-one, later a 50-year-old") == 81
    assert mentioned_age("no age here") is None


def test_balanced_sampling_caps_balances_and_represents_every_category(inventory):
    sampled = sample_sets(inventory, 200, mode="balanced", tau_max=101, seed=3)
    natural = sample_sets(inventory, 200, mode="natural", seed=3)
    freq = sampled.frequencies()
    assert max(freq.values()) <= 101 and sampled.tau_max == 101
    assert all({c for c, _ in s} == set(inventory.counts) for s in sampled.sets)  # every category in every report
    assert set(freq) == set(inventory.entities())  # every entity drawn
    assert sum(sampled.redraws) > 0  # the cap bound: capped entities were re-drawn
    ratio = spread({c: {v: freq[(c, v)] for v in vals} for c, vals in inventory.counts.items()})["max_min_ratio"]
    nat = natural.frequencies()
    natural_ratio = spread({c: {v: nat[(c, v)] for v in vals} for c, vals in inventory.counts.items()})
    assert ratio < natural_ratio["max_min_ratio"]
    assert natural.tau_max is None and max(nat.values()) > 101  # natural draws are not capped


def test_default_cap_is_the_smallest_that_fills_every_category(inventory):
    assert minimal_tau_max(inventory, 200) == 100  # two-valued categories need 100 each
    sampled = sample_sets(inventory, 200, seed=0)
    freq = sampled.frequencies()
    assert sampled.tau_max == 100 and freq[("view", "2CH")] == freq[("view", "4CH")] == 100


def test_sampling_is_seeded(inventory):
    a = sample_sets(inventory, 50, tau_max=40, seed=1)
    assert a.sets == sample_sets(inventory, 50, tau_max=40, seed=1).sets
    assert a.sets != sample_sets(inventory, 50, tau_max=40, seed=2).sets


def test_multi_valued_categories_draw_distinct_entities():
    from echoseg.core.synth.entities import Inventory

    inv = Inventory({"abnormality": {f"a{i}": 10 - i for i in range(6)}, "anatomy": {"lung": 3, "heart": 9}},
                    "ner", 10, multi={"abnormality", "anatomy"})
    sampled = sample_sets(inv, 30, k=3, seed=0)
    assert sampled.per_category == {"abnormality": 3, "anatomy": 2}
    assert all(len(s) == len(set(s)) == 5 for s in sampled.sets)
    assert max(sampled.frequencies().values()) <= sampled.tau_max == 30


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "natural", "tau_max": 5}, "natural sampling"),
    ({"mode": "uniform"}, "--sampling"),
    ({"tau_max": 0}, "--tau-max must be >= 1"),
])
def test_bad_sampling_settings_are_user_errors(inventory, kwargs, message):
    with pytest.raises(UserError, match=message):
        sample_sets(inventory, 200, **kwargs)


def test_a_low_cap_leaves_capped_categories_out_and_counts_them(inventory):
    sampled = sample_sets(inventory, 100, tau_max=30, seed=2)
    freq = sampled.frequencies()
    assert max(freq.values()) == 30 and freq[("view", "2CH")] == freq[("view", "4CH")] == 30
    assert sampled.short["view"] == 40 and "age" not in sampled.short  # 4 age bands x 30 >= 100
    assert sum(any(c == "view" for c, _ in s) for s in sampled.sets) == 60


def test_template_reports_are_exact_in_every_wording(inventory):
    sets = sample_sets(inventory, 60, seed=5).sets + sample_sets(inventory, 40, tau_max=12, seed=6).sets[-20:]
    matcher = VocabularyMatcher()
    rng = np.random.default_rng(0)
    for style in range(TemplateWriter.styles):
        for s in sets:
            text = TemplateWriter.text(s, rng, style)
            assert matcher.extract_one(text) == set(s), (style, text)
    reports, stats = write_verified(sets, TemplateWriter(seed=5), matcher, max_tries=3, batch_size=16)
    assert stats["verified"] == 80 and stats["requeries"] == 0 and stats["tries"] == {"1": 80}
    again, _ = write_verified(sets, TemplateWriter(seed=5), matcher, max_tries=3, batch_size=7)
    assert [r.text for r in reports] == [r.text for r in again]  # deterministic whatever the batch size


@pytest.fixture(scope="module")
def lm(tmp_path_factory, run):
    texts = read_manifest(run)["report"].drop_duplicates().tolist()
    return tiny_causal_lm(tmp_path_factory.mktemp("lm"), texts + [instruction([("view", "4CH")])])


def test_llm_writer_requeries_until_the_stub_extractor_accepts(lm, inventory):
    sets = sample_sets(inventory, 6, seed=0).sets
    writer = LlmWriter(str(lm), max_new_tokens=12, seed=0)
    assert writer.chat and "assistant" in writer.prompt(sets[0]) and "apical" in writer.prompt(sets[0])
    calls = []

    def reject_twice(texts):  # one call per try (one batch): nothing found twice, then exactly the sampled sets
        calls.append(len(texts))
        return [set() for _ in texts] if len(calls) <= 2 else [set(s) for s in sets]

    reports, stats = write_verified(sets, writer, reject_twice, max_tries=4, batch_size=6)
    assert stats["verified"] == 6 and stats["dropped"] == 0
    assert stats["requeries"] == 12 and stats["queries"] == 18 and stats["tries"] == {"3": 6}
    assert [t["queried"] for t in stats["per_try"]] == [6, 6, 6]
    assert all(r.tries == 3 and r.verified for r in reports) and calls == [6, 6, 6]
    assert len({r.seed for r in reports}) == 1  # one seed per (try, batch)


def test_llm_writer_is_seeded_and_plain_prompt_without_chat_template(lm, inventory, tmp_path):
    sets = sample_sets(inventory, 4, seed=0).sets
    a = LlmWriter(str(lm), max_new_tokens=8, seed=3).write([0, 1, 2, 3], sets, 1)
    b = LlmWriter(str(lm), max_new_tokens=8, seed=3).write([0, 1, 2, 3], sets, 1)
    assert a == b and all(text for text, _ in a)
    plain = tiny_causal_lm(tmp_path / "plain", ["an oval view"], chat=False)
    writer = LlmWriter(str(plain), max_new_tokens=4)
    assert not writer.chat and writer.prompt(sets[0]).endswith("\n\nReport:")


def test_random_lm_reports_are_dropped_and_counted(lm, inventory):
    sets = sample_sets(inventory, 5, seed=0).sets
    reports, stats = write_verified(sets, LlmWriter(str(lm), max_new_tokens=10), VocabularyMatcher(), max_tries=2,
                                    batch_size=3)
    assert stats["verified"] + stats["dropped"] == 5 and stats["dropped"] >= 4  # a random model rarely matches
    assert stats["queries"] == sum(r.tries for r in reports) and stats["dropped_missing_entities"] > 0


def test_ner_inventory_with_a_tiny_token_classifier(run, tmp_path):
    texts = read_manifest(run)["report"].drop_duplicates().tolist()
    model = tiny_token_classifier(tmp_path / "ner", texts)
    extractor = NerExtractor(str(model), batch_size=8)
    inv = ner_inventory(texts[:6], extractor, batch_size=4)
    assert inv.kind == "ner" and inv.reports == 6 and inv.multi == set(inv.counts)
    assert set(inv.counts) <= {"abnormality", "non-abnormality", "disease", "non-disease", "anatomy"}
    assert all(v and v == v.lower().strip() for vals in inv.counts.values() for v in vals)
    assert extractor(["", "Left ventricle."])[0] == set()
