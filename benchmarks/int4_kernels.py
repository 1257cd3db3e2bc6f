"""Time per matmul at the model's shapes: fp32 nn.Linear, int8 (Int8Linear), the int4 candidates.

Usage: python benchmarks/int4_kernels.py [THREADS] (prints a markdown table; docs/performance.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from skmoe.engine.int4 import Int4Linear, quantize_int4
from skmoe.engine.precision import Int8Linear, int8_weight_bits

SHAPES = [(2048, 768, 2304, "Wqkv"), (2048, 768, 768, "out_proj"), (2048, 768, 3072, "dense fc1"),
          (2048, 3072, 768, "dense fc2"), (200, 768, 3072, "expert up"),
          (200, 3072, 768, "expert down")]
G = 32


def best(f: Callable[[], object], reps: int = 5) -> float:
    """Best of ``reps`` timings after one warm-up call, in ms."""
    f()
    out = 1e9
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - t)
    return out * 1e3


def row(M: int, K: int, N: int, bits: int) -> list[float]:
    lin = nn.Linear(K, N)
    nn.init.normal_(lin.weight, std=0.02)
    x = torch.randn(M, K)
    i8, i4 = Int8Linear(lin, bits), Int4Linear(lin, G)
    q, s, z = quantize_int4(lin.weight.detach(), G)
    q8 = (q - 8).to(torch.int8).view(N, K // G, G)
    sf, zf = s.float()[..., None], z.float()[..., None]
    packed, sz = i4.weight4.packed, i4.weight4.scale_zeros.float()

    def dequantise_tiles(tile: int = 256) -> torch.Tensor:
        out = torch.empty(M, N)
        for a in range(0, N, tile):
            w = torch.addcmul(zf[a : a + tile], q8[a : a + tile].float(), sf[a : a + tile])
            torch.mm(x, w.view(-1, K).t(), out=out[:, a : a + tile])
        return out

    def int4_fp32_activations() -> torch.Tensor:  # a reference loop: 16 rows, scaled up
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x[:16], packed, G, sz)

    with torch.inference_mode():
        return [best(lambda: lin(x)), best(lambda: i8(x)), best(lambda: i4(x)),
                best(int4_fp32_activations, 2) * M / 16, best(dequantise_tiles)]


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    bits = int8_weight_bits()
    print("| matmul (tokens x in -> out) | fp32 | int8 (oneDNN, per-row act.) | int4 packed kernel, "
          "bf16 act. (chosen) | int4 packed kernel, fp32 act. | int4 dequantise tile + fp32 GEMM |")
    print("|---|---|---|---|---|---|")
    for M, K, N, label in SHAPES:
        times = row(M, K, N, bits)
        print(f"| {label} {M} x {K} -> {N} | " + " | ".join(f"{v:.1f} ms" for v in times) + " |",
              flush=True)


if __name__ == "__main__":
    main()
