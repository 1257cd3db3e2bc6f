"""LearnedPooling pads texts of similar length together: one long ``long_text="chunk"`` document
among short texts no longer makes every padded tensor ``batch x L_long x H``.

The padded tensors are recorded at ``_learned_pooling_fit.pad`` (their ``[B, S]`` shapes), with
the padded-token budget made small so that a document of a few hundred tokens exceeds it.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_learned_pooling import keyword_task

import skmoe._learned_pooling_fit as lpf
from skmoe import LearnedPooling

BUDGET = 256  # padded tokens per tensor in these tests (PAD_TOKENS)
LONG = " ".join(f"word{i} is here." for i in range(150))  # 1,325 tokens of states, chunked
PARAMS = dict(long_text="chunk", max_length=32, chunk_overlap=8, random_state=0, verbose=0)


@pytest.fixture
def padded(monkeypatch) -> list[tuple[int, int]]:
    """The ``(texts, tokens)`` of every padded tensor built while the test runs."""
    shapes: list[tuple[int, int]] = []
    real = lpf.pad

    def spy(states):
        h, mask, means = real(states)
        shapes.append(tuple(h.shape[:2]))
        return h, mask, means

    monkeypatch.setattr(lpf, "pad", spy)
    monkeypatch.setattr(lpf, "PAD_TOKENS", BUDGET)
    return shapes


def assert_bounded(shapes: list[tuple[int, int]]) -> None:
    """No tensor of several texts holds more than the budget's padded tokens."""
    assert shapes
    over = [(b, s) for b, s in shapes if b > 1 and b * s > BUDGET]
    assert not over, f"padded [texts, tokens] over {BUDGET} tokens: {over[:5]}"


def test_transform_pads_a_long_text_apart_from_short_ones(fast_moe, padded):
    """Audit 8, D1: transform padded 256 texts at a time to the longest one: with one chunked
    document of 40,759 tokens among 255 short texts it took +6.2 GB on the 64-d model (12x that
    at 768-d). The vectors are those of each text pooled alone, in the input's order."""
    texts, y = keyword_task(40, seed=15)
    est = LearnedPooling(fast_moe, max_iter=2, **PARAMS).fit(texts, y)
    long_tokens = len(est.token_weights([LONG]))
    assert long_tokens > BUDGET
    mixed = texts[:20] + [LONG] + texts[20:]
    alone = np.vstack([est.transform([t]) for t in mixed])
    padded.clear()
    got = est.transform(mixed)
    assert_bounded(padded)
    np.testing.assert_allclose(got, alone, atol=1e-6, rtol=0)
    counts = est.token_weights(mixed).groupby("text").size()  # rows back in the input's order
    assert counts[20] == long_tokens and counts[0] == len(est.token_weights([mixed[0]]))


def test_training_batches_pad_a_long_text_apart_from_short_ones(fast_moe, padded):
    """Audit 8, D1: a training batch was padded to its longest text: one chunked document among
    127 short texts took +3.1 GB for one epoch on the 64-d model."""
    texts, y = keyword_task(40, seed=16)
    texts[5] = LONG + " apple"
    LearnedPooling(fast_moe, max_iter=2, batch_size=16, **PARAMS).fit(texts, y)
    assert_bounded(padded)
    assert max(s for _, s in padded) > BUDGET  # the long text was there, padded alone
