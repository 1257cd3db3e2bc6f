"""Semantic textual similarity: Spearman correlation of cosine similarity with gold scores."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from .._stack import external_stacklevel
from ..postprocessing import cosine_rows
from ..validation import check_aligned
from .embeddings import as_groups, as_rows, concat_sources


def paired_cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``A[i]`` with ``B[i]`` for every row (0 for a zero vector)."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.shape != B.shape:
        raise ValueError(f"paired arrays differ in shape: {A.shape} vs {B.shape}")
    return cosine_rows(A, B, np.float64)


def sts_report(
    X1: Any,
    X2: Any,
    scores: Any,
    *,
    groups: Any = None,
    transformer: Any = None,
) -> pd.DataFrame:
    """Spearman (main, as in MTEB) and Pearson correlation of pair cosine with gold scores.

    Parameters
    ----------
    X1, X2 : sequences of str or arrays of shape (n_pairs, n_features)
        First and second sentence of each pair (texts with ``transformer``, or embeddings).
    scores : array-like of shape (n_pairs,)
        Gold similarity (any monotone scale: rank correlations do not rescale).
    groups : array-like, optional
        Group of each pair, e.g. the STS17 track or language pair; default one group ``"all"``.
    transformer : object with ``transform``, optional
        Needed for texts; each distinct sentence (over both columns) is encoded once. An
        unfitted one is fitted on the sentences with ``center=False`` (for skmoe's estimators:
        the model's own cosines, as MTEB scores them, nothing learned from the evaluated pairs);
        a fitted one is used as it is (a centre it learned on training texts applies).

    Returns
    -------
    pandas.DataFrame
        Columns ``group, n_pairs, cosine_spearman, cosine_pearson``.
    """
    for name, value in (("X1", X1), ("X2", X2), ("scores", scores)):
        if value is None:
            raise TypeError(f"{name} is None: sts_report needs X1, X2 and scores, one per pair")
    check_aligned(X1=X1, X2=X2, scores=scores, groups=groups)
    (X1, _), (X2, _) = as_rows(X1, transformer, "X1"), as_rows(X2, transformer, "X2")
    gold = np.asarray(scores, dtype=np.float64)
    lengths = (len(X1), len(X2), len(gold))
    if len(set(lengths)) != 1:
        raise ValueError(
            "X1, X2 and scores must have one entry per pair; got {} first sentences, {} second "
            "sentences and {} scores".format(*lengths)
        )
    if np.isnan(gold).any():
        raise ValueError(f"Missing gold score at pair {int(np.flatnonzero(np.isnan(gold))[0])}")
    n = len(gold)
    if n == 0:
        raise ValueError("sts_report needs at least one pair; got none")
    g = as_groups(groups, n, rows="the pairs (X1)")
    source = concat_sources([X1, X2], transformer, names=("X1", "X2"), learn_center=False,
                            floats_for="sts_report")
    vectors = source.get()  # both columns in one transform call
    sims = paired_cosine(vectors[:n], vectors[n:])
    records = []
    for group in pd.unique(g):
        m = g == group
        records.append({"group": group, "n_pairs": int(m.sum()),
                        **_correlations(sims[m], gold[m], group)})
    return pd.DataFrame.from_records(records)


def _correlations(sims: np.ndarray, gold: np.ndarray, group: Any) -> dict[str, float]:
    if len(gold) < 2:
        raise ValueError(f"group {group!r} has {len(gold)} pair; correlations need at least 2")
    if np.ptp(gold) == 0 or np.ptp(sims) == 0:
        constant = "gold scores" if np.ptp(gold) == 0 else "similarities"
        warnings.warn(f"group {group!r}: all {constant} are equal, so the correlations are "
                      "undefined (NaN)", UserWarning, stacklevel=external_stacklevel())
        return {"cosine_spearman": float("nan"), "cosine_pearson": float("nan")}
    return {"cosine_spearman": float(spearmanr(sims, gold).statistic),
            "cosine_pearson": float(pearsonr(sims, gold).statistic)}
