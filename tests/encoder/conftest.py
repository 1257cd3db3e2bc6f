"""Encoder tests run tiny models: one intra-op thread avoids thread-pool overhead that, on a
loaded 2-core machine, made each small op ~30x slower (measured 2.5 s vs 0.08 s per naive forward)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def minilm_encoder(minilm_path):
    """all-MiniLM-L6-v2 loaded once for the encoder tests (read-only use)."""
    from skmoe import load_encoder

    return load_encoder(minilm_path, device="cpu")
