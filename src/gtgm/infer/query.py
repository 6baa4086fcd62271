"""``gtgm query RUN TEXT VOLUME... --out DIR``: where in a volume a sentence matches, with no labels.

Model: the pretraining run's encoder (``encoder.pt``) and projection heads (``heads.pt``; for runs older than it,
the model of ``checkpoints/last.pt``). Text: the run's frozen text encoder, whose identity (name, config digest,
pooling, length) must be the one the run was pretrained with (``encoder.json`` ``text_encoder``).

Per volume: read, reoriented to RAS, resampled to the run's median pretraining voxel size of that modality
(``encoder.json`` ``spacing_by_modality``, or ``spacing``) and normalised as the run's cache
(:func:`gtgm.infer.prepare.prepare_input`); windows of the pretraining patch size on a grid of step ``stride`` (the last
flush with the far edge); each window's embedding u = normalize(image_head(encoder(window))), each prompt's
v = normalize(text_head(text_encoder(prompt))); score = u·v (cosine in the shared space), or with ``negatives``
the CLIP-style probability softmax_j(scale · u·v_j) over queries and negatives (scale = the run's 1/τ).

Map (Q, X, Y, Z): each window's score spread over its voxels with MONAI's Gaussian importance map
(σ = patch/8) and divided by the summed weights, a smooth interpolation of the window-centre scores; resampled
linearly back to the input grid and orientation, so each map has the input's shape and affine.

Writes per volume ``<case>_q<k>.nii.gz`` (one float32 map per prompt), ``<case>.png`` (three orthogonal slices
through each prompt's best window, map overlaid) and ``<case>_top.json`` (top-k windows per prompt: score, box
on the preprocessed grid, centre in world mm, bounding box in input voxels); ``query.json`` lists the prompts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gtgm.config import Config, load_config
from gtgm.data.patches import grid_starts
from gtgm.errors import GtgmError
from gtgm.fsutil import read_json, write_json
from gtgm.schemas import ENCODER_JSON


@dataclass
class QueryModel:
    """A pretraining run ready to score windows against prompts (eval mode)."""

    cfg: Config
    vlp: torch.nn.Module
    text_encoder: Any
    scale: float
    info: dict[str, Any]
    device: torch.device
    _texts: dict[tuple[str, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def patch(self) -> list[int]:
        return list(self.info.get("patch_size") or self.cfg.pretrain.patch_size)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(Q, E) unit vectors; the text embedding is rounded to float16 as the run's text cache stores it.
        Kept per prompt list, so the text encoder runs once for all volumes."""
        for k, t in enumerate(texts):
            if not t.strip():
                raise GtgmError(f"prompt {k + 1} is empty; give a sentence to look for")
        key = tuple(texts)
        if key not in self._texts:
            emb = torch.from_numpy(self.text_encoder.encode(texts).astype(np.float16).astype(np.float32))
            self._texts[key] = F.normalize(self.vlp.text_head(emb.to(self.device)).float(), dim=-1)
        return self._texts[key]

    @torch.no_grad()
    def embed_windows(self, image: np.ndarray, starts: list[list[int]], batch: int, progress: bool) -> torch.Tensor:
        """(W, E) unit image embeddings of the ``patch``-sized windows of (C, X, Y, Z) ``image`` at ``starts``."""
        p, out = self.patch, []
        bar = tqdm(total=len(starts), desc="query", unit="window", disable=not progress)
        for b in range(0, len(starts), batch):
            crops = [image[:, x : x + p[0], y : y + p[1], z : z + p[2]] for x, y, z in starts[b : b + batch]]
            x = torch.from_numpy(np.ascontiguousarray(np.stack(crops))).float().to(self.device)
            out.append(F.normalize(self.vlp.encode_image(x).float(), dim=-1).cpu())
            bar.update(len(crops))
        bar.close()
        return torch.cat(out)


def _run_file(run: Path, name: str) -> Path:
    path = run / name
    if not path.is_file():
        raise GtgmError(f"{run}: no {name}; give the folder of a finished gtgm pretrain run")
    return path


def _head_weights(run: Path) -> dict[str, torch.Tensor]:
    """``heads.pt``, or the heads and temperature of ``checkpoints/last.pt`` for runs that predate it."""
    from gtgm.models.checkpoint import load_checkpoint, load_state_dict

    if (run / "heads.pt").is_file():
        return load_state_dict(run / "heads.pt")
    last = run / "checkpoints" / "last.pt"
    if not last.is_file():
        raise GtgmError(f"{run}: no heads.pt (nor checkpoints/last.pt); re-run gtgm pretrain with this version")
    ckpt = load_checkpoint(last)
    if not isinstance(ckpt.get("model"), dict) or "clip.log_scale" not in (ckpt.get("loss") or {}):
        raise GtgmError(f"{last}: not a gtgm pretraining checkpoint (no model and CLIP temperature)")
    heads = {k: v for k, v in ckpt["model"].items() if "_head." in k}
    heads["clip.log_scale"] = ckpt["loss"]["clip.log_scale"]
    return heads


def load_query_model(
    run: str | Path, device: str = "auto", text_encoder: str | None = None, random_init: bool = False, seed: int = 0
) -> QueryModel:
    """The run's encoder, heads and text encoder; ``random_init``: the same architecture with freshly drawn
    weights (the control a pretrained model must beat), still with the run's text encoder."""
    from gtgm.models.checkpoint import load_state_dict
    from gtgm.models.vlp import build_model
    from gtgm.runtime import resolve_device, to_device
    from gtgm.text.encoders import TextEncoder, encoder_identity, same_encoder

    run = Path(run)
    info = read_json(_run_file(run, "encoder.json"), schema=ENCODER_JSON)
    cfg = load_config(_run_file(run, "config.yaml"))
    if cfg.loss.text_weight == 0:
        raise GtgmError(
            f"{run}: pretrained without the image-text term (loss.text_weight=0), so its text head never learnt "
            "to match images; query a run pretrained with text"
        )
    if text_encoder:
        cfg.text.encoder = text_encoder
    wanted, recorded = encoder_identity(cfg.text), info.get("text_encoder") or {}
    if not same_encoder(recorded, wanted):
        raise GtgmError(
            f"{run}: pretrained with text encoder '{recorded.get('name')}' ({recorded.get('pooling')} pooling, "
            f"{recorded.get('max_length')} tokens), but the query would use '{wanted['name']}' ({wanted['pooling']} "
            f"pooling, {wanted['max_length']} tokens, other weights or config); query with the run's text encoder"
        )
    dev = resolve_device(device)
    torch.manual_seed(seed)
    heads = _head_weights(run)
    lacking = [k for k in ("text_head.fc1.weight", "image_head.fc1.weight", "clip.log_scale") if k not in heads]
    if lacking:
        raise GtgmError(f"{run}: the projection heads lack {', '.join(lacking)}; re-run gtgm pretrain with this gtgm")
    text_dim = int(heads["text_head.fc1.weight"].shape[1])
    vlp = build_model(cfg.model, text_dim)
    scale = float(np.exp(float(heads.pop("clip.log_scale"))))
    if random_init:
        scale = 1 / cfg.loss.temperature
    else:
        prefix = getattr(vlp.encoder, "segmenter_prefix", "")
        enc = {k[len(prefix) :]: v for k, v in load_state_dict(_run_file(run, "encoder.pt")).items()}
        missing, unexpected = vlp.load_state_dict(
            {**{f"encoder.{k}": v for k, v in enc.items()}, **heads}, strict=False
        )
        if missing or unexpected:
            wrong = (missing or unexpected)[0]
            raise GtgmError(f"{run}: encoder.pt / heads.pt do not fit the run's config.yaml (e.g. {wrong})")
    return QueryModel(cfg, to_device(vlp, dev).eval(), TextEncoder(cfg.text, str(dev)), min(scale, 100.0), info, dev)


def window_starts(shape: list[int], patch: list[int], stride: list[int], name: str) -> list[list[int]]:
    """Window starts on the preprocessed grid (:func:`grid_starts`); a volume smaller than a window is an error."""
    if any(n < p for n, p in zip(shape, patch)):
        raise GtgmError(
            f"{name}: {list(shape)} voxels after preprocessing, smaller than one query window {list(patch)} "
            "(the run's pretraining patch); give a larger volume or a finer --spacing"
        )
    return grid_starts(list(shape), list(patch), list(stride))


def blend(scores: np.ndarray, starts: list[list[int]], patch: list[int], shape: list[int]) -> np.ndarray:
    """(Q, X, Y, Z) map from (W, Q) window scores: Gaussian-weighted (σ = patch/8) average of the windows
    covering each voxel."""
    from monai.data.utils import compute_importance_map

    g = compute_importance_map(tuple(patch), mode="gaussian", sigma_scale=0.125, device="cpu").numpy()
    acc = np.zeros((scores.shape[1], *shape), dtype=np.float64)
    weight = np.zeros(shape, dtype=np.float64)
    for (x, y, z), s in zip(starts, scores):
        sl = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
        acc[(slice(None), *sl)] += s[:, None, None, None] * g
        weight[sl] += g
    return (acc / np.maximum(weight, 1e-12)).astype(np.float32)


def score_windows(
    qm: QueryModel,
    image: np.ndarray,
    texts: list[str],
    negatives: list[str],
    stride: list[int],
    batch: int = 8,
    progress: bool = True,
    name: str = "volume",
) -> tuple[np.ndarray, list[list[int]]]:
    """(W, Q) window scores of the prompts ``texts`` and the windows' starts (see the module docstring)."""
    starts = window_starts(list(image.shape[1:]), qm.patch, stride, name)
    u = qm.embed_windows(image, starts, batch, progress)
    v = qm.embed_texts(texts + negatives).cpu()
    sim = u @ v.T
    if negatives:
        sim = torch.softmax(qm.scale * sim, dim=1)
    return sim[:, : len(texts)].numpy(), starts


def query_preprocessing(qm: QueryModel, modality: str, spacing: list[float] | None) -> dict[str, Any]:
    """``prepare_input``'s settings for a volume of ``modality``: the normalisation of the cache the run was
    pretrained on (``encoder.json`` ``preprocess``; older runs: the run's config) at :func:`query_spacing`."""
    pre = qm.info.get("preprocess") or qm.cfg.to_dict()["preprocess"]
    target = query_spacing(qm, modality, spacing)
    return {"preprocess": {**pre, "target_spacing": target}, "modality": modality, "spacing_given": bool(spacing)}


def query_spacing(qm: QueryModel, modality: str, spacing: list[float] | None) -> list[float] | None:
    """The voxel size volumes are resampled to: ``spacing``, else the run's median pretraining spacing of
    ``modality`` (``encoder.json``), else of all its volumes. A modality the run never saw is a warning on
    stderr (EM without ``spacing``: an error, its units are not millimetres); a ``spacing`` more than 2× off the
    run's on any axis is a warning too."""
    if spacing and (len(spacing) != 3 or any(not s > 0 for s in spacing)):
        raise GtgmError(f"--spacing needs 3 positive sizes (x, y, z), got {spacing}")
    by = qm.info.get("spacing_by_modality") or {}
    seen = ", ".join(sorted(by))
    own = by.get(modality) or qm.info.get("spacing")
    if by and modality not in by:  # a modality the run never saw: say so (EM's units are not even millimetres)
        millimetres = [v for k, v in by.items() if k != "EM"]
        if not spacing and (modality == "EM" or not millimetres):
            raise GtgmError(
                f"the run was pretrained on {seen} only, and {modality} volumes are measured in other units; "
                "give --spacing (in the volumes' own units) to query them anyway"
            )
        own = [float(v) for v in np.median(np.asarray(millimetres, dtype=float), axis=0)] if millimetres else None
        warn(f"the run was pretrained on {seen} only, never on {modality}: the maps may mean little")
    if not spacing:
        if by and modality not in by:
            warn(f"{modality} volumes are resampled to {own} mm, the median voxel size of the run's volumes")
        return own
    if own and any(not 0.5 <= s / o <= 2.0 for s, o in zip(spacing, own)):
        warn(f"--spacing {list(spacing)} is more than 2x off the {own} the run was pretrained at on some axis")
    return [float(s) for s in spacing]


def warn(message: str) -> None:
    """One ``[query] warning:`` line on stderr."""
    print(f"[query] warning: {message}", file=sys.stderr)


def box_geometry(start: list[int], patch: list[int], restore: Any, ref_affine: np.ndarray, shape: tuple) -> dict:
    """A window on the preprocessed grid -> its centre in world mm and its bounding box in input voxels."""
    work = np.asarray(restore.geometry["work_affine"], dtype=float)
    lo, hi = np.asarray(start, float) - 0.5, np.asarray(start, float) + np.asarray(patch) - 0.5
    corners = np.array([[(lo, hi)[b >> k & 1][k] for k in range(3)] for b in range(8)])
    world = corners @ work[:3, :3].T + work[:3, 3]
    vox = (world - ref_affine[:3, 3]) @ np.linalg.inv(ref_affine[:3, :3]).T
    centre = (np.asarray(start) + (np.asarray(patch) - 1) / 2) @ work[:3, :3].T + work[:3, 3]
    first = np.clip(np.floor(vox.min(0) + 0.5), 0, np.asarray(shape) - 1).astype(int)
    last = np.clip(np.ceil(vox.max(0) - 0.5), 0, np.asarray(shape) - 1).astype(int)
    return {"centre_mm": [round(float(c), 2) for c in centre], "input_voxels": [first.tolist(), last.tolist()]}


def top_windows(
    scores: np.ndarray, starts: list[list[int]], patch: list[int], k: int, restore: Any, ref: Any
) -> list[list[dict[str, Any]]]:
    """Per prompt (column of the (W, Q) ``scores``) its ``k`` best windows: score, start and size on the
    preprocessed grid, centre in world mm and bounding box in the input's voxels (:func:`box_geometry`)."""
    out = []
    for q in range(scores.shape[1]):
        best = np.argsort(-scores[:, q], kind="stable")[:k]
        out.append(
            [
                {
                    "score": float(scores[i, q]),
                    "start": starts[i],
                    "size": patch,
                    **box_geometry(starts[i], patch, restore, ref.affine, ref.shape[:3]),
                }
                for i in best
            ]
        )
    return out


def query_volumes(
    run: str | Path,
    texts: list[str],
    volumes: list[str | Path],
    out: str | Path,
    negatives: list[str] = (),
    stride: list[int] | None = None,
    top_k: int = 5,
    batch: int = 8,
    device: str = "auto",
    modality: str = "CT",
    spacing: list[float] | None = None,
    text_encoder: str | None = None,
    progress: bool = True,
    convention: str = "radiological",
) -> dict[str, Any]:
    """Run every prompt over every volume and write the outputs (module docstring); returns what was written."""
    from gtgm.data.io import write_nifti
    from gtgm.infer.prepare import input_cases, prepare_input

    if not texts:
        raise GtgmError("give at least one prompt")
    qm = load_query_model(run, device, text_encoder)
    qm.embed_texts(list(texts) + list(negatives))  # empty prompts fail before any volume is read
    step = list(stride) if stride else [max(1, p // 2) for p in qm.patch]
    if len(step) == 1:
        step = step * 3
    if len(step) != 3 or any(not 1 <= s <= p for s, p in zip(step, qm.patch)):
        raise GtgmError(f"--stride needs 1 or 3 integers from 1 to the window size {qm.patch}, got {stride}")
    out, written = Path(out), {}
    settings = {
        "run": str(run),
        "prompts": list(texts),
        "negatives": list(negatives),
        "stride": step,
        "patch": qm.patch,
        "score": "softmax over prompts" if negatives else "cosine",
        "volumes": {},
    }
    for case in input_cases(volumes, modality):
        meta = query_preprocessing(qm, case.modality or modality, spacing)
        normed, ref, restore = prepare_input(meta, case)
        if normed.shape[0] != qm.cfg.model.in_channels:
            raise GtgmError(
                f"{case.images[0].path}: {normed.shape[0]} channel(s), but the run's encoder takes "
                f"{qm.cfg.model.in_channels}"
            )
        scores, starts, maps = _score_and_blend(qm, normed, texts, negatives, step, batch, progress, case)
        files = [
            write_nifti(
                out / f"{case.id}_q{k + 1}.nii.gz", restore(maps[k], order=1).astype(np.float32), ref.affine, ref.header
            )
            for k in range(len(texts))
        ]
        top = top_windows(scores, starts, qm.patch, top_k, restore, ref)
        write_json(
            out / f"{case.id}_top.json", [{"prompt": t, "map": f.name, "top": b} for t, f, b in zip(texts, files, top)]
        )
        grid_spacing = np.linalg.norm(np.asarray(restore.geometry["work_affine"])[:3, :3], axis=0)
        figure = query_figure(
            normed[0], maps, starts, scores, qm.patch, list(texts), out / f"{case.id}.png", grid_spacing, convention
        )
        written[case.id] = {"maps": files, "top": out / f"{case.id}_top.json", "figure": figure, "windows": len(starts)}
        settings["volumes"][case.id] = {
            "input": str(case.images[0].path),
            "modality": meta["modality"],
            "spacing": meta["preprocess"]["target_spacing"],
            "windows": len(starts),
            "maps": [f.name for f in files],
        }
        write_json(out / "query.json", settings)  # after each volume: what is there is listed
    return written


def _score_and_blend(
    qm: QueryModel, normed: np.ndarray, texts: Any, negatives: Any, step: list[int], batch: int, progress: bool, case
) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """Window scores (W, Q), their starts and the (Q, X, Y, Z) maps of one preprocessed volume (C, X, Y, Z).

    A volume smaller than a window along some axis (a thin slab, a head CT at a coarse spacing) is padded at the
    far end with each channel's minimum, as ``gtgm predict`` pads it; the maps are cropped back to its shape."""
    from gtgm.infer.sliding import pad_to_patch

    shape, name = list(normed.shape[1:]), str(case.images[0].path)
    if any(n < p for n, p in zip(shape, qm.patch)):
        warn(
            f"{name}: {shape} voxels at the query spacing, smaller than one window {qm.patch}: padded at the far "
            "end with the image's minimum (as gtgm predict pads), so its windows are mostly padding and the maps "
            "may mean little"
        )
        normed = pad_to_patch(normed, qm.patch)
    scores, starts = score_windows(qm, normed, list(texts), list(negatives), step, batch, progress, name)
    maps = blend(scores, starts, qm.patch, list(normed.shape[1:]))
    return scores, starts, maps[(slice(None), *(slice(0, n) for n in shape))]


def query_figure(
    image: np.ndarray,
    maps: np.ndarray,
    starts: list[list[int]],
    scores: np.ndarray,
    patch: list[int],
    texts: list[str],
    path: Path,
    spacing: Any = (1.0, 1.0, 1.0),
    convention: str = "radiological",
) -> Path:
    """Per prompt a row: axial, coronal, sagittal slices (RAS grid, anterior and superior up) through its best
    window's centre, map over the image, drawn at the grid's ``spacing`` (x, y, z); axial and coronal views in
    ``convention`` (radiological: the patient's right on the image's left) with R / L marks, the sagittal with
    A / P marks; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtgm.fsutil import atomic_path
    from gtgm.report import orient_lateral

    fig, axes = plt.subplots(len(texts), 3, figsize=(11, 3.4 * len(texts)), squeeze=False)
    lo, hi = float(maps.min()), float(maps.max())
    sx, sy, sz = (float(v) for v in spacing)
    for k, text in enumerate(texts):
        best = starts[int(np.argmax(scores[:, k]))]
        c = [min(s + p // 2, n - 1) for s, p, n in zip(best, patch, image.shape)]  # inside a padded volume's crop
        views = [
            ("axial", image[:, :, c[2]].T, maps[k][:, :, c[2]].T, sy / sx),
            ("coronal", image[:, c[1], :].T, maps[k][:, c[1], :].T, sz / sx),
            ("sagittal", image[c[0], :, :].T, maps[k][c[0], :, :].T, sz / sy),
        ]
        for ax, (name, img, m, aspect) in zip(axes[k], views):
            ax.imshow(img, cmap="gray", origin="lower", aspect=aspect)
            shown = ax.imshow(m, cmap="magma", alpha=0.45, origin="lower", vmin=lo, vmax=hi, aspect=aspect)
            ax.set_title(f"{name}: {text[:48]}" if name == "axial" else name, fontsize=8)
            ax.axis("off")
            if name == "sagittal":  # horizontal axis: y, towards anterior
                for side, x in (("P", 0.04), ("A", 0.96)):
                    ax.text(x, 0.5, side, transform=ax.transAxes, color="yellow", fontsize=9, ha="center")
            else:
                orient_lateral(ax, convention)
        fig.colorbar(shown, ax=axes[k].tolist(), fraction=0.02)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
