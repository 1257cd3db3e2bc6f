"""Pair similarity and pair features for sentence-pair classification and regression."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted

from .postprocessing import cosine_matrix, cosine_rows, declared_output_dtype, refuse_coded
from .validation import split_pairs

__all__ = ["PAIR_FEATURES", "PairFeatures", "cosine_matrix", "cosine_rows", "split_pairs"]

PAIR_FEATURES = ("cosine", "abs_diff", "product")


class PairFeatures(TransformerMixin, BaseEstimator):
    """Features of text pairs for a downstream classifier or regressor.

    Each pair ``(a, b)`` becomes the concatenation of the requested features of their embeddings
    ``u`` and ``v``: ``cosine`` (1 column), ``abs_diff`` ``|u - v|`` and ``product`` ``u * v``
    (``d`` columns each) — the classic SBERT pair head input. ``u`` and ``v`` are the fitted
    embedder's ``transform`` output: for the default ``MoEEmbeddingTransformer`` fitted on the
    training pairs' texts, centred on their mean (so ``cosine`` is the centred cosine, not
    :meth:`MoEEmbeddingTransformer.similarity`'s).

    Parameters
    ----------
    embedder : transformer, optional
        Maps a list of texts to embeddings; default ``MoEEmbeddingTransformer()``.
    features : tuple of str, default=("cosine", "abs_diff", "product")
    """

    def __init__(self, embedder: Any = None, features: tuple[str, ...] = PAIR_FEATURES) -> None:
        self.embedder = embedder
        self.features = features

    def fit(self, X: Any, y: Any = None) -> PairFeatures:
        unknown = [f for f in self.features if f not in PAIR_FEATURES]
        if unknown or not self.features or len(set(self.features)) < len(self.features):
            raise ValueError(f"features must be a non-empty subset of {PAIR_FEATURES}, each "
                             f"once, got {self.features!r}")
        a, b = split_pairs(X)
        if self.embedder is None:
            from .estimator import MoEEmbeddingTransformer

            embedder = MoEEmbeddingTransformer()
        else:
            embedder = clone(self.embedder)
        refuse_coded(declared_output_dtype(embedder), "PairFeatures")
        self.embedder_ = embedder.fit(a + b)
        dim = getattr(self.embedder_, "n_features_out_", None)
        if dim is None:  # a generic embedder: ask it once
            dim = self._embed(a[:1]).shape[1]
        self.n_features_out_ = sum(1 if f == "cosine" else dim for f in self.features)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X, y).transform(X)``, reading ``X`` once: a one-shot iterable of pairs such
        as ``zip(a, b)`` (used up by ``fit``, then "shape (0,)" in ``transform``; a
        ``Pipeline`` calls this) works as documented."""
        if hasattr(X, "__iter__") and not hasattr(X, "__len__"):
            X = list(X)
        return self.fit(X, y, **fit_params).transform(X)

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        a, b = split_pairs(X)
        both = self._embed(a + b)
        u, v = both[: len(a)], both[len(a) :]
        parts = {
            "cosine": lambda: cosine_rows(u, v)[:, None],
            "abs_diff": lambda: np.abs(u - v),
            "product": lambda: u * v,
        }
        return np.ascontiguousarray(np.hstack([parts[f]() for f in self.features]), dtype=np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = self.embedder_.transform(texts)
        if hasattr(out, "toarray"):  # sparse output (e.g. TfidfVectorizer)
            out = out.toarray()
        return np.asarray(out, dtype=np.float32)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        dim = (self.n_features_out_ - ("cosine" in self.features)) // max(
            1, sum(f != "cosine" for f in self.features)
        )
        names: list[str] = []
        for f in self.features:
            names += ["cosine"] if f == "cosine" else [f"{f}_{i}" for i in range(dim)]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self) -> Tags:  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # float32 whatever the embedder gives
        return tags
