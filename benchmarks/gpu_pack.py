"""GPU one-shot pack of the pretraining study's comparison of record: study/cpu-text-premise's question (does the text
help? issue 39) on one GPU in <= 8 min of wall time, with more seeds (preset ``study/gpu-text-premise``;
``--preset study/gpu-pack --sealed-seed 4000`` packs the earlier cpu-label-limited comparison).

The device machine reaches no package index and no model hub, so the pack carries what cannot be made there (the
captions and their MiniLM embeddings, and wheels of the packages its image lacks) and makes the rest from seeds.

Here, once (CPU, about 5 min on 2 cores)::

    python benchmarks/gpu_pack.py prepare --pack gpu_pack --wheels .whl

  writes the CT corpus (``gtgm data examples --no-mri`` with the preset's counts: fixed generator seeds), preprocesses
  it and its oracle twin, captions it (describe; oracle shares for the oracle caption set), embeds both caption sets,
  records every cached volume's shape, spacing, mean and label counts in ``gpu_pack/pack.json``, then removes the
  volumes: the pack is the two caption sets, their text caches and ``pack.json`` (a few MB). ``--wheels`` downloads,
  for Python 3.12, the packages gtgm imports that the device image lacks (:data:`WHEELS`).

On the device (``gpu_pack`` and ``.whl`` are git-ignored: name both in the run's ``carry``)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 && \
        python3 benchmarks/gpu_pack.py run --pack gpu_pack --out /tmp/gpu_run --results $OUT --budget-s 450

  regenerates the corpus from the seeds, checks each cached volume against ``pack.json`` (a numpy or scipy that
  draws other phantoms is refused by name: the carried captions describe those volumes), runs the study in a child
  process and, every 20 s, writes ``$OUT/results.json`` (each finished run: arm, recipe, seed, best validation
  Dice, and test Dice for the recipe chosen on validation so far); at the end ``$OUT/study.json`` and
  ``$OUT/report.md`` (paired differences with hierarchical intervals).
  ``--budget-s`` stops the study (SIGTERM) in time to leave the partial results.

``tests/study/test_gpu_pack.py`` rehearses both steps on the CPU at a tiny size. ``prepare --keep`` keeps the
corpus and caches in ``PACK/work``; ``run --out PACK/work`` then runs the same study on this machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import load_config
from gtgm.data.datasets import load_dataset
from gtgm.data.examples import write_examples
from gtgm.data.patches import VolumeCache
from gtgm.data.preprocess import preprocess_dataset
from gtgm.fsutil import read_json, write_json
from gtgm.schemas import TEST_METRICS
from gtgm.study.select import choose_recipes

PRESET = "study/gpu-text-premise"
# gtgm's imports that the device image (Python 3.12, torch, numpy, scipy, scikit-image, transformers...) lacks
WHEELS = [
    "monai==1.6.1",
    "nibabel==5.4.2",
    "pydicom==3.0.2",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
]
CORPUS = [20, 30, 6]  # labelled, unlabelled and sealed CT phantoms (the study presets' corpus, without MR)
SEALED_SEED = 5000  # the fresh sealed set study/cpu-text-premise names (sealed5000_000..005)
TOLERANCE = 1e-3  # relative, on a volume's mean intensity and each label count (another numpy's rounding)


def _preprocess(data: Path, out: Path, overrides: list[str], workers: int = 1, preset: str = PRESET) -> VolumeCache:
    """``gtgm data preprocess DATA --out OUT --config PRESET OVERRIDES``."""
    preprocess_dataset(load_dataset(data), out, load_config(preset, overrides).preprocess, workers=workers)
    return VolumeCache(out)


def _caption(cache: Path, out: Path, overrides: list[str], preset: str = PRESET) -> None:
    """``gtgm caption CACHE --out OUT --config PRESET OVERRIDES``."""
    from gtgm.text.captioners import create_captioner
    from gtgm.text.captions import run_captioning

    cfg = load_config(preset, overrides)
    run_captioning(VolumeCache(cache), create_captioner(cfg.caption, cfg.device), out, cfg.caption, cfg.seed)


def make_corpus(
    work: Path, corpus: list[int], overrides: list[str], workers: int, preset: str = PRESET, sealed: int = SEALED_SEED
) -> VolumeCache:
    """The corpus from seeds (``corpus``: labelled, unlabelled, sealed CT phantoms; the sealed ones from seed
    ``sealed``) and its cache (``work/examples``, ``work/cache``), as the preset preprocesses it."""
    counts = dict(zip(("n_ct", "n_ct_unlabeled", "n_ct_sealed"), corpus))
    write_examples(work / "examples", **counts, n_em=0, mri=False, sealed_seed=sealed)
    return _preprocess(work / "examples", work / "cache", overrides, workers, preset)


def fingerprint(cache: VolumeCache) -> dict[str, dict[str, Any]]:
    """Per cached volume: shape, spacing, mean intensity and (labelled ones) the voxel count of each label value."""
    out = {}
    for i, e in enumerate(cache.entries):
        rec = {"shape": list(e["shape"]), "spacing": [round(s, 6) for s in e["spacing"]]}
        rec["mean"] = float(np.mean(cache.image(i), dtype=np.float64))
        if "label" in e["files"]:
            values, counts = np.unique(np.asarray(cache.label(i)), return_counts=True)
            rec["labels"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
        out[e["id"]] = rec
    return out


def check_fingerprint(made: dict[str, dict[str, Any]], recorded: dict[str, dict[str, Any]]) -> None:
    """The regenerated corpus is the one the captions describe: same volumes, shapes and spacings; means and label
    counts within :data:`TOLERANCE`."""
    if set(made) != set(recorded):
        raise SystemExit(f"gpu_pack: the corpus holds {sorted(set(made) ^ set(recorded))} unlike pack.json")
    for vid, want in recorded.items():
        got = made[vid]
        same = got["shape"] == want["shape"] and np.allclose(got["spacing"], want["spacing"], rtol=1e-5)
        same = same and abs(got["mean"] - want["mean"]) <= TOLERANCE * max(1.0, abs(want["mean"]))
        same = same and set(got.get("labels", {})) == set(want.get("labels", {}))
        for k, n in want.get("labels", {}).items():
            same = same and abs(got["labels"][k] - n) <= TOLERANCE * max(n, 1000)
        if not same:
            raise SystemExit(
                f"gpu_pack: volume {vid} differs from the one the pack's captions describe: {got} vs {want}"
            )


def prepare(
    pack: Path, corpus: list[int], overrides: list[str], wheels: Path | None, preset: str, sealed: int, keep: bool
) -> None:
    """Build the pack (see the module docstring); ``pack`` ends up with captions, text caches and ``pack.json``
    (``keep``: and the corpus and its caches in ``pack/work``, for a run on this machine)."""
    if pack.exists() and any(pack.iterdir()):
        raise SystemExit(f"gpu_pack: {pack} is not empty (caption and embed-text would resume from it); give a new one")
    work = pack / "work"
    cache = make_corpus(work, corpus, overrides, 1, preset, sealed)
    _preprocess(work / "examples" / "oracle", work / "oracle_cache", overrides, 1, preset)
    _caption(work / "cache", pack / "captions.jsonl", overrides, preset)
    oracle = ["caption.content=oracle", f"caption.oracle_cache={work / 'oracle_cache'}"]
    _caption(work / "cache", pack / "oracle.jsonl", [*overrides, *oracle], preset)
    from gtgm.text.encoders import embed_captions  # (on the device, the pack's text caches are read, not made)

    text_cfg = load_config(preset, overrides)
    for name, text in (("captions", "text"), ("oracle", "oracle_text")):
        embed_captions(pack / f"{name}.jsonl", pack / text, text_cfg.text, text_cfg.device)
    info = {"preset": preset, "corpus": corpus, "sealed_seed": sealed, "overrides": overrides}
    write_json(pack / "pack.json", {**info, "volumes": fingerprint(cache)})
    if not keep:
        shutil.rmtree(work)
    if wheels:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
        pip += ["--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
        subprocess.run([*pip, "-d", str(wheels), *WHEELS], check=True)
    size = sum(p.stat().st_size for p in pack.rglob("*") if p.is_file())
    print(f"pack -> {pack} ({size / 1e6:.1f} MB)")


def collect(study: Path) -> list[dict[str, Any]]:
    """One row per finished fine-tuning run of ``study`` (its ``test_metrics.json``, at ``GROUP/ARM/RUN`` or
    ``GROUP/ARM/RECIPE/RUN``; the positive control's source segmenters, under ``pretrain/``, are left out). Of an
    arm's candidate recipes only the one chosen on validation so far (:func:`gtgm.study.select.choose_recipes`) keeps
    its test figure; the others show ``test: None``."""
    rows = []
    for path in sorted(study.rglob("ratio*_seed*/test_metrics.json")):
        parts = path.relative_to(study).parts[:-1]
        if len(parts) not in (3, 4) or parts[0] == "pretrain":
            continue
        res = read_json(path, schema=TEST_METRICS)
        group, arm, run, recipe = parts[0], parts[1], parts[-1], parts[2] if len(parts) == 4 else ""
        test = res["test"]
        seed = int(run.rsplit("seed", 1)[-1]) if run.rsplit("seed", 1)[-1].isdigit() else None
        row = {"group": group, "arm": arm, "recipe": recipe, "run": run, "seed": seed, "test": test[test["metric"]]}
        rows.append({**row, "val": res.get("best_val")})
    chosen, _ = choose_recipes([{**r, "val_score": r["val"]} for r in rows])
    keep = {(r["group"], r["arm"], r["recipe"]) for r in chosen}
    return [r if (r["group"], r["arm"], r["recipe"]) in keep else {**r, "test": None} for r in rows]


def supervise(child: subprocess.Popen, t0: float, budget_s: float, study: Path, results: Path) -> int:
    """Wait for the study ``child``, writing ``results/results.json`` (:func:`collect`) every 20 s; past
    ``budget_s`` seconds from ``t0`` stop it (SIGTERM, then SIGKILL after 30 s); never leave it running."""
    code = None
    try:
        while code is None:
            code = child.poll()
            if code is None and time.perf_counter() - t0 > budget_s:
                child.terminate()  # out of time: keep what finished
                try:
                    code = child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    code = child.wait()
            runs = collect(study)
            write_json(
                results / "results.json", {"seconds": time.perf_counter() - t0, "finished": code == 0, "runs": runs}
            )
            if code is None:
                time.sleep(2 if time.perf_counter() - t0 < 30 else 20)
    finally:
        if child.poll() is None:  # the driver failed or was interrupted
            child.kill()
    return code


def run(pack: Path, out: Path, results: Path, budget_s: float, overrides: list[str], workers: int) -> int:
    """Regenerate, check, run the study; write the results under ``results`` as they come (module docstring)."""
    t0 = time.perf_counter()
    info = read_json(pack / "pack.json")
    overrides, preset = [*info["overrides"], *overrides], info["preset"]
    if (out / "cache" / "index.json").is_file():  # a run on the machine that prepared the pack, or a resumed run
        cache = VolumeCache(out / "cache")
    else:
        cache = make_corpus(out, info["corpus"], overrides, workers, preset, info.get("sealed_seed", 4000))
    check_fingerprint(fingerprint(cache), info["volumes"])
    sets = f"study.caption_sets={{oracle: [{pack / 'oracle.jsonl'}, {pack / 'oracle_text'}]}}"
    argv = [sys.executable, "-m", "gtgm", "study", str(out / "cache"), "--config", preset, "--out", str(out / "study")]
    argv += ["--captions", str(pack / "captions.jsonl"), "--text-cache", str(pack / "text"), sets, *overrides]
    results.mkdir(parents=True, exist_ok=True)
    code = supervise(subprocess.Popen(argv), t0, budget_s, out / "study", results)
    names = ["study.json", "report.md", *(p.name for p in (out / "study").glob("*.png"))]
    for name in names[:7]:  # the device returns at most 8 files (results.json is one)
        if (out / "study" / name).is_file():
            shutil.copyfile(out / "study" / name, results / name)
    print(f"gpu_pack: study exit {code} after {time.perf_counter() - t0:.0f} s; results -> {results}")
    return code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    pr = sub.add_parser("prepare", help="build the pack here (corpus, captions, text caches, pack.json)")
    pr.add_argument("--pack", type=Path, default=Path("gpu_pack"))
    pr.add_argument("--wheels", type=Path, help="also download the device's missing packages into this folder")
    pr.add_argument("--corpus", type=int, nargs=3, default=CORPUS, metavar=("CT", "UNLABELED", "SEALED"))
    pr.add_argument("--preset", default=PRESET, help=f"the study preset (default {PRESET})")
    pr.add_argument("--sealed-seed", type=int, default=SEALED_SEED, help="first seed of the sealed phantoms")
    pr.add_argument("--keep", action="store_true", help="keep the corpus and caches (pack/work): a run here")
    ru = sub.add_parser("run", help="on the device: regenerate the corpus, check it, run the study")
    ru.add_argument("--pack", type=Path, default=Path("gpu_pack"))
    ru.add_argument("--out", type=Path, default=Path("/tmp/gpu_run"))
    ru.add_argument("--results", type=Path, required=True, help="where results.json, study.json, report.md go")
    ru.add_argument("--budget-s", type=float, default=450.0, help="stop the study after this many seconds")
    ru.add_argument("--workers", type=int, default=8, help="preprocessing processes")
    for p in (pr, ru):
        p.add_argument("overrides", nargs="*", help="key=value overrides of the preset (a tiny rehearsal)")
    args = ap.parse_args()
    if args.step == "prepare":
        prepare(args.pack, args.corpus, args.overrides, args.wheels, args.preset, args.sealed_seed, args.keep)
    else:
        sys.exit(run(args.pack, args.out, args.results, args.budget_s, args.overrides, args.workers))


if __name__ == "__main__":
    main()
