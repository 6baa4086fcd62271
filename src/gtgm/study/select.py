"""The study's decision procedure: each arm's recipe chosen on validation, the comparisons read with their intervals
and power, and a reading rule written before the run.

1. **Recipes** (:func:`choose_recipes`): an arm run with several candidate recipes (``study.recipes``) keeps the one
   with the higher mean best validation score over its seeds (ties: the first named). Only the chosen runs are
   compared; the test figures of the others are never shown.
2. **Comparisons** (:func:`compare`): per (arm, baseline), the paired differences per (seed, test case), their
   hierarchical bootstrap interval (:func:`gtgm.study.stats.hierarchical_bootstrap`), the seed-level SD and the
   number of paired seeds that would detect ``DELTA`` with 80 % power (:func:`gtgm.study.stats.seeds_needed`).
3. **Reading rule** (``study.rule``, :data:`READING_RULES`): the sentence the result supports, fixed before the run.

Runs from different study folders or machines are never paired silently: :func:`compare` marks such a comparison
``cross_folder`` (the same configuration moved by 0.12-0.14 Dice between folders in this project's studies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gtgm.study.stats import hierarchical_bootstrap, paired_differences, seed_level_sd, seeds_needed

DELTA = 0.05  # the smallest gain worth detecting: 0.05 mean Dice


def choose_recipes(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Keep, per arm, the rows of its recipe with the highest mean ``val_score`` over seeds.

    ``rows``: study rows with ``arm``, ``recipe`` ('' when the arm had one recipe) and ``val_score``. Returns the
    chosen rows and, per arm, ``{"chosen": name, "val": {recipe: mean best validation score}}``."""
    chosen, choice = [], {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        recipes = list(dict.fromkeys(r.get("recipe", "") for r in mine))
        val = {name: _mean_val([r for r in mine if r.get("recipe", "") == name]) for name in recipes}
        best = max(recipes, key=lambda name: val[name])  # max keeps the first of equal values
        choice[arm] = {"chosen": best, "val": val}
        chosen += [r for r in mine if r.get("recipe", "") == best]
    return chosen, choice


def _mean_val(rows: list[dict[str, Any]]) -> float:
    vals = [r["val_score"] for r in rows if r.get("val_score") is not None]
    return float(np.mean(vals)) if vals else float("-inf")


def choose_variant(choice: dict[str, dict[str, Any]], variants: tuple[str, ...]) -> str | None:
    """Of the ``variants`` present in ``choice``, the one whose chosen recipe has the higher mean validation score
    (ties: the first)."""
    present = [v for v in variants if v in choice]
    return max(present, key=lambda v: choice[v]["val"][choice[v]["chosen"]]) if present else None


def compare(
    rows: list[dict[str, Any]], comparisons: list[tuple[str, str]], delta: float = DELTA
) -> list[dict[str, Any]]:
    """Per (arm, baseline, ratio) both ran: ``{"arm", "base", "ratio", "mean", "lo", "hi", "n", "cases", "seeds",
    "pretrain_seeds", "seed_sd", "seeds_needed", "cross_folder"}``. ``seed_sd``: SD over (pretraining, fine-tuning)
    seed pairs of the per-seed mean difference; ``seeds_needed``: paired seeds that detect ``delta`` with 80 % power
    at a two-sided 5 % level (None with fewer than 2 seeds). ``cross_folder``: the two arms' runs come from more
    than one study folder (``folder``) or machine (``machine``)."""
    out = []
    for arm, base in comparisons:
        for ratio, pairs in sorted(paired_differences(rows, arm, base, with_cases=True).items()):
            if not pairs:  # both ran, but on no common test case (e.g. folders with other test sets)
                continue
            case, seed, pre, diff = (list(x) for x in zip(*pairs))
            b = hierarchical_bootstrap(diff, case, seed, pre)
            sd = seed_level_sd(diff, seed, pre)
            both = [r for r in rows if r["arm"] in (arm, base) and r["ratio"] == ratio]
            places = {(r.get("folder", ""), str(r.get("machine", ""))) for r in both}
            out.append(
                {
                    "arm": arm,
                    "base": base,
                    "ratio": ratio,
                    **b,
                    "seed_sd": sd,
                    "seeds_needed": seeds_needed(sd, delta) if sd is not None else None,
                    "cross_folder": len(places) > 1,
                }
            )
    return out


def _above(c: dict[str, Any] | None) -> bool:
    return c is not None and c["lo"] > 0


def judgeable(c: dict[str, Any]) -> bool:
    """A comparison the decision rule may judge: at least 2 differences and 3 resampled units on some level (a
    percentile interval of 2 units is their range), from one folder and machine."""
    return c.get("n", 0) >= 2 and max(c.get("cases", 0), c.get("seeds", 0)) >= 3 and not c.get("cross_folder")


def _text_premise(found: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The text-premise rule (preset ``study/cpu-text-premise``): region_oracle − scratch and region_text −
    scratch decide; region_text − mae_dense says whether text matches the image-only ceiling. A positive control
    (supervised − scratch) that ran and is not above 0 voids the reading."""
    oracle, text = found.get(("region_oracle", "scratch")), found.get(("region_text", "scratch"))
    if oracle is None or text is None:
        return "The rule cannot be applied: region_oracle − scratch or region_text − scratch was not measured."
    if not all(judgeable(c) for c in (oracle, text)):
        return "The rule cannot be applied: too few pairs, or pairs across folders or machines."
    control = found.get(("supervised", "scratch"))
    if control is not None and not _above(control):
        return (
            "The positive control failed (supervised − scratch not above 0): this protocol cannot show a gain from a "
            "good start here, so no reading of the text arms is made."
        )
    ceiling = found.get(("region_text", "mae_dense"))
    if _above(text):
        tail = (
            " and it is above the image-only ceiling (region_text − mae_dense above 0)"
            if _above(ceiling)
            else "; it is not shown to beat masked image modelling at the same field of view (region_text − "
            "mae_dense not above 0), so the gain is not shown to come from the text"
        )
        return "Text-guided pretraining with describe captions helps: region_text − scratch lies above 0" + tail + "."
    if _above(oracle):
        return (
            "Captions are the bottleneck: region_oracle beats scratch while region_text does not. Caption with a "
            "VLM / LLM backend (gtgm caption --captioner openai / hf) rather than the offline describe captioner."
        )
    return (
        "Text-guided pretraining does not help in this regime: neither region_oracle − scratch nor region_text − "
        "scratch lies above 0, not even with captions that name the organs."
    )


READING_RULES: dict[str, Callable[[dict[tuple[str, str], dict[str, Any]]], str]] = {"text_premise": _text_premise}


def read_by_rule(rule: str, comparisons: list[dict[str, Any]]) -> str:
    """The sentence ``rule`` gives for these comparisons (at their smallest label ratio); '' without a rule."""
    if not rule:
        return ""
    ratio = min((c["ratio"] for c in comparisons), default=None)
    found = {(c["arm"], c["base"]): c for c in comparisons if c["ratio"] == ratio}
    return READING_RULES[rule](found)
