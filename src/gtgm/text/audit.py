"""``gtgm audit CAPTIONS CACHE --out DIR``: how much of each caption is true of its box.

Every captioned box is re-measured from the cache exactly as the ``describe`` captioner measures it
(:func:`gtgm.data.boxes.make_patch` -> :func:`gtgm.data.measure.measure`), and every statement of
the caption that a measurement decides is checked (:mod:`gtgm.text.claims`). Works on captions of any backend.

Writes (atomically):

* ``audit.jsonl`` — one line per caption: key, captioner, text, its statements (kind, statement, claim,
  measured, holds), the sentences not checkable, score = share of its statements that hold;
* ``summary.json`` — per captioner: captions, statements, share supported / contradicted, share of sentences
  not checkable, mean caption score, statements by kind, the worst captions;
* ``audit.md`` — the same for people, with the contradictions listed (box and statement).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gtgm.data.measure import box_measurements
from gtgm.data.patches import VolumeCache
from gtgm.errors import GtgmError
from gtgm.fsutil import write_json, write_text
from gtgm.text.captions import check_box, check_fields, read_captions
from gtgm.text.claims import check_caption

WORST = 5


def _locate(records: list[dict[str, Any]], cache: VolumeCache, captions: Path) -> list[int]:
    """The cache index of every record's volume; boxes that are not in the cache are an error naming them."""
    ids = {e["id"]: i for i, e in enumerate(cache.entries)}
    where, bad = [], []
    for rec in records:
        check_fields(rec)
        i = ids.get(rec["volume"])
        shape = cache.entries[i]["shape"] if i is not None else None
        if i is None:
            bad.append(f"{rec['key']} (volume '{rec['volume']}' is not cached)")
        elif any(s < 0 or s >= n for s, n in zip(rec["start"], shape)):
            bad.append(f"{rec['key']} (box start {rec['start']} outside the volume's shape {list(shape)})")
        else:
            try:
                check_box(rec, cache.entries[i])
            except GtgmError as exc:
                raise GtgmError(f"{captions}: {exc}") from None
        where.append(i)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise GtgmError(
            f"{captions}: {len(bad)} of {len(records)} captioned boxes are not in the cache {cache.root}: "
            + "; ".join(bad[:3])
            + more
            + " (caption the cache you audit against, or give the cache the captions were made from)"
        )
    return where


def audit_records(
    records: list[dict[str, Any]], cache: VolumeCache, progress: bool = True, source: Path = Path("captions")
) -> list[dict[str, Any]]:
    """One audit row per caption record (see the module docstring); every box must be in the cache (checked
    before any work; the error names ``source``)."""
    where = _locate(records, cache, source)
    rows = []
    for rec, i in tqdm(list(zip(records, where)), desc="audit", unit="caption", disable=not progress):
        m = box_measurements(cache, i, rec, cache.meta(i))
        rows.append(
            {
                "key": rec["key"],
                "volume": rec["volume"],
                "modality": cache.entries[i]["modality"],
                "captioner": str(rec.get("captioner", "unknown")),
                "text": rec["text"],
                **check_caption(rec["text"], m),
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per captioner: shares supported / contradicted, sentences not checkable, statements by kind, worst captions."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["captioner"]].append(r)
    out = {}
    for name, group in sorted(by.items()):
        statements = [s for r in group for s in r["statements"]]
        held = sum(s["holds"] for s in statements)
        sentences = sum(r["sentences"] for r in group)
        scored = [r for r in group if r["score"] is not None]
        kinds: dict[str, Counter] = defaultdict(Counter)
        for s in statements:
            kinds[s["kind"]]["supported" if s["holds"] else "contradicted"] += 1
        worst = sorted(scored, key=lambda r: (r["score"], r["key"]))[:WORST]
        out[name] = {
            "captions": len(group),
            "statements": len(statements),
            "supported": held / len(statements) if statements else None,
            "contradicted": (len(statements) - held) / len(statements) if statements else None,
            "not_checkable": sum(len(r["not_checkable"]) for r in group) / sentences if sentences else None,
            "mean_caption_score": float(np.mean([r["score"] for r in scored])) if scored else None,
            "captions_without_statements": len(group) - len(scored),
            "by_kind": {k: dict(v) for k, v in sorted(kinds.items())},
            "worst": [_brief(r) for r in worst],
        }
    return out


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    wrong = [s for s in row["statements"] if not s["holds"]]
    return {"key": row["key"], "score": row["score"], "text": row["text"], "contradicted": wrong}


def run_audit(captions: str | Path, cache_root: str | Path, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Audit every caption of ``captions`` against the boxes of the cache at ``cache_root``; writes ``out``."""
    captions, out = Path(captions), Path(out)
    cache = VolumeCache(cache_root)
    cache.verify()
    records = read_captions(captions)
    if not records:
        raise GtgmError(f"{captions}: no captions to audit")
    rows = audit_records(records, cache, progress, captions)
    summary = summarize(rows)
    write_text(out / "audit.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_json(out / "summary.json", summary)
    write_text(out / "audit.md", audit_markdown(summary, rows, captions, Path(cache_root)))
    return {"summary": summary, "rows": rows, "out": str(out)}


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def audit_markdown(
    summary: dict[str, Any], rows: list[dict[str, Any]], captions: Path, cache: Path, limit: int = 30
) -> str:
    lines = [
        "# Caption audit",
        "",
        f"Captions `{captions}`, boxes re-measured from the cache `{cache}`. A statement holds when the box's "
        "measurement agrees with it (gtgm.text.claims lists the statements read and their tolerances).",
        "",
        "| captioner | captions | statements | supported | contradicted | sentences not checkable "
        "| mean caption score |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['captions']} | {s['statements']} | {pct(s['supported'])} | {pct(s['contradicted'])} "
            f"| {pct(s['not_checkable'])} | {pct(s['mean_caption_score'])} |"
        )
    wrong = [(r["key"], s) for r in rows for s in r["statements"] if not s["holds"]]
    lines += ["", f"## Contradictions ({len(wrong)}; the first {min(limit, len(wrong))})", ""]
    if wrong:
        lines += ["| box | kind | statement | claim | measured |", "| --- | --- | --- | --- | --- |"]
        for key, s in wrong[:limit]:
            lines.append(f"| {key} | {s['kind']} | {s['statement']} | {s['claim']} | {s['measured']} |")
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
