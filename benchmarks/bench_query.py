"""``gtgm query`` and ``gtgm audit`` throughput, each against a baseline run in the same process.

* query: windows per second of :func:`gtgm.infer.query.score_windows` (encoder + image head, cosine with 3 prompts) on a
  CT phantom at the run's spacing, stride 8 (dense), batched ``--batch`` windows per forward pass vs one window at
  a time (the baseline), plus the Gaussian blending into the map (:func:`gtgm.infer.query.blend`);
* audit: captions per second of :func:`gtgm.text.audit.audit_records` (re-measure + check) vs the re-measuring alone
  (the baseline: what the ``describe`` captioner costs without writing text).

    python benchmarks/bench_query.py RUN CAPTIONS CACHE [--batch 8] [--device auto]

RUN: a finished pretraining run (e.g. ``runs/demo/pretrain``); CAPTIONS and CACHE: the demo's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gtgm.data.measure import box_measurements
from gtgm.data.patches import VolumeCache
from gtgm.infer.query import blend, load_query_model, query_spacing, score_windows
from gtgm.text.audit import audit_records
from gtgm.text.captioners.describe import CLASS_PROMPTS
from gtgm.text.captions import read_captions


def bench_query(run: str, batch: int, device: str) -> None:
    from gtgm.data.io import write_nifti
    from gtgm.data.phantom_ct import make_ct_phantom
    from gtgm.infer.prepare import input_cases, prepare_input

    qm = load_query_model(run, device)
    hu, _, affine = make_ct_phantom(99)
    path = write_nifti(Path(tempfile.mkdtemp()) / "bench_query_phantom.nii.gz", hu, affine)
    pre = {**qm.cfg.to_dict()["preprocess"], "target_spacing": query_spacing(qm, "CT", None)}
    normed, _, _ = prepare_input({"preprocess": pre, "modality": "CT"}, input_cases([path], "CT")[0])
    prompts = list(CLASS_PROMPTS.values())[:3]
    rates = {}
    for b in (1, batch):
        score_windows(qm, normed, prompts, [], [8, 8, 8], b, progress=False)  # warm-up
        t0 = time.perf_counter()
        scores, starts = score_windows(qm, normed, prompts, [], [8, 8, 8], b, progress=False)
        rates[b] = len(starts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    blend(scores, starts, qm.patch, list(normed.shape[1:]))
    blend_s = time.perf_counter() - t0
    print(f"query: volume {list(normed.shape[1:])} at {pre['target_spacing']} mm, {len(starts)} windows {qm.patch}")
    print(
        f"  batch 1: {rates[1]:.1f} windows/s (baseline); batch {batch}: {rates[batch]:.1f} windows/s "
        f"= {rates[batch] / rates[1]:.2f}x; blending {blend_s:.2f} s; device {qm.device}"
    )


def bench_audit(captions: str, cache_root: str, n: int = 300) -> None:
    records, cache = read_captions(captions)[:n], VolumeCache(cache_root)
    ids = {e["id"]: i for i, e in enumerate(cache.entries)}
    metas = {i: cache.meta(i) for i in {ids[r["volume"]] for r in records}}
    t0 = time.perf_counter()
    for rec in records:
        box_measurements(cache, ids[rec["volume"]], rec, metas[ids[rec["volume"]]])
    base = len(records) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    audit_records(records, cache, progress=False)
    rate = len(records) / (time.perf_counter() - t0)
    print(
        f"audit: {len(records)} captions; measuring alone {base:.0f} captions/s (baseline); "
        f"measuring + checking {rate:.0f} captions/s = {rate / base:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("captions")
    ap.add_argument("cache")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    bench_query(args.run, args.batch, args.device)
    bench_audit(args.captions, args.cache)


if __name__ == "__main__":
    main()
