"""GPU variant of the engine benchmark: model FLOP utilisation against the measured bf16 GEMM peak.

Runs on a one-GPU machine without ``../shared``: the corpus comes from a file that the CPU
benchmark writes (``bench_engine.py --export-gpu-corpus 8192`` -> ``gpu_corpus.json``: texts
with the ``classification: `` prompt and their XLM-R token ids), the model from a config path.

    python benchmarks/gpu_bench.py --config config.json --corpus gpu_corpus.json --out DIR

Measures, in one process on one card: the bf16/fp16/fp32 GEMM peaks with the model's matmul
shapes; the standard path (character-sorted fixed batches of 32 and 128, padded, per-expert loop
over all tokens) in bf16; our engine in bf16 (default on GPU) and fp16 with its default GPU
batches (4096 rows / 131,072 tokens); each timed three times (median). Reports texts/s, real
tokens/s, model TFLOP/s on real tokens (spec §8) and % of the bf16 peak (MFU), cosines to our
fp32 embeddings, peak GPU memory. Writes ``gpu_results.json`` and ``gpu_results.md`` to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import (  # noqa: E402
    build_random_checkpoint,
    cosine_rows,
    gemm_peak,
    load_corpus,
    model_flops,
    standard_embed,
)

from skmoe.encoder import load_encoder  # noqa: E402
from skmoe.engine import Engine, apply_precision  # noqa: E402

DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def max_memory_gb() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else float("nan")


def reset_memory() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    result = fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="the real model's config.json")
    ap.add_argument("--corpus", type=Path, required=True, help="gpu_corpus.json")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--texts", type=int, default=None, help="use the first N corpus texts")
    ap.add_argument("--device", default="cuda",
                    help="'cpu' only to smoke-test this script (tiny config): bf16/fp16 emulated")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        card = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        card = "CPU smoke test (numbers meaningless)"
    texts, ids = load_corpus(args.corpus)
    if args.texts:
        texts, ids = texts[: args.texts], ids[: args.texts]
    lengths = np.array([len(r) for r in ids])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="skmoe-gpu-"))
    t0 = time.perf_counter()
    folder = build_random_checkpoint(args.config, workdir / "nomic-moe-full")
    print(f"checkpoint in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    torch.backends.cuda.matmul.allow_tf32 = False
    kinds = ("bfloat16", "float16", "float32") if DEVICE == "cuda" else ("float32",)
    peaks = {k: gemm_peak(k, rows=16384 if DEVICE == "cuda" else 512, repeats=10,
                          device=DEVICE, sync=sync) for k in kinds}
    bf16_peak = peaks.get("bfloat16", peaks["float32"])[0]

    fp32 = load_encoder(folder, device=DEVICE, dtype="float32")
    cfg = fp32.moe_config
    flops = model_flops(cfg, lengths)
    pad_id = int(json.loads(Path(args.config).read_text()).get("pad_token_id", 1))
    rows = []

    def record(name, seconds, vectors, ref, padded_tokens=None):
        cos = cosine_rows(vectors, ref) if ref is not None else np.ones(1)
        rows.append({
            "mode": name, "texts": len(texts), "seconds": seconds,
            "texts_per_s": len(texts) / seconds, "tokens_per_s": float(lengths.sum()) / seconds,
            "tflops": flops / seconds / 1e12, "mfu_pct": 100.0 * flops / seconds / bf16_peak,
            "padding": None if padded_tokens is None else 1 - lengths.sum() / padded_tokens,
            "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
            "peak_gpu_mem_gb": max_memory_gb(),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    # our fp32: the reference vectors (and a row of the table)
    reset_memory()
    engine = Engine(fp32)
    sec, ref = timed(lambda: engine.embed_ids(ids), 1)
    record("ours float32", sec, ref, None)

    # the standard path in bf16 (official code's arithmetic, whole model cast, router too)
    fp32.backbone.to(torch.bfloat16)
    for bs in (32, 128):
        reset_memory()
        sec, (vec, padded) = timed(
            lambda bs=bs: standard_embed(fp32.backbone, texts, ids, pad_id, bs), args.repeats)
        record(f"standard path bf16, batch {bs}", sec, vec, ref, padded)
    fp32 = engine = None  # free the fp32 weights before the next modes
    reset_memory()

    for mode in ("bfloat16", "float16"):
        enc = apply_precision(load_encoder(folder, device=DEVICE, dtype="float32"), mode,
                              allow_slow=DEVICE == "cpu")
        reset_memory()
        engine = Engine(enc)
        sec, vec = timed(lambda engine=engine: engine.embed_ids(ids), args.repeats)
        record(f"ours {mode}", sec, vec, ref, engine.stats.padded_tokens / (args.repeats + 1))
        enc = engine = None
        reset_memory()

    lines = [
        f"Device: {card}, torch {torch.__version__}",
        f"Corpus: {len(texts)} texts, {int(lengths.sum())} real tokens (mean {lengths.mean():.1f}); "
        f"model FLOPs {flops / 1e12:.2f} TFLOP (spec §8).",
        "GEMM peaks (model shapes, 16384 rows, best of 10): " + ", ".join(
            f"{k} {v[0] / 1e12:.0f} TFLOP/s" for k, v in peaks.items()),
        "",
        "| mode | texts/s | real tokens/s | attention padding | model TFLOP/s | MFU (% of bf16 peak) "
        "| cos mean | cos min | peak GPU GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pad = "n/a" if r["padding"] is None else f"{100 * r['padding']:.0f}%"
        lines.append(f"| {r['mode']} | {r['texts_per_s']:.0f} | {r['tokens_per_s']:.0f} | {pad} | "
                     f"{r['tflops']:.1f} | {r['mfu_pct']:.1f}% | {r['cos_mean']:.5f} | "
                     f"{r['cos_min']:.5f} | {r['peak_gpu_mem_gb']:.1f} |")
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_results.md").write_text(report + "\n")
    (args.out / "gpu_results.json").write_text(json.dumps(
        {"peaks": {k: v[0] for k, v in peaks.items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
