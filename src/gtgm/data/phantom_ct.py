"""Synthetic abdominal/thoracic CT phantoms with organ labels (no real CT ships in any package).

Generator, per case (all sizes in mm, RAS+ world, z superior; everything jittered per case):

* grid ``shape`` (default 128 × 128 × 64) with in-plane spacing U(2.6, 3.0) mm and slice spacing
  U(4.0, 5.0) mm, stored LPS-oriented (affine ``diag(-sx, -sy, sz)``) as CT converters write it;
* a smooth random displacement field (±6 mm) warps all shapes so that no two cases share a contour;
* body: an elliptic cylinder (semi-axes a ∈ [125, 160], b ∈ [90, 120], tapering with |z|) with
  2 mm skin (+30 HU), a subcutaneous fat layer 8–28 mm (−100 HU), a 10 mm muscle wall (+50 HU) and
  visceral soft tissue mixing fat and bowel (−60..+40 HU) with a few gas pockets (−900 HU);
* lungs (−850 HU) above the diaphragm dome z_d, the heart (+120 HU, unlabeled) between them;
* liver (+55..+70 HU) on the right under the dome, spleen (+45..+55) on the left, both kidneys
  (+150..+190, contrast) posteriorly, the contrast-filled aorta (+200..+320) left of the spine;
* spine: vertebral bodies (+300) separated by discs (+90), a canal (+15) and spinous processes
  (+600); ribs (+650) as posterior/lateral arcs every ~30 mm in the chest;
* partial-volume blur (Gaussian, σ = 0.6 voxel in-plane, 0.4 through-plane) then Gaussian noise
  σ ∈ [10, 22] HU; stored as int16 HU.

Labels (painted in this order, later wins; one label per voxel): see :data:`CT_LABELS`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CT_LABELS = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "kidney_right",
    4: "kidney_left",
    5: "aorta",
    6: "lungs",
    7: "bone",
}


def _ellipsoid(p: tuple[np.ndarray, ...], center: list[float], radii: list[float]) -> np.ndarray:
    x, y, z = p
    return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + (
        (z - center[2]) / radii[2]
    ) ** 2 <= 1


def _warp(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float) -> list[np.ndarray]:
    """Three smooth displacement fields (mm) of ``shape``: coarse noise, smoothed, upsampled."""
    fields = []
    for _ in range(3):
        coarse = ndimage.gaussian_filter(rng.standard_normal((8, 8, 6)), 1.0)
        coarse *= amplitude / (np.abs(coarse).max() + 1e-8)
        full = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1)
        fields.append(full[tuple(slice(0, s) for s in shape)].astype(np.float32))
    return fields


def make_ct_phantom(
    seed: int, shape: tuple[int, int, int] = (128, 128, 64), spacing: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom: ``(hu int16 (X, Y, Z), labels uint8 (X, Y, Z), affine 4×4)`` (LPS array order).

    ``spacing`` (in-plane, slice) in mm replaces the random spacing, e.g. ``(9, 15)`` puts the whole body
    on a tiny 40 × 40 × 20 grid (tests).
    """
    rng = np.random.default_rng(seed)
    s_xy, s_z = rng.uniform(2.6, 3.0), rng.uniform(4.0, 5.0)
    if spacing is not None:
        s_xy, s_z = spacing
    affine = np.diag([-s_xy, -s_xy, s_z, 1.0])
    affine[:3, 3] = [s_xy * (shape[0] - 1) / 2, s_xy * (shape[1] - 1) / 2, -s_z * (shape[2] - 1) / 2]
    idx = np.indices(shape, dtype=np.float32)
    world = [affine[a, a] * idx[a] + affine[a, 3] for a in range(3)]
    warp = _warp(shape, rng, 6.0)
    ph = _Phantom(tuple(w + d for w, d in zip(world, warp)), rng)
    ph.body()
    ph.chest()
    ph.abdomen()
    ph.skeleton()
    hu = ndimage.gaussian_filter(ph.hu, (0.6, 0.6, 0.4))
    hu += rng.normal(0, rng.uniform(10, 22), shape).astype(np.float32)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), ph.lab, affine


class _Phantom:
    """Paints HU values and labels on warped world coordinates ``p = (x, y, z)`` (mm)."""

    def __init__(self, p: tuple[np.ndarray, ...], rng: np.random.Generator):
        self.p, self.rng = p, rng
        self.a, self.b = rng.uniform(125, 160), rng.uniform(90, 120)
        self.fat = rng.uniform(8, 28)
        self.z_d = rng.uniform(0, 40)  # diaphragm dome height
        self.hu = np.full(p[0].shape, -1000.0, dtype=np.float32)
        self.lab = np.zeros(p[0].shape, dtype=np.uint8)
        self.inner = np.zeros(p[0].shape, dtype=bool)

    def j(self, s: float) -> float:
        return float(self.rng.uniform(-s, s))

    def paint(self, mask: np.ndarray, value: float, label: int) -> None:
        self.hu[mask] = value
        self.lab[mask] = label

    def body(self) -> None:
        (x, y, z), a, b, rng = self.p, self.a, self.b, self.rng
        taper = 1 - 0.08 * (z / 160.0) ** 2
        depth = (1 - np.sqrt((x / (a * taper)) ** 2 + (y / (b * taper)) ** 2)) * np.sqrt(a * b) * taper
        visceral = ndimage.gaussian_filter(rng.standard_normal(x.shape).astype(np.float32), 3.0)
        visceral = -10 + 50 * visceral / (np.abs(visceral).max() + 1e-6)
        self.hu[depth > 0] = 30.0
        self.hu[depth > 2] = -100.0
        self.hu[depth > 2 + self.fat] = 50.0
        self.inner = depth > 12 + self.fat
        self.hu[self.inner] = visceral[self.inner]
        for _ in range(int(rng.integers(3, 8))):  # bowel gas
            c = [rng.uniform(-0.5, 0.5) * a, rng.uniform(0.0, 0.5) * b, rng.uniform(-150, -30)]
            self.hu[_ellipsoid(self.p, c, list(rng.uniform(6, 16, 3))) & self.inner] = -900.0

    def chest(self) -> None:
        a, b, rng, z_d = self.a, self.b, self.rng, self.z_d
        for side in (1, -1):  # right (+x) and left lung
            c = [side * a * rng.uniform(0.38, 0.48), rng.uniform(-0.15, 0.05) * b, z_d + rng.uniform(90, 110)]
            lung = _ellipsoid(self.p, c, [a * rng.uniform(0.33, 0.4), b * rng.uniform(0.6, 0.75), 115])
            self.paint(lung & self.inner, -850.0 + self.j(30), 6)
        heart = _ellipsoid(self.p, [-15, 0.3 * b, z_d + 45], [55, 45, 55])
        self.paint(heart & self.inner, 120.0 + self.j(20), 0)

    def abdomen(self) -> None:
        a, b, rng, z_d, j = self.a, self.b, self.rng, self.z_d, self.j
        liver = _ellipsoid(
            self.p, [a * 0.33 + j(8), j(8), z_d - 45 + j(8)], [a * 0.45 + j(8), b * 0.62 + j(6), 70 + j(8)]
        )
        self.paint(liver & self.inner, rng.uniform(55, 70), 1)
        spleen = _ellipsoid(
            self.p, [-a * 0.55 + j(6), -b * 0.35 + j(6), z_d - 40 + j(8)], [28 + j(4), 42 + j(5), 48 + j(6)]
        )
        self.paint(spleen & self.inner, rng.uniform(45, 55), 2)
        z_k = z_d - 110 + j(10)
        for side, label in ((1, 3), (-1, 4)):
            c = [side * a * 0.36 + j(5), -b * 0.45 + j(5), z_k + j(10)]
            kidney = _ellipsoid(self.p, c, [27 + j(3), 30 + j(3), 52 + j(5)])
            self.paint(kidney & self.inner, rng.uniform(150, 190), label)
        x, y, _ = self.p
        aorta = (x + 12 + j(3)) ** 2 + (y + b * 0.32) ** 2 <= rng.uniform(10, 13) ** 2
        self.paint(aorta & self.inner, rng.uniform(200, 320), 5)

    def skeleton(self) -> None:
        (x, y, z), a, b, rng = self.p, self.a, self.b, self.rng
        y_spine = -b * 0.55
        period, phase = rng.uniform(28, 32), rng.uniform(0, 30)
        in_disc = np.mod(z - phase, period) < 5
        vertebra = x**2 + (y - y_spine) ** 2 <= 18**2
        self.paint(vertebra & ~in_disc, 300.0 + self.j(40), 7)
        self.paint(vertebra & in_disc, 90.0, 0)
        self.paint(x**2 + (y - y_spine + 26) ** 2 <= 7**2, 15.0, 0)  # spinal canal
        spinous = (np.abs(x) <= 5) & (y <= y_spine - 33) & (y >= y_spine - 55) & ~in_disc
        self.paint(spinous, 600.0, 7)
        # ribs: posterior/lateral arcs just inside the muscle wall, sloping down anteriorly
        scale = np.sqrt(a * b)
        ring = np.abs(np.sqrt((x / a) ** 2 + (y / b) ** 2) - (1 - (self.fat + 18) / scale)) * scale <= 4
        anterior = np.sin(np.arctan2(y, x))  # -1 posterior, +1 anterior
        for z_rib in np.arange(self.z_d - 40 + phase, 170, period):
            arc = ring & (anterior < 0.6) & (np.abs(z - (z_rib - 25 * (anterior + 1))) <= 5)
            self.paint(arc, 650.0, 7)
