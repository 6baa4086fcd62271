"""Check a report's viewers in headless Chromium (Debian's ``chromium``): the page is opened from disk, its
scripts run, and each viewer's ``data-status`` / ``data-lit`` and the page's recorded console errors are read back
from the DOM (:func:`read_states`); a screenshot of the first viewer is saved.

A viewer passes when its status is ``ok`` and it lit at least :data:`MIN_LIT` pixels (WebGL drew the volumes), and
the console recorded no error.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from gtgm.errors import GtgmError

MIN_LIT = 1000
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--use-angle=swiftshader",  # WebGL 2 in software: no GPU needed
    "--enable-unsafe-swiftshader",
    "--allow-file-access-from-files",
    "--virtual-time-budget=20000",
]
VIEWER = re.compile(r'<div class="gtgm-viewer"[^>]*>')
ATTR = re.compile(r'data-([a-z-]+)="([^"]*)"')


def read_states(dom: str) -> dict[str, Any]:
    """``{"viewers": [{"case", "status", "lit"}, ...], "console_errors": str}`` from a page's serialised DOM."""
    viewers = []
    for tag in VIEWER.findall(dom):
        attrs = {k: html.unescape(v) for k, v in ATTR.findall(tag)}
        viewers.append({"case": attrs.get("case"), "status": attrs.get("status"), "lit": int(attrs.get("lit") or 0)})
    body = re.search(r"<body[^>]*>", dom)
    errors = dict(ATTR.findall(body.group(0))).get("console-errors", "") if body else ""
    return {"viewers": viewers, "console_errors": html.unescape(errors)}


def failures(states: dict[str, Any]) -> list[str]:
    """What is wrong with the page (empty: it passes)."""
    out = [] if states["viewers"] else ["no viewer in the page"]
    for v in states["viewers"]:
        if v["status"] != "ok":
            out.append(f"viewer {v['case']}: status {v['status']!r}")
        elif v["lit"] < MIN_LIT:
            out.append(f"viewer {v['case']}: blank canvas ({v['lit']} lit pixels)")
    if states["console_errors"].strip():
        out.append(f"console errors: {states['console_errors'].strip()[:300]}")
    return out


def browser() -> str:
    """The Chromium executable, or an error saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise GtgmError("no Chromium found: install Debian's `chromium` package (apt-get install chromium)")


def check_page(page: str | Path, screenshot: str | Path, timeout: float = 120.0) -> dict[str, Any]:
    """Open ``page`` from disk in headless Chromium; return :func:`read_states` plus ``failures`` and the
    screenshot's path (``screenshot``: a PNG of the viewers alone, ``report.html#viewers-only``)."""
    url = Path(page).resolve().as_uri()
    run = [browser(), *FLAGS]
    dom = subprocess.run([*run, "--dump-dom", url], capture_output=True, text=True, timeout=timeout).stdout
    states = read_states(dom)
    shot = [*run, "--window-size=1100,800", f"--screenshot={Path(screenshot).resolve()}", url + "#viewers-only"]
    subprocess.run(shot, capture_output=True, timeout=timeout)
    return {**states, "failures": failures(states), "screenshot": str(screenshot)}
