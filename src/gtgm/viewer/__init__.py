"""An interactive 3D viewer of image, reference and prediction for ``report.html``, that works opened from disk.

It is NiiVue (``niivue.umd.js``, the npm package ``@niivue/niivue`` 0.69.0, BSD-2-Clause, ``LICENSE-niivue.txt``),
vendored unchanged: users are often offline, so no CDN. The page needs no server:

* the library is copied beside the report (``figures/viewer/niivue.umd.js``) and loaded by a classic
  ``<script src>``, which browsers allow from ``file://``;
* each case is embedded in the page as gzipped NIfTI in base64 (:func:`viewer_case`): the image windowed to uint8,
  reference and prediction as uint8 label maps, all in RAS order and downsampled by an integer step per axis so
  that no axis exceeds :data:`MAX_VOXELS` (nearest voxel: labels stay labels).

Per case the viewer shows three planes (axial, coronal, sagittal; the mouse wheel scrolls slices, a click moves the
crosshair), the overlay (prediction or reference), its opacity, and a toggle per class. Each viewer writes its state
to ``data-status`` (``ok`` once drawn, ``error: ...`` otherwise) and the count of lit pixels to ``data-lit``, so a
headless browser can check the page (``benchmarks/check_report_viewer.py``).
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

ASSETS = Path(__file__).resolve().parent
LIBRARY = "niivue.umd.js"
LICENCE = "LICENSE-niivue.txt"
MAX_VOXELS = 128  # per axis, after downsampling


def downsample_steps(shape: tuple[int, ...], max_voxels: int = MAX_VOXELS) -> list[int]:
    """The integer step per axis, ``ceil(n / max_voxels)``, that keeps every axis of ``shape`` ≤ ``max_voxels``."""
    return [max(1, -(-int(n) // max_voxels)) for n in shape]


def encode_nifti(array: np.ndarray, affine: np.ndarray) -> str:
    """``array`` (uint8, X, Y, Z) with ``affine`` as a gzipped NIfTI-1 file, base64-encoded (ASCII)."""
    img = nib.Nifti1Image(np.asarray(array, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    return base64.b64encode(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)).decode("ascii")


def decode_nifti(text: str) -> nib.Nifti1Image:
    """The image :func:`encode_nifti` wrote (for tests and checks)."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(text)))


def to_uint8(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``image`` clipped to ``window`` (lo, hi) and scaled to 0..255."""
    lo, hi = float(window[0]), float(window[1])
    scaled = (np.clip(np.asarray(image, dtype=np.float32), lo, hi) - lo) / max(hi - lo, 1e-6)
    return np.round(scaled * 255).astype(np.uint8)


def viewer_case(
    title: str,
    image: nib.Nifti1Image,
    reference: np.ndarray,
    prediction: np.ndarray,
    classes: dict[str, str],
    window: tuple[float, float],
) -> dict[str, Any]:
    """One case for :func:`viewer_html`: ``image`` (its array and affine), ``reference`` and ``prediction`` (label
    maps on the image's grid, X, Y, Z) reoriented to RAS, downsampled (:func:`downsample_steps`) and encoded
    (:func:`encode_nifti`); ``classes``: class value (string) -> name; ``window``: the intensity range shown.

    Returns ``{"title", "image", "reference", "prediction", "classes": [[value, name, "#rrggbb"], ...],
    "focus": [fx, fy, fz], "shape", "steps"}``; ``focus`` is the reference's centroid as a fraction of each axis
    (where the crosshair starts), or the centre when the reference is empty."""
    if reference.shape != image.shape[:3] or prediction.shape != image.shape[:3]:
        raise ValueError(
            f"{title}: image {image.shape[:3]}, reference {reference.shape}, prediction {prediction.shape}"
        )
    ornt = nib.orientations.io_orientation(image.affine)  # array axes -> RAS, as nibabel's as_closest_canonical

    def reorient(a: np.ndarray) -> np.ndarray:
        return nib.orientations.apply_orientation(np.asarray(a), ornt)

    affine = image.affine @ nib.orientations.inv_ornt_aff(ornt, image.shape[:3])
    arrays = [reorient(np.asarray(image.dataobj, dtype=np.float32)), reorient(reference), reorient(prediction)]
    steps = downsample_steps(arrays[0].shape)
    box = tuple(slice(None, None, s) for s in steps)
    arrays = [a[box] for a in arrays]
    affine = affine @ np.diag([*steps, 1.0])
    img, ref, pred = to_uint8(arrays[0], window), arrays[1].astype(np.uint8), arrays[2].astype(np.uint8)
    fg = np.argwhere(ref > 0)
    focus = (fg.mean(0) + 0.5) / np.asarray(ref.shape) if len(fg) else np.full(3, 0.5)
    values = sorted({int(v) for v in (*map(int, classes), *np.unique(ref), *np.unique(pred)) if int(v) > 0})
    return {
        "title": title,
        "image": encode_nifti(img, affine),
        "reference": encode_nifti(ref, affine),
        "prediction": encode_nifti(pred, affine),
        "classes": [[v, classes.get(str(v), f"class {v}"), class_colour(v, max(values, default=1))] for v in values],
        "focus": [round(float(f), 4) for f in focus],
        "shape": list(img.shape),
        "steps": steps,
    }


def class_rgb(value: int, largest: int) -> tuple[float, float, float]:
    """The colour of class ``value`` (RGB in [0, 1]) among classes 1..``largest``: matplotlib's tab10 (tab20 beyond
    10 classes). The viewer and the static overlays (:mod:`gtgm.demo.overlays`) both draw with it."""
    import matplotlib

    colours = matplotlib.colormaps["tab10" if largest + 1 <= 11 else "tab20"].colors
    return tuple(colours[(value - 1) % len(colours)][:3])


def class_colour(value: int, largest: int) -> str:
    """:func:`class_rgb` as ``#rrggbb``."""
    r, g, b = class_rgb(value, largest)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def write_assets(folder: str | Path) -> Path:
    """Copy the library and its licence into ``folder``; returns the library's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (LIBRARY, LICENCE):
        shutil.copyfile(ASSETS / name, folder / name)
    return folder / LIBRARY


def viewer_html(cases: list[dict[str, Any]], library: str, radiological: bool = True) -> str:
    """The HTML fragment of the viewers of ``cases`` (:func:`viewer_case`); ``library``: the path of
    ``niivue.umd.js`` relative to the page; ``radiological``: the patient's right on the screen's left."""
    blocks = []
    for i, case in enumerate(cases):
        toggles = "".join(
            f'<label><input type="checkbox" checked data-class="{v}"><span class="sw" style="background:{c}">'
            f"</span>{html.escape(name)}</label> "
            for v, name, c in case["classes"]
        )
        blocks.append(
            f'<div class="gtgm-viewer" id="gtgm-viewer-{i}" data-case="{i}" data-status="loading">'
            f'<h3>{html.escape(case["title"])}</h3><div class="ctl">overlay '
            f'<label><input type="radio" name="show-{i}" value="prediction" checked>prediction</label> '
            f'<label><input type="radio" name="show-{i}" value="reference">reference</label> '
            f'<label>opacity <input type="range" class="opacity" min="0" max="100" value="50"></label> '
            f"{toggles}</div>"
            f'<div class="cv"><canvas id="gtgm-canvas-{i}"></canvas></div></div>'
        )
    data = json.dumps(cases).replace("</", "<\\/")
    script = (ASSETS / "viewer.js").read_text().replace("RADIOLOGICAL", "true" if radiological else "false")
    return (
        f"<style>{STYLE}</style>" + "".join(blocks) + f'<script type="application/json" id="gtgm-viewer-data">{data}'
        f'</script><script src="{html.escape(library)}"></script><script>{script}</script>'
    )


STYLE = (
    ".gtgm-viewer{margin:1em 0}.gtgm-viewer .ctl{font-size:90%;margin:.3em 0}.gtgm-viewer label{margin-right:.6em;"
    "white-space:nowrap}.gtgm-viewer .sw{display:inline-block;width:.9em;height:.9em;margin:0 .25em;"
    "vertical-align:middle}.gtgm-viewer .cv{width:100%;height:420px;background:#000}"
)
