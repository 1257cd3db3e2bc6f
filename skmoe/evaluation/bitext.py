"""Bitext retrieval: find each sentence's translation among all candidates by cosine."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import permutations
from typing import Any

import numpy as np
import pandas as pd

from ..search import search_vectors
from ..validation import as_column, check_aligned
from .embeddings import EmbeddingSource, as_groups, as_rows


def bitext_accuracy(source: np.ndarray, target: np.ndarray) -> float:
    """Share of rows ``i`` whose cosine-nearest ``target`` row is ``target[i]``.

    ``source`` and ``target`` are aligned embeddings (row i of one translates row i of the
    other); every target row is a candidate. Ties go to the lowest index. The search runs in
    bounded blocks (:func:`skmoe.search.search_vectors`): no ``n x n`` matrix is built.

    Parameters
    ----------
    source, target : array-like of shape (n, n_features)
        Aligned embeddings, finite.

    Returns
    -------
    float
        The share of rows whose nearest target is their own translation.
    """
    S, T = np.asarray(source), np.asarray(target)
    if S.shape != T.shape:
        raise ValueError(f"aligned arrays differ in shape: {S.shape} vs {T.shape}")
    if len(S) == 0:
        raise ValueError("no aligned rows")
    nearest, _ = search_vectors(S, T, top_k=1, dtype=np.float64)  # ties below float32's step
    return float(np.mean(nearest[:, 0] == np.arange(len(S))))


def bitext_report(
    X: Any,
    languages: Any,
    ids: Any,
    *,
    pairs: Iterable[tuple[Any, Any]] | None = None,
    transformer: Any = None,
) -> pd.DataFrame:
    """Nearest-neighbour retrieval accuracy for language pairs of a parallel corpus.

    Parameters
    ----------
    X : sequence of str or array of shape (n_samples, n_features)
        Sentences of all languages (texts with ``transformer``, or embeddings).
    languages : array-like of shape (n_samples,)
        Language of each row.
    ids : array-like of shape (n_samples,)
        Sentence id shared by translations (SIB-200's ``index_id``); unique within a language.
    pairs : iterable of (language_a, language_b), optional
        Pairs to score, each in both directions. Default: every ordered pair of languages.
    transformer : object with ``transform``, optional
        An unfitted one is fitted on the sentences with ``center=False`` (the model's own
        cosines, nothing learned from the evaluated sentences); a fitted one is used as it is.

    Returns
    -------
    pandas.DataFrame
        Columns ``source_language, target_language, n, accuracy``: the query is in the source
        language and the ``n`` candidates (the ids both languages share) in the target language.
        Chance level is ``1 / n``.
    """
    check_aligned(X=X, languages=languages, ids=ids)
    # languages, ids and pairs are checked before anything is encoded
    X, n = as_rows(X, transformer)
    lang = as_groups(languages, n, "languages")
    ids = as_column(ids, n, "ids")  # two missing ids would pair unrelated sentences
    present = list(pd.unique(lang))
    if pairs is None:
        ordered = list(permutations(present, 2))
    else:
        ordered = []
        for a, b in _pairs(pairs):
            if a == b:
                raise ValueError(f"pair ({a!r}, {b!r}) has one language on both sides: every "
                                 "sentence would find itself; pair two languages")
            for p in ((a, b), (b, a)):
                if p not in ordered:
                    ordered.append(p)
    rows_of: dict[Any, pd.Series] = {}
    for code in {x for p in ordered for x in p}:
        rows = np.flatnonzero(lang == code)
        if len(rows) == 0:
            raise ValueError(f"language {code!r} not found; available: {present}")
        s = pd.Series(rows, index=ids[rows])
        if s.index.has_duplicates:
            raise ValueError(f"ids repeat within language {code!r}")
        rows_of[code] = s
    shared_ids = {(a, b): rows_of[a].index.intersection(rows_of[b].index, sort=False)
                  for a, b in ordered}
    for (a, b), shared in shared_ids.items():
        if len(shared) == 0:
            raise ValueError(f"{a!r} and {b!r} share no ids")
    source = EmbeddingSource(X, transformer, learn_center=False, floats_for="bitext_report")
    source.prefetch(np.concatenate([rows_of[c].to_numpy() for c in rows_of]))
    records = []
    for (a, b), shared in shared_ids.items():
        queries, candidates = (source.get(rows_of[x][shared].to_numpy()) for x in (a, b))
        acc = bitext_accuracy(queries, candidates)
        records.append({"source_language": a, "target_language": b, "n": len(shared),
                        "accuracy": acc})
    return pd.DataFrame.from_records(records)


def _pairs(pairs: Any) -> list[tuple[Any, Any]]:
    """``pairs`` as a list of (a, b); one pair not wrapped in a list (``("eng_Latn",
    "fra_Latn")``) is that pair, as there is no other way to read two language codes."""
    if isinstance(pairs, (str, bytes)):
        raise TypeError(f"pairs must be a list of (language_a, language_b) pairs, got {pairs!r}")
    pairs = list(pairs)
    if len(pairs) == 2 and not any(isinstance(p, (tuple, list)) for p in pairs):
        return [(pairs[0], pairs[1])]
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise ValueError(f"pairs entry {i} ({p!r}) is not a (language_a, language_b) pair; "
                             "pass a list of pairs, e.g. [('eng_Latn', 'fra_Latn')]")
    return [(a, b) for a, b in pairs]
