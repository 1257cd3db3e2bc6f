"""Memory stays flat while streaming many texts to disk (cheap version of the benchmark's
2k-vs-20k measurement, which is in benchmarks/memory_flat.py and benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_flat.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("memory_flat", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_peak_rss_flat_from_1k_to_5k_texts(random_moe_xlmr_path, sib200_dir):
    small, large = load_bench().measure(random_moe_xlmr_path, [1000, 5000], sib200_dir,
                                        chunk_size=1000, threads=1)
    assert large["real_tokens"] > 4 * small["real_tokens"]  # really five times the work
    assert large["npy_bytes"] == 5 * small["npy_bytes"] - 4 * 128  # one header per file
    assert large["peak_rss_mb"] <= 1.10 * small["peak_rss_mb"], (small, large)
