"""Choose each arm's fine-tuning recipe on validation across study folders, then compare the chosen runs.

    python benchmarks/select_recipe_on_val.py STUDY_A STUDY_B [--more STUDY_C ...] [--group ct_phantom]

For studies made before ``study.recipes`` (one recipe per folder). A new study runs its candidate recipes in one
folder (``study.recipes``) and its report holds the choice; this script is the same decision procedure
(:mod:`gtgm.study.select`) applied across folders: per arm, the folder whose runs have the higher mean best
validation score is chosen, the test figures are read for the chosen runs only, and GTGM's variants are chosen the
same way (``gtgm_best``). Every comparison whose runs come from more than one folder or machine is FLAGGED: the
same configuration moved by 0.12-0.14 Dice between folders in this project's studies.

``--more``: folders of further seeds, each arm run with the recipe chosen here (the choice is not revisited).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gtgm.fsutil import read_json
from gtgm.study.arms import COMPARISONS as ARM_COMPARISONS
from gtgm.study.select import choose_recipes, choose_variant, compare

COMPARISONS = [
    *ARM_COMPARISONS,
    ("supervised", "gtgm"),
    ("gtgm_best", "scratch"),
    ("gtgm_best", "mae"),
    ("gtgm_best", "oracle_text"),
]
VARIANTS = ("gtgm", "gtgm_vicreg", "region_text")  # GTGM's variants: the best on validation is judged


def folder_rows(folder: Path, group: str) -> list[dict]:
    """A study folder's chosen rows of ``group``, each tagged with the folder (as its recipe) and machine."""
    study = read_json(folder / "study.json")
    return [
        {**r, "recipe": str(folder), "folder": str(folder), "machine": study.get("machine", {}).get("host", "")}
        for r in study["results"][group]
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--group", default="ct_phantom")
    ap.add_argument("--more", nargs="*", type=Path, default=[], help="folders of more seeds with the chosen recipes")
    a = ap.parse_args()
    rows, choice = choose_recipes([r for s in a.studies for r in folder_rows(s, a.group)])
    for arm, c in choice.items():
        shown = " / ".join(f"{k} {v:.3f}" for k, v in c["val"].items())
        print(f"{arm:<14} best val {shown} -> {c['chosen']}")
    for folder in a.more:
        rows += [r for r in folder_rows(folder, a.group) if r["arm"] in choice]
    best = choose_variant(choice, VARIANTS)
    if best:
        print(f"GTGM variant chosen on validation: {best}")
        rows += [{**r, "arm": "gtgm_best"} for r in rows if r["arm"] == best]
    for c in compare(rows, COMPARISONS):
        flag = "  FLAGGED: runs from several folders or machines" if c["cross_folder"] else ""
        sd = "" if c["seed_sd"] is None else f", seed SD {c['seed_sd']:.3f} -> {c['seeds_needed']} seeds for +0.05"
        print(
            f"{c['arm']} - {c['base']} (ratio {c['ratio']:g}): {c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}], "
            f"n = {c['n']}{sd}{flag}"
        )


if __name__ == "__main__":
    main()
