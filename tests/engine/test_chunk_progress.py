"""``long_text="chunk"``: texts complete all through a run, not at its end.

Every window of a group (up to ``GROUP_TOKENS``, millions of tokens) was sorted longest first,
so each text's shorter last window ran at the end: an interrupted run had cached 1 of 600 texts
at 50% of its time, and the bar sat at 0 for 26 s of a 42 s run. The windows are now planned
so that the texts complete batch after batch (:func:`plan_text_batches`), with the padding and
about the number of forward passes of the old plan, and the same vectors.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import skmoe.engine.runner as runner_module
from skmoe import MoEEmbeddingTransformer
from skmoe.datasets import load_sib200_sample
from skmoe.encoder import load_encoder
from skmoe.engine import Engine, plan_batches
from skmoe.engine.batching import padding_fraction, plan_text_batches
from skmoe.engine.windows import WindowPool, iter_window_groups

MAX_LENGTH, OVERLAP = 32, 4


@pytest.fixture(scope="module")
def encoder(fast_moe):
    return load_encoder(fast_moe, device="cpu")


def documents(n: int, seed: int = 0) -> list[str]:
    """SIB-200 sample sentences joined into documents of 1 to 12 sentences (1 to ~12 windows
    of 32 tokens), as a corpus of mixed lengths is."""
    base = list(load_sib200_sample().text)
    rng = random.Random(seed)
    return [" ".join(rng.sample(base, rng.choice([1, 1, 2, 3, 5, 8, 12]))) for _ in range(n)]


def windows(encoder, texts):
    (group,) = iter_window_groups(encoder.tokenizer, texts, "", MAX_LENGTH, OVERLAP)
    return group


def completed_at(batches, lengths, owner, share: float) -> float:
    """Share of the texts whose windows have all run once ``share`` of the tokens have."""
    left = np.bincount(owner).astype(np.int64)
    spent, total = 0, lengths.sum()
    for batch in batches:
        np.subtract.at(left, owner[batch.rows], 1)
        spent += lengths[batch.rows].sum()
        if spent >= share * total:
            break
    return float(np.mean(left[np.unique(owner)] == 0))


@pytest.mark.parametrize("max_padding", [None, 0.05], ids=["moe", "dense"])
def test_texts_complete_all_through_a_group_with_the_same_batching_cost(encoder, max_padding):
    group = windows(encoder, documents(300))
    lengths, owner = group.ids.lengths, group.owner
    assert len(lengths) > 3 * len(np.unique(owner))  # mostly long texts
    old = plan_batches(lengths, 128, 2048, max_padding=max_padding)
    new = plan_text_batches(lengths, owner, 128, 2048, max_padding=max_padding)
    assert completed_at(old, lengths, owner, 0.5) < 0.05  # what the audit saw
    for share in (0.25, 0.5, 0.75):
        assert completed_at(new, lengths, owner, share) >= 0.6 * share
    assert len(new) <= len(old) + 2  # forward passes (real tokens per pass) as before
    if max_padding is not None:  # the MoE model runs real tokens only: its padding is free
        assert padding_fraction(new, lengths) <= padding_fraction(old, lengths) + 0.01


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_runs_every_window_once_within_the_budgets(seed):
    rng = np.random.default_rng(seed)
    full = int(rng.integers(8, 64))
    windows_per_text = rng.choice([1, 1, 2, 3, 10, 40], size=200)
    lengths, owner = [], []
    for text, n in enumerate(windows_per_text):
        lengths += [full] * (n - 1) + [int(rng.integers(3, full + 1))]
        owner += [text] * n
    lengths, owner = np.array(lengths), np.array(owner)
    for kwargs in ({}, {"max_padding": 0.05}, {"exact": True}):
        batches = plan_text_batches(lengths, owner, 64, 16 * full, **kwargs)
        rows = np.concatenate([b.rows for b in batches])
        assert sorted(rows.tolist()) == list(range(len(lengths)))
        for b in batches:
            assert b.max_len == lengths[b.rows].max() and len(b.rows) <= 64
            assert b.padded_tokens <= 16 * full
            assert np.all(np.diff(lengths[b.rows]) <= 0)  # longest first, as plan_batches
            if kwargs.get("exact"):
                assert len(set(lengths[b.rows])) == 1
            if "max_padding" in kwargs:
                assert 1 - lengths[b.rows].sum() / b.padded_tokens <= 0.05 + 1e-9
        assert batches[0].max_len == full  # the peak memory shows first
    # rows that are not windows (full rows of different lengths): the old plan
    odd = np.array([5, 9, 3, 7])
    assert [b.rows.tolist() for b in plan_text_batches(odd, [0, 0, 0, 1], 2)] == \
        [b.rows.tolist() for b in plan_batches(odd, 2)]


def chunker(cache=None):
    return MoEEmbeddingTransformer(
        "unused", prompt="", verbose=0, center=False, cache=cache, long_text="chunk",
        max_length=MAX_LENGTH, chunk_overlap=OVERLAP)


def test_an_interrupted_chunk_run_has_cached_the_texts_it_finished(fast_moe, tmp_path,
                                                                   monkeypatch):
    """Interrupted (KeyboardInterrupt, the Stop button) after half its forward passes, a run
    keeps about half of the texts; the re-run computes only the rest, with the same vectors."""
    texts = documents(120, seed=1)
    make = lambda cache=None: chunker(cache).set_params(model=str(fast_moe)).fit([])  # noqa: E731
    launched = []
    real = Engine._launch

    def counting(self, ids, batch):
        launched.append(len(batch.rows))
        return real(self, ids, batch)

    monkeypatch.setattr(Engine, "_launch", counting)
    whole = make().transform(texts)
    calls = len(launched)
    assert calls >= 8

    def interrupting(self, ids, batch):
        launched.append(len(batch.rows))
        if len(launched) > calls // 2:
            raise KeyboardInterrupt
        return real(self, ids, batch)

    launched.clear()
    monkeypatch.setattr(Engine, "_launch", interrupting)
    est = make(str(tmp_path / "cache.sqlite"))
    with pytest.raises(KeyboardInterrupt):
        est.transform(texts)
    kept = est.cache_stats().entries
    assert kept >= 0.3 * len(texts)  # it was 0 or 1: every text's last window ran at the end

    launched.clear()
    monkeypatch.setattr(Engine, "_launch", counting)
    again = make(str(tmp_path / "cache.sqlite")).transform(texts)
    assert len(launched) < calls
    np.testing.assert_allclose(again, whole, atol=1e-6)


def test_chunked_vectors_are_those_of_the_old_plan(fast_moe, encoder, monkeypatch):
    """The same vectors as before (the token-weighted mean of each text's windows from the
    old, longest-first plan), at the tolerance of the other chunk tests."""
    texts = documents(80, seed=2)
    new = chunker().set_params(model=str(fast_moe), normalize=False).fit([]).transform(texts)
    monkeypatch.setattr(runner_module, "plan_text_batches",
                        lambda lengths, owner, *a, **k: plan_batches(lengths, *a, **k))
    old = chunker().set_params(model=str(fast_moe), normalize=False).fit([]).transform(texts)
    np.testing.assert_allclose(new, old, atol=1e-6)
    group = windows(encoder, texts)
    pool = WindowPool(group.owner, group.ids.lengths, encoder.embedding_dim)
    engine = Engine(encoder, max_length=MAX_LENGTH)
    done, vectors = pool.add(np.arange(len(group.owner)), engine.embed_ids(group.ids))
    want = np.empty_like(new)
    want[done] = vectors
    np.testing.assert_allclose(new, want, atol=1e-6)
