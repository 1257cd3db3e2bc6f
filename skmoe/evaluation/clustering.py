"""Clustering quality per group: MiniBatchKMeans with k = number of labels (MTEB protocol)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import adjusted_mutual_info_score, v_measure_score
from sklearn.utils import check_random_state

from .._stack import external_stacklevel
from ..validation import as_column, check_aligned, check_label_types, is_int_at_least
from .embeddings import EmbeddingSource, as_groups, as_rows

#: Rows per label below which a group's v_measure is mostly chance (a warning names the group).
FEW_ROWS_PER_CLUSTER = 10


def cluster_report(
    X: Any,
    y: Any,
    *,
    groups: Any = None,
    transformer: Any = None,
    n_bootstrap: int = 10,
    max_documents: int = 16_384,
    batch_size: int = 512,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """V-measure and adjusted mutual information of k-means clusters against the labels.

    For each group and each of ``n_bootstrap`` seeded runs: take ``min(max_documents, n)`` of
    the group's rows at random (without replacement; all rows when the group is small, so
    runs then differ only in the k-means seed), cluster them with
    ``MiniBatchKMeans(n_clusters=<distinct labels>, batch_size=batch_size, n_init=1)`` and
    compare with the labels, as MTEB's clustering tasks do.

    Parameters
    ----------
    X : sequence of str or array of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Reference labels (e.g. SIB-200 topics).
    groups : array-like, optional
        Group of each row (e.g. language); default one group ``"all"``.
    transformer : object with ``transform``, optional
        Needed when ``X`` holds texts. An unfitted one is fitted (a clone) with
        ``center=False``: the model's own vectors, as MTEB clusters them, so a group's score
        does not depend on the other groups of the call. Quantized codes are refused.
    n_bootstrap : int, default=10
    max_documents : int, default=16384
    batch_size : int, default=512
    random_state : int, default=0
        Seeds each group's runs afresh: a group's scores are the same whatever other groups
        the call holds, and in whatever order.

    Returns
    -------
    pandas.DataFrame
        Columns ``group, bootstrap, metric, score, n`` with metrics ``v_measure`` and ``ami``.
    """
    for name, value in (("n_bootstrap", n_bootstrap), ("max_documents", max_documents)):
        if not is_int_at_least(value, 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    check_aligned(X=X, y=y, groups=groups)
    X, n = as_rows(X, transformer)  # labels and groups are checked before anything is encoded
    y = as_column(y, n, "y")
    check_label_types(y, "y")
    g = as_groups(groups, n)
    # the model's own vectors: a centre learned on X would make a group's score depend on the
    # other groups of the call (as for STS); a fitted transformer is used as it is
    source = EmbeddingSource(X, transformer, learn_center=False, floats_for="cluster_report")
    plan = []
    for group in pd.unique(g):
        # each group's runs from random_state itself (an int: a fresh generator per group), as
        # probe_report's draws: one generator running across the groups made a group's scores
        # depend on the groups before it (eng V-measure 0.313 or 0.336 by the row order)
        rng = check_random_state(random_state)
        rows = np.flatnonzero(g == group)
        for b in range(n_bootstrap):
            sub = rows if len(rows) <= max_documents else np.sort(
                rng.choice(rows, size=max_documents, replace=False))
            plan.append((group, b, sub, int(rng.randint(np.iinfo(np.int32).max))))
    source.prefetch(np.unique(np.concatenate([p[2] for p in plan])) if plan else [])
    records, degenerate, small = [], [], []
    for group, b, sub, seed in plan:
        labels = y[sub]
        n_clusters = len(np.unique(labels))
        if n_clusters < 2:  # one cluster matches one label "perfectly": a score of 1.0 means nothing
            scores = dict.fromkeys(("v_measure", "ami"), float("nan"))
            if group not in degenerate:
                degenerate.append(group)
        else:
            if len(sub) < FEW_ROWS_PER_CLUSTER * n_clusters and group not in small:
                small.append(group)
            km = MiniBatchKMeans(n_clusters=n_clusters, batch_size=batch_size, n_init=1,
                                 random_state=seed)
            pred = km.fit_predict(source.get(sub))
            scores = {"v_measure": v_measure_score(labels, pred),
                      "ami": adjusted_mutual_info_score(labels, pred)}
        for metric, score in scores.items():
            records.append({"group": group, "bootstrap": b, "metric": metric,
                            "score": float(score), "n": len(sub)})
    if degenerate:
        warnings.warn(f"{len(degenerate)} group(s) have a single label, so there is nothing to "
                      f"cluster; their scores are NaN: {', '.join(map(repr, degenerate[:10]))}",
                      UserWarning, stacklevel=external_stacklevel())
    if small:
        warnings.warn(f"{len(small)} group(s) have fewer than {FEW_ROWS_PER_CLUSTER} rows per "
                      f"label ({', '.join(map(repr, small[:10]))}): v_measure is not adjusted "
                      "for chance and rises towards 1 as clusters approach rows (20 random "
                      "vectors, 7 labels: 0.34); read their ami, which is adjusted", UserWarning,
                      stacklevel=external_stacklevel())
    return pd.DataFrame.from_records(records)
