"""Exact nearest-neighbour search over embeddings: numpy brute force in bounded blocks.

``search_vectors(Q, C, top_k)`` scores every query against every corpus row, ``query_block``
queries by ``corpus_block`` corpus rows at a time, and keeps a running top-k per query, so memory
is ``O(query_block * corpus_block + n_queries * top_k)`` whatever the corpus size: the full
``[n_queries, n_corpus]`` score matrix never exists. The corpus may be a memory-mapped array
(``np.load(path, mmap_mode="r")``): it is read (and normalised) one block at a time.

Order is deterministic: by score descending, ties by corpus index ascending, exactly what a
stable ``argsort`` of the full score matrix gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .postprocessing import l2_normalize
from .validation import check_finite_rows, is_int_at_least

__all__ = ["CORPUS_BLOCK", "QUERY_BLOCK", "check_search_params", "search_vectors"]

QUERY_BLOCK = 1024
CORPUS_BLOCK = 16384  # with QUERY_BLOCK: 64 MiB of float32 scores per block


def search_vectors(
    queries: Any,
    corpus: Any,
    top_k: int = 10,
    *,
    normalize: bool = True,
    query_block: int = QUERY_BLOCK,
    corpus_block: int = CORPUS_BLOCK,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` corpus rows most similar to each query, best first.

    Parameters
    ----------
    queries : array-like of shape (n_queries, d)
    corpus : array-like of shape (n_corpus, d)
        Float vectors; a memory-mapped array is read block by block.
    top_k : int, default=10
        Neighbours per query; more than ``n_corpus`` returns ``n_corpus``.
    normalize : bool, default=True
        Score by cosine similarity (rows L2-normalised, a zero row scores 0); ``False`` scores
        by the raw dot product.
    query_block, corpus_block : int
        Queries and corpus rows scored together: the score block is
        ``query_block * corpus_block`` float32 values (64 MiB by default).
    dtype : numpy float type, default=numpy.float32
        The precision of the scores: ``numpy.float64`` tells apart targets whose cosines differ
        below float32's resolution (``bitext_accuracy`` scores so; twice the memory).

    Returns
    -------
    indices : ndarray of int64, shape (n_queries, min(top_k, n_corpus))
        Corpus row numbers, best first; ties in corpus order.
    scores : ndarray of ``dtype``, same shape
        Their similarities.
    """
    check_search_params(top_k, query_block, corpus_block)
    # the corpus is checked block by block, the same way
    q = _as_matrix(queries, "queries", dtype=dtype)
    if q.ndim != 2 or len(np.shape(corpus)) != 2:
        raise ValueError(f"queries and corpus must be 2-D, got shapes {q.shape} "
                         f"and {np.shape(corpus)}")
    n, d = np.shape(corpus)
    if q.shape[1] != d:
        raise ValueError(f"queries have {q.shape[1]} features but the corpus has {d}")
    if n == 0:
        raise ValueError("the corpus is empty")
    k = min(int(top_k), n)
    if normalize:
        q = l2_normalize(q, dtype)
    best_i = np.full((len(q), k), n, dtype=np.int64)  # sentinel index n sorts after any row
    best_s = np.full((len(q), k), -np.inf, dtype=dtype)
    for c0 in range(0, n, corpus_block):
        block = _as_matrix(corpus[c0:c0 + corpus_block], "corpus", offset=c0, dtype=dtype)
        if normalize:
            block = l2_normalize(block, dtype)
        kb = min(k, len(block))
        for q0 in range(0, len(q), query_block):
            scores = _block_scores(q[q0:q0 + query_block], block)
            idx, val = _block_top_k(scores, kb)
            rows = slice(q0, q0 + len(scores))
            best_i[rows], best_s[rows] = _merge(best_i[rows], best_s[rows], idx + c0, val, k)
    if normalize:  # a row's cosine with itself may round one step above 1
        np.clip(best_s, -1.0, 1.0, out=best_s)
    return best_i, best_s


def check_search_params(top_k: Any, query_block: Any = QUERY_BLOCK,
                        corpus_block: Any = CORPUS_BLOCK) -> None:
    """Refuse a ``top_k`` or block size that is not an int >= 1 (before anything is embedded)."""
    for name, value in (("top_k", top_k), ("query_block", query_block),
                        ("corpus_block", corpus_block)):
        if not is_int_at_least(value, 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _as_matrix(x: Any, name: str, offset: int = 0, dtype: type = np.float32) -> np.ndarray:
    """A ``dtype`` array; a non-finite value is refused naming its row."""
    if sp.issparse(x):
        raise TypeError(f"{name} is a scipy sparse matrix; search_vectors scores dense vectors: "
                        f"pass {name}.toarray()")
    arr = np.asarray(x, dtype=dtype)
    return check_finite_rows(arr, name, offset) if arr.ndim == 2 else arr


def _block_scores(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Scores ``[len(q), len(c)]`` of one block (the only quadratic allocation)."""
    return q @ c.T


def _block_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best columns (ties: lowest column), in column order: O(block), no sort.

    A partition finds each row's k-th largest score ``t``; every score above ``t`` is kept, and
    of those equal to ``t`` the lowest-numbered columns fill the remaining places.
    """
    if k == scores.shape[1]:
        cols = np.broadcast_to(np.arange(k), scores.shape)
        return cols, scores
    cut = scores.shape[1] - k
    t = np.partition(scores, cut, axis=1)[:, cut:cut + 1]  # the k-th largest of each row
    above = scores > t
    tied = scores == t
    need = k - above.sum(axis=1, keepdims=True)
    keep = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= need))
    cols = np.nonzero(keep)[1].reshape(len(scores), k)  # row-major: columns ascending per row
    return cols, np.take_along_axis(scores, cols, axis=1)


def _merge(i1: np.ndarray, s1: np.ndarray, i2: np.ndarray, s2: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of two candidate sets per row: score descending, then index ascending."""
    idx = np.concatenate([i1, i2], axis=1)
    val = np.concatenate([s1, s2], axis=1)
    order = np.lexsort((idx, -val), axis=1)[:, :k]
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)
