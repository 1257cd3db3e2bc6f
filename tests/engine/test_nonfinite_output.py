"""Non-finite pooled vectors stop the run with an error that says what happened (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skmoe import MoEEmbeddingTransformer
from skmoe.encoder.checkpoint import NonFiniteOutputError
from skmoe.registry import get_encoder


def test_nan_from_the_forward_is_an_error_and_earlier_batches_stay_cached(fast_moe, tmp_path,
                                                                          monkeypatch):
    cache = str(tmp_path / "c.sqlite")
    est = MoEEmbeddingTransformer(fast_moe, cache=cache, batch_size=1, verbose=0).fit([])
    encoder = get_encoder(fast_moe, device="cpu")
    real = encoder.pool_packed
    calls = []

    def pool_then_overflow(hidden, cu_seqlens, max_seqlen):
        calls.append(1)
        out = real(hidden, cu_seqlens, max_seqlen)
        return out if len(calls) == 1 else torch.full_like(out, float("nan"))

    monkeypatch.setattr(encoder, "pool_packed", pool_then_overflow)
    with pytest.raises(NonFiniteOutputError, match="non-finite vectors"):
        est.transform(["first text", "second text"])
    monkeypatch.setattr(encoder, "pool_packed", real)
    hits_before = est.cache_stats().hits
    out = est.transform(["first text", "second text"])
    assert np.isfinite(out).all()
    assert est.cache_stats().hits == hits_before + 1  # the batch finished before the NaN was kept
