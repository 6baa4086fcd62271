"""Figures follow the radiological convention by default (patient's right on the image's left) and mark R / L."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gtgm.demo.overlays import overlay_figure  # noqa: E402
from gtgm.report import orient_lateral  # noqa: E402


def _halves(convention: str) -> tuple[float, float]:
    """Mean brightness of the left and right halves of an axial slice whose patient's-right half is bright."""
    img = np.zeros((20, 10))
    img[15:, :] = 1.0  # RAS: large x = the patient's right
    fig = plt.figure(figsize=(4, 2), facecolor="black")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img.T, cmap="gray", origin="lower", aspect="auto")
    ax.axis("off")
    orient_lateral(ax, convention, marks=False)
    fig.canvas.draw()
    px = np.asarray(fig.canvas.buffer_rgba())[..., 0].astype(float)
    plt.close(fig)
    w = px.shape[1]
    return px[:, : w // 2].mean(), px[:, w // 2 :].mean()


def test_radiological_puts_the_patients_right_on_the_images_left():
    left, right = _halves("radiological")
    assert left > 50 > right
    left, right = _halves("neurological")
    assert right > 50 > left
    with pytest.raises(ValueError, match="unknown figure convention"):
        orient_lateral(plt.figure().add_subplot(), "upside-down")


def test_overlay_marks_the_sides(tmp_path, monkeypatch):
    image = np.random.default_rng(0).normal(size=(16, 12))
    ref = np.zeros((16, 12), dtype=np.uint8)
    ref[12:, 4:8] = 1  # liver: the patient's right
    drawn = []
    monkeypatch.setattr(plt, "close", lambda fig: drawn.append(fig))  # keep the figure to inspect it
    path = overlay_figure([("CT case", image, ref, ref)], [{"1": "liver"}], tmp_path / "o.png")
    assert path.is_file() and path.stat().st_size > 0
    for ax in drawn[0].axes[:2]:
        marks = {t.get_text(): t.get_position()[0] for t in ax.texts}
        assert marks["R"] < 0.5 < marks["L"]  # R at the image's left
        assert ax.xaxis_inverted()
