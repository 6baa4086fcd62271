"""How many times a test set has been read: a ledger beside the fine-tuning cache.

A study reads a test set when it starts its runs (each fine-tuning run scores it when it ends), so a study stopped
early (a time budget, a kill) still counts. ``<cache>/test_reads.json`` holds, per test
set (the group and its sorted test case ids), the study folders that read it, in order; a folder that reports
again (a resumed or re-run study) is not a new read. A sealed test set should be read once: the report states the
count, so that a figure chosen after many reads is seen as such.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gtgm.errors import GtgmError
from gtgm.fsutil import digest, read_json, single_writer, write_json

LEDGER = "test_reads.json"
WAIT_S = 10  # how long a study waits for another one's write of the ledger


def test_set_key(group: str, cases: list[str]) -> str:
    """The ledger's key of a test set: the group and a digest of its sorted case ids."""
    return f"{group}:{digest(sorted(cases))}"


def record_read(cache: str | Path, group: str, cases: list[str], study: str | Path) -> dict[str, Any]:
    """Record that ``study`` read the test set (``group``, ``cases``) of ``cache``; returns ``{"reads": n, "folders":
    [...], "first": this folder is the first reader}`` (``reads``: None when the ledger cannot be written, e.g. a
    read-only cache, with the reason in ``"error"``)."""
    path, folder = Path(cache) / LEDGER, str(Path(study).resolve())
    key = test_set_key(group, cases)
    if not Path(cache).is_dir():
        return {"reads": None, "folders": [], "first": False, "error": f"{path}: no such cache folder"}
    for attempt in range(WAIT_S * 2):  # another study writing the ledger holds its lock for milliseconds
        try:
            with single_writer(path):
                ledger = read_json(path) if path.is_file() else {}
                entry = ledger.setdefault(key, {"group": group, "cases": sorted(cases), "reads": []})
                if folder not in [r["study"] for r in entry["reads"]]:
                    entry["reads"].append({"study": folder, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
                    write_json(path, ledger)
            break
        except (GtgmError, OSError) as exc:
            if attempt == WAIT_S * 2 - 1 or "lock" not in str(exc).lower():
                return {"reads": None, "folders": [], "first": False, "error": f"{path}: {exc}"}
            time.sleep(0.5)
    folders = [r["study"] for r in entry["reads"]]
    return {"reads": len(folders), "folders": folders, "first": folders[0] == folder}
