"""CPU expert kernels: one grouped GEMM per projection against a loop over experts.

The CPU runs each expert on its own rows (:func:`skmoe.encoder.nomic_moe.grouped_experts`); this
measures what that costs against ``torch._grouped_mm`` at the real model's sizes (8 experts,
768 -> 3072 -> 768, top-2, tokens spread evenly), interleaved rounds, medians. GELU is left out:
both kernels would run the same one. Usage::

    python benchmarks/expert_kernels.py [--tokens 512 2048] [--rounds 7] [--threads 2]
        [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_common import cpu_description


def grouped(xs: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
            offsets: torch.Tensor) -> torch.Tensor:
    """One grouped GEMM per projection (what accelerators run)."""
    h = torch._grouped_mm(xs, up.transpose(1, 2), offs=offsets)
    return torch._grouped_mm(h, down.transpose(1, 2), offs=offsets)


def loop(xs: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
         offsets: torch.Tensor) -> torch.Tensor:
    """Each expert on its own rows (what the CPU runs)."""
    y, start = torch.empty_like(xs), 0
    for e, end in enumerate(offsets.tolist()):
        torch.mm(xs[start:end] @ up[e].t(), down[e].t(), out=y[start:end])
        start = end
    return y


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    E, H, F = 8, 768, 3072
    dtype = getattr(torch, args.dtype)
    up = (torch.randn(E, F, H, generator=gen) * 0.02).to(dtype)  # out x in, as expert_weights
    down = (torch.randn(E, H, F, generator=gen) * 0.02).to(dtype)
    print(f"{cpu_description()}; {args.threads} threads, {args.dtype}")
    print("| tokens | rows (top-2) | grouped ms | loop ms | loop / grouped | equal |")
    print("|---|---|---|---|---|---|")
    for tokens in args.tokens:
        counts = torch.full((E,), tokens * 2 // E)
        offsets = counts.cumsum(0).to(torch.int32)
        xs = torch.randn(int(counts.sum()), H, generator=gen).to(dtype)

        times: dict[str, list[float]] = {"grouped": [], "loop": []}
        with torch.inference_mode():
            inputs = (xs, up, down, offsets)
            grouped(*inputs), loop(*inputs)  # warm-up
            for _ in range(args.rounds):
                for name, fn in (("grouped", grouped), ("loop", loop)):
                    t0 = time.perf_counter()
                    fn(*inputs)
                    times[name].append(time.perf_counter() - t0)
            equal = torch.equal(grouped(*inputs), loop(*inputs))
        g, lp = (statistics.median(times[k]) * 1e3 for k in ("grouped", "loop"))
        print(f"| {tokens} | {len(xs)} | {g:.1f} | {lp:.1f} | {lp / g:.2f} | {equal} |")


if __name__ == "__main__":
    main()
