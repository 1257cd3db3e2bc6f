"""The token-state memo (:mod:`skmoe.token_states`): texts reach it as they finish, so an
interrupted run keeps its work; ``clear_memo`` gives the memory back; the memo counts what its
entries occupy."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from skmoe import token_states as ts
from skmoe.datasets import load_sib200_sample
from skmoe.encoder import load_encoder


@pytest.fixture(scope="module")
def encoder(fast_moe):
    return load_encoder(fast_moe, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _empty_memo():
    """One intra-op thread comes from tests/engine/conftest.py; the memo is left empty."""
    yield
    ts.clear_memo()


def documents(n: int, seed: int = 0) -> list[str]:
    base = list(load_sib200_sample().text)
    rng = random.Random(seed)
    return [" ".join(rng.sample(base, rng.choice([1, 2, 3, 6]))) for _ in range(n)]


pytestmark = pytest.mark.filterwarnings("ignore:.*exceed the maximum length")

SETTINGS = {"truncate": {"long_text": "truncate"},
            "chunk": {"long_text": "chunk", "chunk_overlap": 4}}


def states(encoder, texts, long_text, **kwargs):
    return ts.token_states(encoder, texts, "", 32, **SETTINGS[long_text], batch_size=8,
                           verbose=0, **kwargs)


@pytest.mark.parametrize("long_text", ["truncate", "chunk"])
def test_an_interrupted_run_keeps_the_texts_it_finished(encoder, long_text, monkeypatch):
    """Stopped halfway, LearnedPooling's token states had computed 326 of 896 texts and the
    memo held none: the re-run put all 896 through the encoder again."""
    texts = documents(96)
    ts.clear_memo()
    before = ts.STATS["forward_calls"]
    whole = states(encoder, texts, long_text)
    calls = ts.STATS["forward_calls"] - before
    assert calls >= 12
    ts.clear_memo()
    real, seen = ts.collate, []

    def interrupting(*args, **kwargs):
        seen.append(1)
        if len(seen) > calls // 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "collate", interrupting)
    with pytest.raises(KeyboardInterrupt):
        states(encoder, texts, long_text)
    assert len(ts._MEMO) >= 0.3 * len(texts)
    monkeypatch.setattr(ts, "collate", real)
    before = ts.STATS["forward_calls"]
    again = states(encoder, texts, long_text)
    assert ts.STATS["forward_calls"] - before < 0.75 * calls  # not all again
    for (a, mean_a), (b, mean_b) in zip(again, whole, strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(mean_a, mean_b, atol=1e-5)


def test_chunked_token_states_show_progress_text_by_text(encoder, monkeypatch):
    """In chunk mode the bar moved once per group of windows (up to millions of tokens)."""
    ticks: list[int] = []

    class Progress:
        def __init__(self, total, verbose, desc):
            pass

        def __enter__(self):
            return ticks.append

        def __exit__(self, *exc):
            pass

    texts = documents(64, seed=1)
    ts.clear_memo()
    monkeypatch.setattr(ts, "progress", Progress)
    states(encoder, texts, "chunk")
    assert sum(ticks) == len(texts)
    assert len(ticks) >= 6 and ticks[0] < len(texts) / 3


def test_clearing_the_memo_hands_the_heap_back(encoder, monkeypatch):
    """clear_memo freed the entries but RSS did not move until malloc_trim."""
    order = []
    monkeypatch.setattr(ts, "trim_heap", lambda: order.append(len(ts._MEMO)) or True)
    states(encoder, documents(8), "truncate")
    ts.clear_memo()
    assert order == [0]  # trimmed once the entries were gone


MEASURE = """
import sys, torch
from skmoe import token_states as ts
from skmoe.encoder import load_encoder
from skmoe.encoder.pages import trim_heap
def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS"))
torch.set_num_threads(1)
encoder = load_encoder(sys.argv[1], device="cpu")
words = [f"w{i} x{i % 97}" for i in range(6000)]
ts.token_states(encoder, words[:500], verbose=0)  # allocations of the first batches
ts.clear_memo()
ts.token_states(encoder, words, verbose=0)
trim_heap()
held = rss()
counted = ts._MEMO_BYTES
ts.clear_memo()  # the entries go, and their pages should go back to the OS
print(counted, held - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and glibc malloc_trim")
def test_the_memo_counts_what_its_entries_occupy_and_clearing_returns_it(fast_moe):
    """Short texts on a 64-d model: an entry's objects (key, text, tensor and array headers)
    weigh as much as its states. Counted were the states and the mean alone (19 MiB for 31
    MiB given back by clearing 20,000 entries), so MEMO_MAX_BYTES let the memo grow past it;
    and clearing gave nothing back (RSS +0.0 MB) until malloc_trim. Measured in a fresh
    process: in one that has run other tests the entries land in holes of a fragmented heap."""
    done = subprocess.run([sys.executable, "-c", MEASURE, str(fast_moe)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    counted, freed = map(int, done.stdout.split()[-2:])
    assert freed > 0.5 * counted  # without the trim: nothing
    assert freed <= counted <= 2 * freed


def test_a_view_counts_the_buffer_it_keeps_alive():
    big = torch.zeros(100, 64, dtype=torch.float16)
    mean = np.zeros((4, 64), dtype=np.float32)
    key = ("model", "text")
    small = ts._nbytes(key, (big[:2].clone(), mean[0].copy()))
    view = ts._nbytes(key, (big[:2], mean[0]))
    assert view - small == (100 - 2) * 64 * 2 + 3 * 64 * 4
