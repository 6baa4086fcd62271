"""The study's decision procedure (gtgm.study.select): recipes chosen on validation, comparisons with power and a
cross-folder flag, the reading rule written before the run, and the test-read ledger."""

from __future__ import annotations

import numpy as np
import pytest

from gtgm.config import load_config
from gtgm.errors import ConfigError
from gtgm.study.ledger import record_read
from gtgm.study.select import choose_recipes, choose_variant, compare, read_by_rule
from gtgm.study.stats import seed_level_sd, seeds_needed

CASES = ("a", "b", "c")


def _row(arm, seed, val, cases, recipe="", pre=None, **extra):
    return {"arm": arm, "seed": seed, "ratio": 0.01, "val_score": val, "cases": dict(zip(CASES, cases)),
            "recipe": recipe, "pretrain_seed": pre, **extra}  # fmt: skip


def test_recipe_chosen_on_validation_never_on_test():
    rows = [
        _row("x", 0, 0.40, [0.9, 0.9, 0.9], "lr_high"),  # best test, worse validation: not chosen
        _row("x", 1, 0.30, [0.9, 0.9, 0.9], "lr_high"),
        _row("x", 0, 0.50, [0.1, 0.1, 0.1], "lr_low"),
        _row("x", 1, 0.30, [0.1, 0.1, 0.1], "lr_low"),
        _row("y", 0, 0.2, [0.5, 0.5, 0.5], "p"),
        _row("y", 0, 0.2, [0.6, 0.6, 0.6], "q"),  # a tie keeps the first named
        _row("z", 0, None, [0.5, 0.5, 0.5]),
    ]
    chosen, choice = choose_recipes(rows)
    assert choice["x"]["chosen"] == "lr_low" and choice["x"]["val"] == {"lr_high": 0.35, "lr_low": 0.4}
    assert choice["y"]["chosen"] == "p" and choice["z"]["chosen"] == ""
    assert {(r["arm"], r["recipe"]) for r in chosen} == {("x", "lr_low"), ("y", "p"), ("z", "")}
    assert choose_variant(choice, ("y", "x", "w")) == "x"


def test_power_from_the_seed_level_spread():
    assert seeds_needed(0.09, 0.05) == 26  # the figure: SD 0.09, +0.05 at 80 % power
    assert seeds_needed(0.01, 0.05) == 2
    # per-seed mean differences 0.0, 0.1, 0.2 (three cases each, spread inside a seed does not count)
    diffs = [0.0, 0.1, -0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.1]
    assert seed_level_sd(diffs, [0, 0, 0, 1, 1, 1, 2, 2, 2]) == pytest.approx(0.1)
    assert seed_level_sd([0.1, 0.2], [0, 0]) is None


def test_comparisons_carry_power_and_flag_runs_from_other_folders():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(4):
        base = rng.uniform(0.3, 0.5, 3)
        rows += [_row("scratch", s, 0.3, base, folder="A"), _row("arm", s, 0.3, base + 0.1 + 0.02 * s, folder="A")]
    (c,) = compare(rows, [("arm", "scratch")])
    assert c["lo"] > 0 and c["mean"] == pytest.approx(0.13)
    assert c["seed_sd"] == pytest.approx(np.std([0.1, 0.12, 0.14, 0.16], ddof=1))
    assert c["seeds_needed"] == seeds_needed(c["seed_sd"], 0.05) and not c["cross_folder"]
    moved = [{**r, "folder": "B"} if r["arm"] == "arm" else r for r in rows]
    assert compare(moved, [("arm", "scratch")])[0]["cross_folder"]
    assert compare(rows, [("absent", "scratch")]) == []
    other_cases = [{**r, "cases": {"z": 0.5}} if r["arm"] == "arm" else r for r in rows]
    assert compare(other_cases, [("arm", "scratch")]) == []  # no common test case: nothing to pair, no traceback


def _premise(oracle, text, ceiling=(-0.1, 0.1), control=None, cross=False):
    found = []
    pairs = [("region_oracle", "scratch", oracle), ("region_text", "scratch", text)]
    pairs += [("region_text", "mae_dense", ceiling)] + ([("supervised", "scratch", control)] if control else [])
    for arm, base, (lo, hi) in pairs:
        found.append({"arm": arm, "base": base, "ratio": 0.01, "lo": lo, "hi": hi, "n": 18, "cases": 6,
                      "seeds": 3, "cross_folder": cross})  # fmt: skip
    return read_by_rule("text_premise", found)


def test_reading_rule_text_premise():
    assert _premise((0.01, 0.1), (-0.02, 0.08)).startswith("Captions are the bottleneck")
    assert "VLM / LLM backend" in _premise((0.01, 0.1), (-0.02, 0.08))
    assert _premise((-0.01, 0.1), (-0.02, 0.08)).startswith("Text-guided pretraining does not help in this regime")
    helps = _premise((0.01, 0.1), (0.01, 0.08))
    assert helps.startswith("Text-guided pretraining with describe captions helps") and "not shown" in helps
    assert "above the image-only ceiling" in _premise((0.01, 0.1), (0.01, 0.08), (0.01, 0.05))
    assert "cannot be applied" in read_by_rule("text_premise", [])
    assert _premise((-0.01, 0.1), (0.01, 0.08), control=(-0.02, 0.1)).startswith("The positive control failed")
    assert _premise((0.01, 0.1), (-0.02, 0.08), control=(0.05, 0.2)).startswith("Captions are the bottleneck")
    assert "pairs across folders" in _premise((0.01, 0.1), (0.01, 0.08), cross=True)
    assert read_by_rule("", []) == ""


def test_test_reads_are_counted_per_study_folder(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    first = record_read(cache, "ct", ["s1", "s0"], tmp_path / "study1")
    assert first == {"reads": 1, "folders": [str((tmp_path / "study1").resolve())], "first": True}
    assert record_read(cache, "ct", ["s0", "s1"], tmp_path / "study1")["reads"] == 1  # the same folder again
    second = record_read(cache, "ct", ["s0", "s1"], tmp_path / "study2")
    assert second["reads"] == 2 and not second["first"]
    assert record_read(cache, "ct", ["s2"], tmp_path / "study2")["reads"] == 1  # another test set
    missing = record_read(tmp_path / "absent" / "cache", "ct", ["s0"], tmp_path / "study3")
    assert missing["reads"] is None and "test_reads.json" in missing["error"]


def test_recipes_name_study_arms_and_recipe_keys_only():
    load_config(None, ["study.recipes={scratch: {a: [finetune.lr=0.01], b: [finetune.lr=0.001]}}"])
    with pytest.raises(ConfigError, match=r"study.recipes': unknown arm"):
        load_config(None, ["study.recipes={nonsense: {a: []}}"])
    with pytest.raises(ConfigError, match=r"study.recipes.scratch.a': finetune.cache is not a fine-tuning recipe"):
        load_config(None, ["study.recipes={scratch: {a: [finetune.cache=x]}}"])
    with pytest.raises(ConfigError, match=r"study.recipes.scratch': a mapping"):
        load_config(None, ["study.recipes={scratch: {}}"])
    with pytest.raises(ConfigError, match=r"recipe names are letters, digits"):  # a name is a run folder
        load_config(None, ["study.recipes={scratch: {../x: []}}"])
    with pytest.raises(ConfigError, match=r"arm_overrides too"):  # they would apply under every candidate
        load_config(None, ["study.recipes={scratch: {a: []}}", "study.arm_overrides={scratch: [finetune.lr=0.1]}"])
