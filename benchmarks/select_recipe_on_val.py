"""Choose each arm's fine-tuning recipe on validation across study folders, then compare the chosen runs.

    python benchmarks/select_recipe_on_val.py STUDY_A STUDY_B [--more STUDY_C ...] [--group ct_phantom]

Each folder is a ``gtgm study`` of the same arms, seeds and test cases with other per-arm recipes (e.g. the
preset's pretrained-encoder recipe and scratch's, ``study.arm_overrides``). Per arm, the folder whose runs have the
higher mean best validation score is chosen (ties: the first); the test figures are read only for the chosen runs,
and the paired differences get the study's hierarchical 95 % interval (test cases × fine-tuning seeds nested in
pretraining seeds). GTGM's variants (``gtgm``, ``gtgm_vicreg``, ``region_text``) are then chosen the same way: the
one whose chosen runs have the higher mean best validation score is ``gtgm_best``, compared with scratch, mae and
oracle_text. What configs/study/cpu-label-limited.yaml and configs/study/cpu-region.yaml pre-register.

``--more``: folders of further seeds, each arm run with the recipe chosen here (the choice is not revisited); their
runs join the chosen ones in the comparisons.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gtgm.study.arms import COMPARISONS as ARM_COMPARISONS
from gtgm.study.stats import hierarchical_bootstrap, paired_differences

# the study's comparisons (gtgm.study.arms), then GTGM's chosen variant against the baselines it is judged by
COMPARISONS = [
    *ARM_COMPARISONS,
    ("supervised", "gtgm"),
    ("gtgm_best", "scratch"),
    ("gtgm_best", "mae"),
    ("gtgm_best", "oracle_text"),
]
VARIANTS = ("gtgm", "gtgm_vicreg", "region_text")  # GTGM's variants: the best on validation is judged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--group", default="ct_phantom")
    ap.add_argument("--more", nargs="*", type=Path, default=[], help="folders of more seeds with the chosen recipes")
    a = ap.parse_args()
    runs = [json.loads((s / "study.json").read_text())["results"][a.group] for s in a.studies]
    rows, chosen_val = [], {}
    for arm in dict.fromkeys(r["arm"] for study in runs for r in study):
        vals = [np.mean([r["val_score"] for r in study if r["arm"] == arm] or [-np.inf]) for study in runs]
        best = int(np.argmax(vals))
        chosen = [r for r in runs[best] if r["arm"] == arm]
        rows += chosen
        chosen_val[arm] = vals[best]
        shown = " / ".join(f"{v:.3f}" for v in vals)
        print(f"{arm:<12} best val {shown} -> {a.studies[best].name}; test", [round(r["score"], 3) for r in chosen])
    for folder in a.more:
        extra = [
            r for r in json.loads((folder / "study.json").read_text())["results"][a.group] if r["arm"] in chosen_val
        ]
        rows += extra
        for arm in dict.fromkeys(r["arm"] for r in extra):
            print(
                f"{arm:<12} more seeds from {folder.name}; test",
                [round(r["score"], 3) for r in extra if r["arm"] == arm],
            )
    variants = [v for v in VARIANTS if v in chosen_val]
    if variants and len(variants) < len(VARIANTS):
        print(f"GTGM variants not in these folders (not compared): {', '.join(sorted(set(VARIANTS) - set(variants)))}")
    if variants:
        best_variant = max(variants, key=lambda v: chosen_val[v])  # ties: the first (gtgm)
        print(
            f"GTGM variant chosen on validation: {best_variant} ("
            + ", ".join(f"{v} {chosen_val[v]:.3f}" for v in variants)
            + ")"
        )
        rows += [{**r, "arm": "gtgm_best"} for r in rows if r["arm"] == best_variant]
    for arm, base in COMPARISONS:
        for ratio, pairs in sorted(paired_differences(rows, arm, base, with_cases=True).items()):
            case, seed, pre, diff = (list(x) for x in zip(*pairs))
            b = hierarchical_bootstrap(diff, case, seed, pre)
            print(f"{arm} - {base} (ratio {ratio:g}): {b['mean']:+.3f} [{b['lo']:+.3f}, {b['hi']:+.3f}], n = {b['n']}")


if __name__ == "__main__":
    main()
