"""Helpers for the evaluation tests: a transformer that records what it was asked to encode."""

from __future__ import annotations

import numpy as np
import pytest


class RecordingTransformer:
    """``transform`` looks texts up in a dict (or hashes them) and records every call."""

    def __init__(self, table: dict[str, np.ndarray] | None = None, dim: int = 8) -> None:
        self.table = table
        self.dim = dim
        self.calls: list[list[str]] = []

    def transform(self, texts):
        texts = list(texts)
        self.calls.append(texts)
        if self.table is not None:
            return np.stack([np.asarray(self.table[t], dtype=np.float64) for t in texts])
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            rng = np.random.default_rng(abs(hash(t)) % (2**32))
            out[i] = rng.normal(size=self.dim)
        return out

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture
def recorder():
    return RecordingTransformer
