"""Helpers for the evaluation tests: a transformer that records what it was asked to encode."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin


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


class SharedLog(list):
    """A list that ``sklearn.clone`` (which deep-copies parameters) shares with the clone."""

    def __deepcopy__(self, memo):
        return self


class FittingRecorder(BaseEstimator, TransformerMixin):
    """An unfitted scikit-learn transformer whose ``fit_transform`` encodes its texts (as
    ``MoEEmbeddingTransformer(center=True)`` does to learn its centre); every text it encodes,
    in any clone, is appended to ``log``."""

    def __init__(self, log=None, dim=8):
        self.log = log
        self.dim = dim

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        out = self.transform(X)
        self.fitted_ = True
        return out

    def transform(self, X):
        texts = list(X)
        self.log.extend(texts)
        return RecordingTransformer(dim=self.dim).transform(texts)


@pytest.fixture
def fitting_recorder():
    return FittingRecorder


@pytest.fixture
def shared_log():
    """An empty :class:`SharedLog` for :class:`FittingRecorder`."""
    return SharedLog()
