"""Open a report's ``report.html`` from disk in headless Chromium and check its 3D viewers (issue 40).

    python benchmarks/check_report_viewer.py runs/demo/report.html --screenshot runs/demo/figures/viewer.png

Needs Debian's ``chromium`` (``apt-get install chromium``); WebGL 2 runs in software (SwiftShader). Prints each
viewer's state and lit pixels, the page's size (the page itself, and with the vendored library beside it) and the
screenshot's path; exits 1 when a viewer did not draw, its canvas is blank, or the console recorded an error
(:mod:`gtgm.viewer.check`). The baseline of the size ratio is the same report without its viewers (``report.md``'s
images are shared, so the page's own bytes are compared).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from gtgm.viewer import LIBRARY
from gtgm.viewer.check import check_page


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--screenshot", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = check_page(args.page, args.screenshot)
    text = args.page.read_text()
    without = re.sub(r'<h2 id="gtgm-viewers">.*?</script><script>.*?</script>', "", text, flags=re.S)
    library = args.page.parent / "figures" / "viewer" / LIBRARY
    for v in res["viewers"]:
        print(f"viewer {v['case']}: {v['status']}, {v['lit']} lit pixels")
    size, base = len(text.encode()), len(without.encode())
    print(
        f"page {size / 1024:.0f} KiB ({base / 1024:.0f} KiB without the viewers, x{size / max(base, 1):.1f}); "
        f"library {library.stat().st_size / 1024:.0f} KiB beside it; checked in {time.perf_counter() - t0:.0f} s"
    )
    print(f"screenshot: {res['screenshot']}")
    for f in res["failures"]:
        print(f"FAIL: {f}")
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
