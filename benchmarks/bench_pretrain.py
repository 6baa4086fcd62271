"""Pretraining step cost, measured in one process on the same batch:

1. the full gtgm training step (encoder on both views + projection heads + GTGM loss on cached text
   embeddings, paired with view 1 as the default caption-consistent views are + backward + AdamW);
2. the encoder alone: forward + backward of the encoder on both views + AdamW on its weights;
3. the full step with the frozen text encoder (MiniLM) run on the batch's captions every step, as the
   reference code does, instead of reading the text cache.

Prints milliseconds per step, the ratio full / encoder-only (target <= 1.10), the speed-up of the text
cache over the online text encoder, and peak memory (CUDA: max allocated per variant; CPU: process
peak RSS).

    python benchmarks/bench_pretrain.py [--encoder resunet|swinunetr|resenc] [--pooling last|stages]
        [--patch 32] [--batch 8]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from gtgm.config import AugmentConfig, LossConfig, TextConfig
from gtgm.models.registry import create_encoder
from gtgm.models.vlp import VLPModel
from gtgm.runtime import resolve_device
from gtgm.text.encoders import TextEncoder
from gtgm.train.losses import GTGMLoss

CAPTION = (
    "CT patch taken from the inferior portion of the volume, central in-plane. Predominantly soft-tissue "
    "or fluid density attenuation (75%), alongside high-density (100 to 300 HU) (10%), fat-density (10%) and "
    "low-density (-900 to -500 HU) (5%). It has "
    "moderately many edges. 8 separate bright structures are present."
)


def timed(fn, steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds per call over ``steps`` calls, and peak CUDA memory (GB) during them (nan on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
    return (time.perf_counter() - t0) / steps, peak


def interleaved(variants: dict, steps: int, rounds: int, device: torch.device) -> dict[str, tuple[float, float]]:
    """Warm each variant up, then time them in turn for ``rounds`` rounds; median seconds per step."""
    for fn in variants.values():
        for _ in range(2):
            fn()
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            runs[name].append(timed(fn, steps, device))
    return {k: (statistics.median(t for t, _ in v), max(m for _, m in v)) for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="resunet", choices=["resunet", "swinunetr", "resenc"])
    ap.add_argument("--channels", default="8,16,32,64,128", help="resunet / resenc stage channels")
    ap.add_argument("--feature-size", type=int, default=12, help="swinunetr feature size")
    ap.add_argument("--pooling", default="last", choices=["last", "stages"], help="model.pooling")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of interleaved timing (median reported)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    kw = {"channels": [int(c) for c in args.channels.split(",")], "feature_size": args.feature_size}
    kw["pooling"] = args.pooling
    text_encoder = TextEncoder(TextConfig(), str(device))
    model = VLPModel(
        create_encoder(args.encoder, **kw),
        text_encoder.dim,
        128 if device.type == "cpu" else 512,
        256 if device.type == "cpu" else 2048,
    ).to(device)
    text_views = 1 if AugmentConfig().caption_consistent else 2  # the default: the text meets view 1 only
    loss_fn = GTGMLoss(LossConfig(), text_views=text_views).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    enc_opt = torch.optim.AdamW(model.encoder.parameters(), lr=1e-4)
    shape = (args.batch, 1, args.patch, args.patch, args.patch)
    v1, v2 = torch.randn(shape, device=device), torch.randn(shape, device=device)
    captions = [CAPTION.replace("75%", f"{70 + i}%") for i in range(args.batch)]
    cached_text = torch.from_numpy(text_encoder.encode(captions)).to(device)

    def full_step(text=None):
        opt.zero_grad(set_to_none=True)
        t = cached_text if text is None else text()
        sum(loss_fn(**model(v1, v2, t)).values()).backward()
        opt.step()

    def encoder_step():
        enc_opt.zero_grad(set_to_none=True)
        model.encoder(torch.cat([v1, v2])).square().mean().backward()
        enc_opt.step()

    def online_text():
        return torch.from_numpy(text_encoder.encode(captions)).to(device)

    res = interleaved(
        {"enc": encoder_step, "full": full_step, "online": lambda: full_step(online_text)},
        args.steps,
        args.rounds,
        device,
    )
    (t_enc, m_enc), (t_full, m_full), (t_online, m_online) = res["enc"], res["full"], res["online"]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    print(
        f"device: {name}; encoder {args.encoder} ({params:.2f} M params, {args.pooling} pooling), "
        f"batch {args.batch} x 2 views of {args.patch}^3, "
        f"median of {args.rounds} interleaved rounds of {args.steps} steps"
    )
    print(f"encoder only (fwd+bwd+AdamW):        {t_enc * 1e3:8.1f} ms/step  peak {m_enc:.2f} GB")
    print(
        f"full gtgm step (cached text):        {t_full * 1e3:8.1f} ms/step  peak {m_full:.2f} GB  "
        f"= {t_full / t_enc:.3f} x encoder-only (target <= 1.10)"
    )
    print(
        f"full step + MiniLM online per step:  {t_online * 1e3:8.1f} ms/step  peak {m_online:.2f} GB  "
        f"-> text cache is {t_online / t_full:.2f}x faster"
    )
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
