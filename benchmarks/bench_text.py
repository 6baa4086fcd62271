"""Generated-text throughput on the example corpus, measured in one process:

* captions per second of the offline ``describe`` captioner (all grid locations of the corpus);
* embeddings per second of the frozen MiniLM encoder on those captions (first ``embed-text`` run);
* the time of a second ``embed-text`` run on the same captions relative to the first (content-hash
  cache: it should encode nothing and be near-instant);
* batches formed shortest caption first (``encode_batched``, what ``embed-text`` does) against batches in file
  order, alternated ``--repeats`` times on the same loaded encoder: median seconds and their ratio.

    python benchmarks/bench_text.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gtgm.config import CaptionConfig, PreprocessConfig, TextConfig
from gtgm.data.datasets import load_dataset
from gtgm.data.examples import write_examples
from gtgm.data.patches import VolumeCache
from gtgm.data.preprocess import preprocess_dataset
from gtgm.text.captioners.describe import DescribeCaptioner
from gtgm.text.captions import caption_stats, read_captions, run_captioning
from gtgm.text.encoders import TextEncoder, embed_captions, encode_batched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, help="reuse/keep the corpus and cache here (default: temp)")
    ap.add_argument("--repeats", type=int, default=3, help="alternations of the batch-order comparison")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gtgm-bench-"))
    if not (work / "examples" / "dataset.json").exists():
        write_examples(work / "examples", progress=False)
    preprocess_dataset(load_dataset(work / "examples"), work / "cache", PreprocessConfig(), progress=False)
    for stale in (work / "captions.jsonl", work / "text"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    cap = run_captioning(
        VolumeCache(work / "cache"), DescribeCaptioner(), work / "captions.jsonl", CaptionConfig(), progress=False
    )
    stats = caption_stats(read_captions(work / "captions.jsonl"))
    t0 = time.perf_counter()
    first = embed_captions(work / "captions.jsonl", work / "text", TextConfig(), "cpu", progress=False)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = embed_captions(work / "captions.jsonl", work / "text", TextConfig(), "cpu", progress=False)
    t_second = time.perf_counter() - t0
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"describe: {cap['written']} captions in {cap['seconds']:.2f} s = {cap['per_second']:.1f} captions/s "
        f"({stats['distinct']:.1%} distinct, {stats['mean_words']:.0f} words each)"
    )
    print(
        f"MiniLM embed-text, first run:  {first['encoded']} texts encoded in {first['seconds']:.2f} s = "
        f"{first['per_second']:.1f} embeddings/s (whole call incl. model load: {t_first:.2f} s)"
    )
    print(
        f"MiniLM embed-text, second run: {second['encoded']} texts encoded, whole call {t_second:.3f} s = "
        f"{t_second / t_first:.3f} x the first run ({t_first / t_second:.0f}x faster)"
    )
    _batch_order(read_captions(work / "captions.jsonl"), args.repeats)


def _batch_order(records: list[dict], repeats: int) -> None:
    """Shortest-first batches against file order, alternated on one loaded encoder (default batch size)."""
    cfg, texts = TextConfig(), [r["text"] for r in records]
    encoder, times = TextEncoder(cfg, "cpu"), {False: [], True: []}
    for _ in range(repeats):
        for by_length in (False, True):
            t0 = time.perf_counter()
            encode_batched(encoder, texts, cfg.batch_size, by_length=by_length)
            times[by_length].append(time.perf_counter() - t0)
    file_order, by_length = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"batch order, {len(texts)} captions, median of {repeats}: file order {file_order:.2f} s, shortest first "
        f"{by_length:.2f} s = {file_order / by_length:.2f}x"
    )


if __name__ == "__main__":
    main()
