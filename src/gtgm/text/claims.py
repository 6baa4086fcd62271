"""Which statements of a caption the measurements of its box can check, and whether they hold.

Works on free text from any captioner (describe, hf, openai, refined): a caption is split into sentences
(and at ``;``), each sentence into parts (at commas and ``and``), and every part is scanned for statements
the box's measurements (:func:`gtgm.data.measure.measure`) can decide:

=================  ==========================================================================================
kind               statement -> holds when
=================  ==========================================================================================
modality           "CT" / "MR(I)" / "electron microscopy", "EM" -> the box's volume has that modality
position           left / right / midline, anterior / posterior, superior / inferior (cranial / caudal),
                   central / peripheral -> the word :func:`position` gives the box (same word)
ct-dominant        "mostly", "predominantly", "mainly", "dominates"... + a density class -> that class has
                   the largest share of the box's Hounsfield bands
ct-share           a density class + "NN%" -> its measured share is within ±``TOL`` of NN % ("<5%": below 5 %)
mri-background     "almost entirely background" / "signal-free background" -> tissue < 10 %
mri-share          tissue / hyperintense (bright) / hypointense (dark) + "NN%" -> that share within ±``TOL``
mri-homogeneity    homogeneous / mildly heterogeneous / heterogeneous -> tissue SD < 0.5 / < 0.9 / above
mri-level          high / intermediate / low mean -> tissue mean z > 0.5 / between / < -0.5
em-membranes       sparse / moderately dense / dense membranes -> membrane share < 15 % / < 30 % / above;
                   "NN% of (the) voxels" -> membrane share within ±``TOL``
em-cells           "N cell profiles" -> count within ±max(1, 10 %); "D nm across" / "diameter D µm" -> ±max(1, 10 %)
                   (the stated unit converted to the volume's)
em-sections        "sections a-b" -> the box's first and last section
em-orientation     processes across / oblique to / close to the section plane -> persistence > 0.6 / > 0.3 / lower
edges              few / moderately many / many (sharp) edges -> edge share < 5 % / < 15 % / above
symmetry           left-right symmetric (halves alike) / asymmetric -> mirror correlation > 0.8 / < 0.2
structures         no / a single / N (separate) bright structures -> bright component count
=================  ==========================================================================================

A percentage goes with the class or term right after it, else the nearest one before it, else the next one
(:func:`pair_percents`). A statement whose keyword one of the three words before it negates ("not symmetric",
"non-homogeneous") is not read, except CT classes, where "no air" / "without calcification" is an absence claim
(share < 3 %). The thresholds are those the ``describe`` captioner writes with, so its captions hold by
construction unless measurement and text disagree; a sentence from which no statement is read is *not checkable*.
"""

from __future__ import annotations

import re
from typing import Any

TOL = 0.05  # a stated percentage holds within 5 points (describe rounds to 5 %)

CT_CLASSES = {  # pattern -> the Hounsfield band of measure.HU_BANDS it names (longest alternatives first)
    "air-density": r"air[- ]density|\bair\b|\bgas\b",
    "low-density (-900 to -500 HU)": r"low[- ]density|\blung\b",
    "fat-density": r"fat[- ]density|\bfat\b|\bfatty\b|adipose",
    "soft-tissue or fluid density": r"soft[- ]tissue(?: or fluid)?(?: density)?|\bfluid\b|\bwater\b",
    "high-density (100 to 300 HU)": r"high[- ]density|contrast[- ]enhanc\w*|\benhancing\b",
    "bone-like density": r"bone[- ]like(?: density)?|\bbones?\b|\bbony\b|osseous|calcifi\w*|\bcortical\b",
}
DOMINANT = re.compile(r"\b(mostly|predominantly|mainly|largely|chiefly|dominat\w*|majority|primarily)\b", re.I)
PERCENT = re.compile(r"(<\s*)?(\d+(?:\.\d+)?)\s*%")
POSITION_WORDS = {
    "left": ("lr", "left"),
    "right": ("lr", "right"),
    "midline": ("lr", "midline"),
    "anterior": ("ap", "anterior"),
    "posterior": ("ap", "posterior"),
    "superior": ("si", "superior"),
    "cranial": ("si", "superior"),
    "inferior": ("si", "inferior"),
    "caudal": ("si", "inferior"),
    "central": ("radial", "central"),
    "peripheral": ("radial", "peripheral"),
}
NUMBERS = {"no": 0, "one": 1, "a single": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ? and at ;), stripped, empty ones dropped.

    A full stop between digits (a decimal) does not end a sentence."""
    parts = re.split(r"(?<=[.!?])(?<!\d\.)\s+|;\s*", text.strip())
    return [p.strip() for p in parts if p and p.strip(" .")]


def parts(sentence: str) -> list[str]:
    """A sentence cut at commas and at 'and' (outside parentheses): one quantity per part, usually."""
    out, depth, cur = [], 0, ""
    tokens = re.split(r"(\(|\)|,|\band\b)", sentence)
    for tok in tokens:
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth = max(depth - 1, 0)
        if depth == 0 and tok in (",", "and"):
            out.append(cur)
            cur = ""
        else:
            cur += tok
    out.append(cur)
    return [p.strip() for p in out if p.strip()]


def _claim(kind: str, text: str, claim: Any, measured: Any, holds: bool) -> dict[str, Any]:
    return {"kind": kind, "statement": text, "claim": claim, "measured": measured, "holds": bool(holds)}


def _share_holds(stated: re.Match, measured: float) -> bool:
    value = float(stated.group(2)) / 100
    if stated.group(1):  # "<5%"
        return measured < value
    return abs(value - measured) <= TOL + 1e-9


def negated(text: str, start: int) -> bool:
    """Whether one of the three words before ``start`` negates what follows ("not", "no", "never", "non-"...)."""
    words = re.findall(r"[a-z]+", text[max(0, start - 40) : start].lower())[-3:]
    return any(w in ("not", "no", "never", "without", "non", "neither", "nor", "nothing") for w in words)


def _first(pattern: str, text: str) -> re.Match | None:
    """The first match of ``pattern`` (case-insensitive) that no word before it negates."""
    return next((m for m in re.finditer(pattern, text, re.I) if not negated(text, m.start())), None)


def _mentions(text: str, names: dict[str, str]) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` of every mention of the ``names`` (name -> pattern), in order, overlaps dropped
    (the longest first)."""
    found = sorted(
        ((m.start(), -m.end(), name) for name, pat in names.items() for m in re.finditer(pat, text, re.I)),
    )
    out, end = [], -1
    for start, neg_end, name in found:
        if start >= end:
            out.append((start, -neg_end, name))
            end = -neg_end
    return out


def pair_percents(text: str, mentions: list[tuple[int, int, str]]) -> list[tuple[re.Match, str]]:
    """Each percentage of ``text`` with the thing it quantifies: a mention right after it ("10% hyperintense"),
    else the nearest mention before it ("fat-density (40%)", "tissue occupies 80%"), else the nearest mention
    after it with no other percentage between ("about 100% of the patch contains tissue")."""
    pcts = list(PERCENT.finditer(text))
    pairs: dict[int, tuple[int, int, str]] = {}
    for i, p in enumerate(pcts):
        after = [mt for mt in mentions if 0 <= mt[0] - p.end() <= 2]
        if after:
            pairs[i] = after[0]
    for i, p in enumerate(pcts):
        before = [mt for mt in mentions if mt[1] <= p.start()]
        if i not in pairs and before:
            pairs[i] = before[-1]
    used = set(pairs.values())
    for i, p in enumerate(pcts):
        nxt = pcts[i + 1].start() if i + 1 < len(pcts) else len(text)
        after = [mt for mt in mentions if p.end() <= mt[0] < nxt and mt not in used]
        if i not in pairs and after:
            pairs[i] = after[0]
    return [(pcts[i], mt[2]) for i, mt in sorted(pairs.items())]


def check_modality(sentence: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    said = []
    for name, pattern, flags in (
        ("CT", r"\bCT\b|computed tomograph", 0),
        ("MRI", r"\bMRI?\b|magnetic resonance", 0),
        ("EM", r"\bEM\b|(?i:electron microscop)", 0),
    ):
        if any(not negated(sentence, x.start()) for x in re.finditer(pattern, sentence, flags)):
            said.append(name)
    return [_claim("modality", sentence, s, m["modality"], s == m["modality"]) for s in said]


def check_position(sentence: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    s = re.sub(r"left\s*[-–]\s*right|(from )?(left (and|to) right|right (and|to) left)", " ", sentence, flags=re.I)
    s = re.sub(r"\b(left|right)\s+(halves|half|sides?)\b|central section", " ", s, flags=re.I)
    out, seen = [], set()
    for word in re.finditer(r"\b(" + "|".join(POSITION_WORDS) + r")\b", s, re.I):
        axis, value = POSITION_WORDS[word.group(1).lower()]
        if (axis, value) in seen or negated(s, word.start()):
            continue
        seen.add((axis, value))
        got = m["position"][axis]
        out.append(_claim("position", sentence, value, got, got == value))
    return out


def check_ct(sentence: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    shares = m["ct"]
    top = max(shares.values())
    largest = max(shares, key=shares.get)
    out = []
    for part in parts(sentence):
        dominant = DOMINANT.search(part)
        named = [mt for mt in _mentions(part, CT_CLASSES) if not negated(part, mt[0])]
        if dominant and named and not negated(part, dominant.start()):
            band = named[0][2]
            out.append(_claim("ct-dominant", part, band, largest, shares[band] >= top - 1e-9))
    mentions = _mentions(sentence, CT_CLASSES)
    for start, _, band in mentions:  # "no air", "without calcification": an absence claim
        if negated(sentence, start):
            out.append(_claim("ct-share", sentence, f"no {band}", round(shares[band], 3), shares[band] < 0.03))
    for pct, band in pair_percents(sentence, [mt for mt in mentions if not negated(sentence, mt[0])]):
        held = _share_holds(pct, shares[band])
        out.append(_claim("ct-share", sentence, f"{band} {pct.group(0)}", round(shares[band], 3), held))
    return out


MRI_TERMS = {
    "hyperintense": r"hyperintense|\bbright",
    "hypointense": r"hypointense|\bdark",
    "background": r"\bbackground",
    "tissue": r"tissue|\bsignal\b",
}


def check_mri(sentence: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    s = m["mri"]
    tissue = 1 - s["background"]
    values = {"hyperintense": s["bright"], "hypointense": s["dark"], "background": s["background"], "tissue": tissue}
    out = []
    if re.search(r"entirely background|all of it is signal-free|nearly all .*background", sentence, re.I):
        out.append(_claim("mri-background", sentence, "tissue < 10%", round(tissue, 3), tissue < 0.1))
    for pct, name in pair_percents(sentence, _mentions(sentence, MRI_TERMS)):
        value = values[name]
        out.append(_claim("mri-share", sentence, f"{name} {pct.group(0)}", round(value, 3), _share_holds(pct, value)))
    homog = (
        "homogeneous" if s["tissue_std"] < 0.5 else "mildly heterogeneous" if s["tissue_std"] < 0.9 else "heterogeneous"
    )
    said = _first(r"\b(mildly heterogeneous|heterogeneous|homogeneous)\b", sentence)
    if said and re.search(r"signal|tissue|intensity", sentence, re.I):
        out.append(_claim("mri-homogeneity", sentence, said.group(1).lower(), homog, said.group(1).lower() == homog))
    level = "high" if s["tissue_mean"] > 0.5 else "low" if s["tissue_mean"] < -0.5 else "intermediate"
    said = _first(r"\b(high|low|intermediate)\s+(?=on average|mean)|\bof (high|low|intermediate) mean", sentence)
    if said:
        word = (said.group(1) or said.group(2)).lower()
        out.append(_claim("mri-level", sentence, word, level, word == level))
    return out


def _close(stated: float, measured: float, rel: float = 0.1) -> bool:
    return abs(stated - measured) <= max(1.0, rel * abs(measured))


UNITS_NM = {"nm": 1.0, "µm": 1e3, "um": 1e3, "mm": 1e6}


def check_em(sentence: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    s, out = m["em"], []
    if re.search(r"membrane", sentence, re.I):
        density = "sparse" if s["membrane"] < 0.15 else "moderately dense" if s["membrane"] < 0.3 else "dense"
        said = _first(r"\b(sparse|moderately dense|dense)\b", sentence)
        if said:
            word = said.group(1).lower()
            out.append(_claim("em-membranes", sentence, word, density, word == density))
        for pct, _ in pair_percents(sentence, _mentions(sentence, {"membrane": r"membrane"})):
            held = _share_holds(pct, s["membrane"])
            out.append(_claim("em-membranes", sentence, pct.group(0), round(s["membrane"], 3), held))
    count = re.search(r"(\d+) cell profiles|cell profiles[^.]*?,\s*(\d+) in the", sentence, re.I)
    if count:
        n = int(count.group(1) or count.group(2))
        out.append(_claim("em-cells", sentence, f"{n} cell profiles", s["cells"], _close(n, s["cells"])))
    size = re.search(
        r"(\d+(?:\.\d+)?)\s*(nm|µm|um|mm)\b(?:\s+across)?|diameter (?:of )?(\d+(?:\.\d+)?)\s*(nm|µm|um|mm)", sentence
    )
    if size and re.search(r"across|diameter|wide", sentence, re.I):
        d, unit = float(size.group(1) or size.group(3)), size.group(2) or size.group(4)
        own = UNITS_NM.get(str(m.get("unit", "")))
        if own is not None:  # the stated size in the volume's unit
            d = d * UNITS_NM[unit] / own
            out.append(
                _claim("em-cells", sentence, f"diameter {d:g}", round(s["diameter"], 1), _close(d, s["diameter"]))
            )
    sections = re.search(r"sections (\d+)\s*(?:-|–|to)\s*(\d+)", sentence, re.I)
    if sections and "section_range" in m["position"]:
        said, got = [int(sections.group(1)), int(sections.group(2))], list(m["position"]["section_range"])
        out.append(_claim("em-sections", sentence, said, got, said == got))
    p = s["persistence"]
    orient = "across" if p > 0.6 else "oblique" if p > 0.3 else "in-plane"
    for pattern, said in (
        (r"mostly across the sections", "across"),
        (r"obliquely", "oblique"),
        (r"close to the section plane|within the section plane", "in-plane"),
    ):
        if _first(pattern, sentence):
            out.append(_claim("em-orientation", sentence, said, orient, said == orient))
    return out


def check_common(sentence: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    e = m["edges"]
    edges = "few" if e < 0.05 else "moderately many" if e < 0.15 else "many"
    said = _first(r"\b(few|moderately many|many)\b(?: sharp)? edges", sentence)
    if said:
        out.append(_claim("edges", sentence, said.group(1).lower(), edges, said.group(1).lower() == edges))
    sym = m["symmetry"]
    if _first(r"\basymmetric", sentence):
        out.append(_claim("symmetry", sentence, "asymmetric", round(sym, 3), sym < 0.2))
    elif _first(r"\bsymmetric|halves look alike", sentence):
        out.append(_claim("symmetry", sentence, "symmetric", round(sym, 3), sym > 0.8))
    number = r"\b(\d+|no|a single|single|one|two|three|four|five|six)\b"
    said = re.search(number + r"(?:\s+[\w-]+){0,2}?\s+bright structures?", sentence, re.I)
    if said:
        word = said.group(1).lower()
        n = int(word) if word.isdigit() else NUMBERS[word]
        out.append(_claim("structures", sentence, n, m["components"], n == m["components"]))
    return out


def check_caption(text: str, m: dict[str, Any]) -> dict[str, Any]:
    """Every checkable statement of ``text`` against the box's measurements ``m`` (:func:`measure` output,
    with ``position["section_range"]`` for EM).

    Returns ``{"statements": [...], "sentences": n, "not_checkable": [sentences with no statement],
    "score": share of statements that hold (None when there is none)}``.
    """
    family = {"CT": check_ct, "MRI": check_mri, "EM": check_em}.get(m["modality"], check_mri)
    statements, unchecked = [], []
    all_sentences = sentences(text)
    for sentence in all_sentences:
        found = []
        for rule in (check_modality, check_position, family, check_common):
            found += rule(sentence, m)
        statements += found
        if not found:
            unchecked.append(sentence)
    held = [s["holds"] for s in statements]
    return {
        "statements": statements,
        "sentences": len(all_sentences),
        "not_checkable": unchecked,
        "score": sum(held) / len(held) if held else None,
    }
