"""Tokenizing the next chunk in a worker thread: what it costs or saves on this CPU.

Runs ``Engine.iter_embed_chunks`` over SIB-200 texts (all languages, in chunks) with and without
``prefetch``, alternating, and reports medians and their ratio, with the time tokenization alone
takes (the most the overlap can hide). On a CPU the forward uses every core, so the overlap can
only hide the tokenizer's share; on a GPU (``gpu_bench.py``) it hides it behind the device.

    python benchmarks/overlap_cpu.py MODEL_FOLDER SIB200_DIR [--texts 2048] [--chunk 256]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench_common import cpu_description, sib200_corpus

from skmoe.encoder import load_encoder
from skmoe.engine import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("sib200", type=Path)
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    texts = sib200_corpus(args.sib200, args.texts)
    encoder = load_encoder(args.model, device="cpu")
    chunks = [texts[i : i + args.chunk] for i in range(0, len(texts), args.chunk)]
    prompt = "query: "

    def run(prefetch: bool) -> float:
        engine = Engine(encoder)
        start = time.perf_counter()
        for _ in engine.iter_embed_chunks(chunks, prompt, prefetch=prefetch):
            pass
        return time.perf_counter() - start

    def tokenize_only() -> float:
        start = time.perf_counter()
        for chunk in chunks:
            encoder.tokenize([prompt + t for t in chunk])
        return time.perf_counter() - start

    run(True)  # warm-up (oneDNN primitives, allocator)
    times: dict[str, list[float]] = {"serial": [], "prefetch": [], "tokenize": []}
    for _ in range(args.rounds):
        times["serial"].append(run(False))
        times["prefetch"].append(run(True))
        times["tokenize"].append(tokenize_only())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"CPU: {cpu_description()}")
    print(f"{len(texts)} texts, chunks of {args.chunk}, {args.rounds} rounds (medians)")
    print("| run | seconds (median) | texts/s | vs serial |")
    print("|---|---|---|---|")
    for name in ("serial", "prefetch"):
        print(f"| {name} | {med[name]:.2f} | {len(texts) / med[name]:.0f} | "
              f"{med['serial'] / med[name]:.3f}x |")
    print(f"| tokenization alone | {med['tokenize']:.2f} | {len(texts) / med['tokenize']:.0f} | "
          f"{med['tokenize'] / med['serial']:.1%} of serial |")


if __name__ == "__main__":
    main()
