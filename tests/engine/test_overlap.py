"""Host work overlapping the forward: the next chunk is tokenized in a worker thread, batches
are pipelined one deep; results, warnings and errors are those of the serial road."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from skmoe.cache import EmbeddingCache
from skmoe.embedding import Embedder
from skmoe.encoder import load_encoder
from skmoe.engine import Engine
from skmoe.engine.prefetch import prefetched
from skmoe.engine.runner import TruncationWarning


@pytest.fixture(scope="module")
def encoder(random_moe_xlmr_path):
    return load_encoder(random_moe_xlmr_path, device="cpu")


@pytest.fixture
def texts(sib_texts):
    return sib_texts  # 64 texts, 32 languages (tests/engine/conftest.py)


# -- prefetched ---------------------------------------------------------------------------------


def test_prefetched_keeps_order_and_runs_ahead():
    produced: list[int] = []
    ahead = threading.Event()

    def items():
        for i in range(5):
            produced.append(i)
            if i == 1:
                ahead.set()  # made while the consumer still holds item 0
            yield i

    stream = prefetched(items())
    assert next(stream) == 0
    assert ahead.wait(5), "the worker did not prepare item 1 while item 0 was in use"
    assert list(stream) == [1, 2, 3, 4]
    assert produced == [0, 1, 2, 3, 4]


def test_prefetched_raises_the_workers_error_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise KeyError("row 3 is bad")

    got = []
    with pytest.raises(KeyError, match="row 3 is bad"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_worker():
    closed = threading.Event()

    def items():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    before = threading.active_count()
    stream = prefetched(items())
    assert next(stream) == 0
    stream.close()
    assert closed.wait(5)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_prefetched_refuses_depth_zero():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        list(prefetched([1], depth=0))


# -- the engine ---------------------------------------------------------------------------------


def _chunks(texts, size):
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def test_prefetching_gives_the_serial_vectors_bit_for_bit(encoder, texts):
    def run(prefetch):
        out = np.full((len(texts), encoder.embedding_dim), np.nan, dtype=np.float32)
        for number, done, vectors, _ in Engine(encoder, batch_size=8).iter_embed_chunks(
                _chunks(texts, 16), "query: ", prefetch=prefetch):
            out[number * 16 + done] = vectors
        return out

    serial, overlapped = run(False), run(True)
    assert not np.isnan(serial).any()
    np.testing.assert_array_equal(overlapped, serial)


def test_the_next_chunk_is_tokenized_while_the_current_one_runs(encoder, texts, monkeypatch):
    """The first chunk's forward waits until the second chunk's tokenization has started in
    another thread: without the overlap it would wait in vain (and the test fails)."""
    engine = Engine(encoder, batch_size=64)
    real_token_ids, real_launch = engine._token_ids, engine._launch
    second_started = threading.Event()
    threads: list[str] = []

    def token_ids(batch):
        threads.append(threading.current_thread().name)
        if len(threads) == 2:
            second_started.set()
        return real_token_ids(batch)

    overlapped: list[bool] = []

    def launch(ids, batch):
        if not overlapped:
            overlapped.append(second_started.wait(10))
        return real_launch(ids, batch)

    monkeypatch.setattr(engine, "_token_ids", token_ids)
    monkeypatch.setattr(engine, "_launch", launch)
    got = list(engine.iter_embed_chunks(_chunks(texts, 32), "query: "))
    assert overlapped == [True]
    assert threads == ["skmoe-prefetch", "skmoe-prefetch"]
    assert sum(len(done) for _, done, _, _ in got) == len(texts)


def test_batches_are_pipelined_one_deep(encoder, texts, monkeypatch):
    """Batch k + 1 is launched before batch k is read back (on a GPU the host then waits on k's
    copy while k + 1 runs); every batch is read back once, in order."""
    engine = Engine(encoder, batch_size=8)
    events: list[str] = []
    real_launch, real_finish = engine._launch, engine._finish

    def launch(ids, batch):
        events.append(f"launch {batch.rows.min()}")
        return real_launch(ids, batch)

    def finish(batch, launched):
        events.append(f"finish {batch.rows.min()}")
        return real_finish(batch, launched)

    monkeypatch.setattr(engine, "_launch", launch)
    monkeypatch.setattr(engine, "_finish", finish)
    rows = [r for r, _ in engine.iter_batches(encoder.tokenize(texts[:32])[0])]
    assert len(rows) == 4 and sorted(np.concatenate(rows)) == list(range(32))
    launches = [e for e in events if e.startswith("launch")]
    expected = [launches[0]]
    for first, second in zip(launches, launches[1:], strict=False):
        expected += [second, first.replace("launch", "finish")]
    expected.append(launches[-1].replace("launch", "finish"))
    assert events == expected
    events.clear()
    list(engine.iter_batches(encoder.tokenize(texts[:32])[0], pipelined=False))
    assert events == [e for launch in launches  # routing reads each batch's records at once
                      for e in (launch, launch.replace("launch", "finish"))]


def test_truncation_is_warned_in_the_callers_thread_at_the_callers_line(encoder):
    long_text = "word " * 600
    embedder = Embedder.for_encoder(encoder, "", chunk_size=1)
    with pytest.warns(TruncationWarning, match="maximum length") as caught:
        embedder.embed(["short", long_text, "also short"])
    assert caught[0].filename == __file__


def test_a_tokenizer_error_in_a_later_chunk_keeps_the_chunks_before_it(encoder, texts,
                                                                      tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    embedder = Embedder.for_encoder(encoder, "query: ", cache=cache, chunk_size=8)
    engine = embedder.engine
    real_token_ids = engine._token_ids

    def token_ids(batch):
        if any("BROKEN" in t for t in batch):
            raise RuntimeError("tokenizer failed on a BROKEN text")
        return real_token_ids(batch)

    monkeypatch.setattr(engine, "_token_ids", token_ids)
    with pytest.raises(RuntimeError, match="BROKEN"):
        embedder.embed(list(texts[:16]) + ["BROKEN text"])
    found, _ = cache.lookup(embedder.namespace, list(texts[:16]))
    assert found.all()  # both chunks before the failing one were computed and kept


def test_an_oom_on_a_single_row_still_hands_over_the_batch_in_flight(encoder, texts, monkeypatch):
    import torch

    engine = Engine(encoder, batch_size=1)
    real_launch, launches = engine._launch, []

    def launch(ids, batch):
        launches.append(len(batch.rows))
        if len(launches) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_launch(ids, batch)

    monkeypatch.setattr(engine, "_launch", launch)
    got = []
    with pytest.raises(torch.OutOfMemoryError):
        for rows, _ in engine.iter_batches(encoder.tokenize(texts[:3])[0]):
            got.append(rows)
    assert launches == [1, 1] and len(got) == 1  # the first batch was in flight: not lost
