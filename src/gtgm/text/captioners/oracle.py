"""``describe`` with ``caption.content=oracle``: the upper bound of what any captioner could say.

For a patch of a volume that the *oracle cache* holds with labels — a twin of the pretraining cache, made by
``gtgm data preprocess`` of ``gtgm data examples``' ``oracle/`` folder (the unlabelled phantoms with the labels
their generator drew, kept apart so that fine-tuning never reads them) — the caption is the describe captioner's
opening sentence (modality and position) followed by the share of every labelled structure in the box, e.g.
"CT patch located in the superior right region of the scan (peripheral). It holds liver 40%, kidney_right 10%
and bone <5%." Other patches get the full ``describe`` caption. The twin must have been cached with the same
settings (same grid): a volume whose shape differs is refused by name.
"""

from __future__ import annotations

import numpy as np

from gtgm.data.boxes import Patch
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.errors import GtgmError
from gtgm.text.captioners.describe import VERSION, DescribeCaptioner, _join, pct


class OracleCaptioner:
    name = "describe:oracle"
    version = f"{VERSION}-oracle1"

    def __init__(self, oracle_cache: str):
        if not oracle_cache:
            raise GtgmError(
                "caption.content=oracle needs caption.oracle_cache=CACHE: the labelled twin of the pretraining "
                "cache (gtgm data preprocess EXAMPLES/oracle --out CACHE, with the same preset)"
            )
        self.cache = VolumeCache(oracle_cache, labeled=True)
        self.ids = {e["id"]: i for i, e in enumerate(self.cache.entries)}
        self.position, self.full = DescribeCaptioner("position"), DescribeCaptioner()

    def shares(self, patch: Patch) -> dict[str, float] | None:
        """Share of each labelled structure (by name) among the box's voxels inside the volume; None when the
        oracle cache does not hold the patch's volume."""
        i = self.ids.get(patch.volume)
        if i is None:
            return None
        entry = self.cache.entries[i]
        if list(entry["shape"]) != list(patch.volume_shape):
            raise GtgmError(
                f"{self.cache.root}: volume {patch.volume} has shape {entry['shape']} there but "
                f"{patch.volume_shape} in the captioned cache; preprocess the twin with the same settings"
            )
        lo = [max(int(s), 0) for s in patch.start]
        hi = [min(int(s) + n, dim) for s, n, dim in zip(patch.start, patch.size, entry["shape"])]
        box = [max(h - low, 0) for low, h in zip(lo, hi)]
        label = read_patch(self.cache.label(i), lo, box).astype(np.int64)  # the voxels inside the volume
        names = self.cache.index["groups"].get(entry["group"], {}).get("labels", {})
        counts = np.bincount(label.ravel(), minlength=max(map(int, names), default=0) + 1)
        total = max(label.size, 1)
        return {names.get(str(k), f"class {k}"): counts[k] / total for k in range(1, len(counts)) if counts[k]}

    def caption(self, patches: list[Patch], seed: int) -> list[str]:
        texts = []
        for patch in patches:
            shares = self.shares(patch)
            if shares is None:
                texts.append(self.full.caption([patch], seed)[0])
                continue
            first = self.position.caption([patch], seed)[0]
            found = [f"{name} {pct(v)}" for v, name in sorted(((v, n) for n, v in shares.items()), reverse=True)]
            texts.append(f"{first} It holds {_join(found)}." if found else f"{first} It holds no labelled structure.")
        return texts
