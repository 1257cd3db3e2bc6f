"""Turn "texts + any transformer" or "precomputed embeddings" into embedding rows.

Every report in :mod:`skmoe.evaluation` accepts either form. :class:`EmbeddingSource` encodes
lazily and only what a report asks for, each distinct text once (MTEB's trick: the union of
all few-shot draws is encoded in one call, never once per draw).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..postprocessing import declared_output_dtype, refuse_coded
from ..validation import as_column, check_finite_rows, validate_texts


class EmbeddingSource:
    """Embedding rows on demand, from texts and a transformer or from a precomputed matrix.

    Parameters
    ----------
    X : sequence of str or array-like of shape (n_samples, n_features)
        Texts (when ``transformer`` is given) or precomputed embeddings.
    transformer : object with ``transform(list[str])``, optional
        Any scikit-learn transformer, e.g. :class:`skmoe.MoEEmbeddingTransformer` or a
        ``Pipeline``. An unfitted one is not modified: a clone is fitted once on ``fit_texts``
        (for the frozen MoE encoder, fitting only records the model's identity). Sparse outputs
        are densified.
    fit_texts : sequence of str, optional
        Texts to fit an unfitted transformer on (reports pass their training texts only).
        Default: ``X``.
    name : str, default="X"
        The argument's name in errors (``"X2: Missing text at row 3"``).
    learn_center : bool, default=True
        ``False``: an unfitted transformer's clone is fitted with ``center=False`` (every
        ``center`` parameter, a Pipeline's steps' too), so reports without training texts (STS,
        bitext) score the model's own vectors rather than vectors centred on the evaluated texts.
    floats_for : str, optional
        The report's name: refuse quantized codes (``output_dtype`` int8, uint8, binary or
        ubinary), before any text is encoded when the transformer declares them.

    Attributes
    ----------
    n_encoded_ : int
        Distinct texts encoded so far (0 for precomputed embeddings).
    n_transform_calls_ : int
        Calls made to ``transformer.transform``.
    """

    def __init__(self, X: Any, transformer: Any | None = None, fit_texts: Any = None,
                 name: str = "X", learn_center: bool = True,
                 floats_for: str | None = None) -> None:
        self.transformer = transformer
        self._floats_for = floats_for
        self.n_encoded_ = 0
        self.n_transform_calls_ = 0
        if X is None:
            raise TypeError(f"{name} is None: pass texts (with transformer=...) or embeddings")
        if transformer is None:
            arr = X.toarray() if sp.issparse(X) else np.asarray(X)
            if arr.dtype.kind in "OUS":
                raise TypeError(
                    f"{name} holds texts but no transformer was given: pass transformer=... "
                    "(e.g. MoEEmbeddingTransformer) or precomputed embeddings"
                )
            if arr.ndim != 2 or arr.dtype.kind not in "fiu":
                raise ValueError(
                    f"precomputed embeddings must be a 2-D numeric array, got shape {arr.shape} "
                    f"and dtype {arr.dtype}"
                )
            self._refuse_coded(arr.dtype)
            self._matrix: np.ndarray | None = check_finite_rows(arr, name)
            self._n = arr.shape[0]
        else:
            if not hasattr(transformer, "transform"):
                raise TypeError(f"transformer must have a transform method, got {transformer!r}")
            texts = validate_texts(X, name)
            self._refuse_coded(declared_output_dtype(transformer))
            fit_on = texts if fit_texts is None else validate_texts(fit_texts, "fit texts")
            self.transformer, fit_out = _fitted(transformer, fit_on, learn_center)
            codes, uniques = pd.factorize(pd.Series(texts, dtype=object), sort=False)
            self._codes = np.asarray(codes, dtype=np.int64)
            self._unique: list[str] = list(uniques)
            self._vectors: np.ndarray | None = None  # [n_unique, dim], allocated on first encode
            self._done = np.zeros(len(self._unique), dtype=bool)
            self._matrix = None
            self._n = len(texts)
            if fit_out is not None:  # fitting encoded these texts: keep their rows
                where = pd.Index(self._unique).get_indexer(pd.Index(fit_on, dtype=object))
                self._store(where[where >= 0], self._checked(fit_out, len(fit_on))[where >= 0])

    def __len__(self) -> int:
        return self._n

    @property
    def n_distinct(self) -> int:
        """Distinct texts (or rows, for precomputed embeddings)."""
        return self._n if self._matrix is not None else len(self._unique)

    def prefetch(self, rows: Any = None) -> None:
        """Encode, in one ``transform`` call, the not-yet-encoded distinct texts among ``rows``."""
        if self._matrix is not None:
            return
        rows = np.arange(self._n) if rows is None else np.asarray(rows, dtype=np.int64)
        codes = np.unique(self._codes[rows])
        todo = codes[~self._done[codes]]
        if len(todo) == 0:
            return
        out = self.transformer.transform([self._unique[c] for c in todo])
        self.n_transform_calls_ += 1
        self._store(todo, self._checked(out, len(todo)))

    def _refuse_coded(self, dtype: Any) -> None:
        if self._floats_for is not None:
            refuse_coded(dtype, self._floats_for)

    def _checked(self, out: Any, n: int) -> np.ndarray:
        out = out.toarray() if sp.issparse(out) else np.asarray(out)
        self._refuse_coded(out.dtype)
        if out.ndim != 2 or out.shape[0] != n:
            raise ValueError(
                f"transformer returned shape {out.shape} for {n} texts; expected "
                f"({n}, n_features)"
            )
        return out

    def _store(self, codes: np.ndarray, out: np.ndarray) -> None:
        """Keep the rows ``out`` of the distinct texts ``codes`` (each code once)."""
        codes, first = np.unique(codes, return_index=True)
        if self._vectors is None:
            self._vectors = np.zeros((len(self._unique), out.shape[1]), dtype=out.dtype)
        self._vectors[codes] = out[first]
        self.n_encoded_ += int((~self._done[codes]).sum())
        self._done[codes] = True

    def get(self, rows: Any = None) -> np.ndarray:
        """Embeddings of ``rows`` (all rows when ``None``), encoding what is missing first."""
        if self._matrix is not None:
            return self._matrix if rows is None else self._matrix[np.asarray(rows, dtype=np.int64)]
        rows = np.arange(self._n) if rows is None else np.asarray(rows, dtype=np.int64)
        self.prefetch(rows)
        if self._vectors is None:  # nothing encoded yet: only possible for an empty request
            raise ValueError("no rows requested and nothing encoded yet: width unknown")
        return self._vectors[self._codes[rows]]


def _fitted(transformer: Any, texts: list[str], learn_center: bool = True) -> tuple[Any, Any]:
    """``(transformer, None)`` if it is fitted (or cannot be), else a clone fitted on ``texts``
    (with ``center=False`` unless ``learn_center``) with its ``fit_transform`` output for them
    (fitting may encode them, e.g. to learn the centre: the rows are kept instead of encoding
    the texts again)."""
    if not hasattr(transformer, "fit"):
        return transformer, None
    try:
        check_is_fitted(transformer)
    except NotFittedError:
        est = clone(transformer)
        if not learn_center:
            est.set_params(**{key: False for key in est.get_params(deep=True)
                              if key == "center" or key.endswith("__center")})
        try:
            if hasattr(est, "fit_transform"):
                return est, est.fit_transform(texts)
            return est.fit(texts), None
        except (TypeError, ValueError) as exc:
            raise type(exc)(
                f"the transformer is not fitted, and a clone fitted on the texts alone failed "
                f"({exc}); fit it yourself first (e.g. LearnedPooling on labelled texts) and "
                f"pass the fitted one") from exc
    except TypeError:  # not a scikit-learn estimator: use as is
        return transformer, None
    return transformer, None


def embed(X: Any, transformer: Any | None = None) -> np.ndarray:
    """Embedding matrix of ``X``: ``transformer.transform`` on distinct texts, or ``X`` itself.

    Parameters
    ----------
    X : sequence of str or array-like of shape (n_samples, n_features)
    transformer : object with ``transform``, optional

    Returns
    -------
    numpy.ndarray of shape (n_samples, n_features)
    """
    return EmbeddingSource(X, transformer).get()


def concat_sources(
    parts: Sequence[Any], transformer: Any | None, fit_part: int | None = None,
    names: Sequence[str] | None = None, learn_center: bool = True,
    floats_for: str | None = None,
) -> EmbeddingSource:
    """One :class:`EmbeddingSource` over several inputs, so a text shared by them is encoded once.

    All parts must be of the same kind (texts with a transformer, or arrays without).
    ``fit_part``: index of the part an unfitted transformer is fitted on (default: all).
    ``names``: the parts' argument names in errors; ``learn_center`` and ``floats_for`` as in
    :class:`EmbeddingSource`.
    """
    names = names or [f"part {i}" for i in range(len(parts))]
    kept = [(part, name) for part, name in zip(parts, names, strict=True) if part is not None]
    if transformer is not None:
        texts = [validate_texts(part, name) for part, name in kept]
        fit_texts = None if fit_part is None else texts[fit_part]
        return EmbeddingSource([t for side in texts for t in side], transformer, fit_texts,
                               learn_center=learn_center, floats_for=floats_for)
    arrays = [EmbeddingSource(part, name=name, floats_for=floats_for).get()
              for part, name in kept]
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise ValueError(f"precomputed embeddings differ in width: {sorted(widths)}")
    return EmbeddingSource(np.vstack(arrays))


def as_rows(X: Any, transformer: Any | None, name: str = "X") -> tuple[Any, int]:
    """``X`` checked without encoding anything, and its number of rows: validated texts (a
    list; a generator of texts becomes one) with a transformer, else the embedding matrix.
    Reports call it to check their labels and groups against ``X`` before any text is encoded
    (building an :class:`EmbeddingSource` may fit an unfitted transformer, which may encode)."""
    if transformer is not None:
        texts = validate_texts(X, name)
        return texts, len(texts)
    matrix = EmbeddingSource(X, name=name).get()
    return matrix, len(matrix)


ALL = "all"  # the group name used when no grouping is given


def as_groups(groups: Any, n: int, name: str = "groups", rows: str = "X") -> np.ndarray:
    """``groups`` as an object array of length ``n`` (checked by
    :func:`~skmoe.validation.as_column`, ``rows`` naming the argument they describe); one group
    :data:`ALL` when ``None``."""
    if groups is None:
        return np.full(n, ALL, dtype=object)
    return as_column(groups, n, name, rows=rows).astype(object)
