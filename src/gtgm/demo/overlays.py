"""Prediction-versus-reference overlays: one axial slice per case, so that a reader sees at a glance whether
a segmentation works (the demo's headline figure).

A panel is ``(title, image (X, Y), reference (X, Y), prediction (X, Y))`` on one axial slice of a RAS array
(x = patient's right, y = anterior); it is drawn as two images, reference and prediction, with the label
colours over the grey image, anterior up, in radiological convention by default (the patient's right on the
image's left; ``gtgm.report.orient_lateral``) with R / L marks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gtgm.report import orient_lateral

Panel = tuple[str, np.ndarray, np.ndarray, np.ndarray]


def best_axial_slice(label: np.ndarray) -> int:
    """The z index of ``label`` (X, Y, Z) with the most distinct classes, then the most labelled voxels."""
    scores = [(len(np.unique(label[:, :, z])), int((label[:, :, z] > 0).sum())) for z in range(label.shape[2])]
    return int(max(range(len(scores)), key=lambda z: scores[z]))


def overlay_figure(
    panels: list[Panel], names: list[dict[str, str]], path: str | Path, convention: str = "radiological"
) -> Path:
    """Draw each panel as a row (reference | prediction) with a legend of its classes; returns ``path``.

    ``names`` (one per panel): class value (string) -> name; class 0 (background) is left uncoloured.
    ``convention``: ``radiological`` or ``neurological`` (:func:`gtgm.report.orient_lateral`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from gtgm.viewer import class_rgb

    fig, axes = plt.subplots(len(panels), 2, figsize=(8.5, 4.0 * len(panels)), squeeze=False)
    for row, ((title, image, ref, pred), classes) in enumerate(zip(panels, names)):
        k = max(int(ref.max()), int(pred.max()), max((int(c) for c in classes), default=0)) + 1
        cmap = ListedColormap([class_rgb(i, k - 1) for i in range(max(k, 2))])  # the viewer's colours (0: masked)
        for col, (lab, what) in enumerate(((ref, "reference"), (pred, "prediction"))):
            ax = axes[row, col]
            ax.imshow(image.T, cmap="gray", origin="lower")
            shown = np.ma.masked_where(lab == 0, lab)
            ax.imshow(
                shown.T, cmap=cmap, vmin=0, vmax=max(k - 1, 1), alpha=0.45, origin="lower", interpolation="nearest"
            )
            ax.set_title(f"{title}: {what}", fontsize=9)
            ax.axis("off")
            orient_lateral(ax, convention)
        handles = [Patch(color=cmap(int(c)), label=n) for c, n in classes.items() if int(c) > 0]
        axes[row, 1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
