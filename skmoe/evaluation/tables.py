"""Tables of tidy scores: which columns name a setting, mean +- std over draws, the rows of one
metric or k, and the train x test matrix of a transfer run.

The probes (:mod:`skmoe.evaluation.probe`), the clustering report and the plots read scores
through these; none of them fits or embeds anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd


def setting_columns(scores: pd.DataFrame) -> list[str]:
    """The columns of a tidy score table that name a setting (group, k, metric, ...): all but
    the draw (``seed``, ``bootstrap``), ``score`` and the row counts (``n_train``, ``n_test``,
    ``n``)."""
    return [c for c in scores.columns
            if c not in ("seed", "bootstrap", "score", "n_train", "n_test", "n")]


def summarize(scores: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1) of ``score`` over draws.

    Parameters
    ----------
    scores : DataFrame
        Output of :func:`probe_report`, :func:`transfer_matrix`, :func:`transfer_regimes`
        or :func:`~skmoe.evaluation.cluster_report`.
    by : list of str, optional
        Columns to group by. Default: every column except the draw (``seed``, ``bootstrap``),
        ``score`` and the row counts (``n_train``, ``n_test``, ``n``).

    Returns
    -------
    pandas.DataFrame
        ``by`` columns plus ``mean``, ``std`` and ``n`` (draws), in first-seen order.
    """
    if "score" not in scores.columns:  # was a bare KeyError ('Column not found: score')
        raise ValueError("scores have no 'score' column: summarize takes the tidy scores of "
                         "probe_report, transfer_matrix, transfer_regimes or cluster_report "
                         "(sts_report and bitext_report give one row per group already); "
                         f"columns: {', '.join(map(str, scores.columns))}")
    if by is None:
        by = setting_columns(scores)
    out = scores.groupby(list(by), sort=False)["score"].agg(["mean", "std", "count"])
    return out.rename(columns={"count": "n"}).reset_index()


def select_rows(scores: pd.DataFrame, column: str, value: Any = None) -> pd.DataFrame:
    """The rows of tidy scores whose ``column`` equals ``value``; ``value=None`` keeps them all
    when the column holds a single value and refuses, naming the values, when it holds several
    (a mean over several metrics or k's would mean nothing)."""
    values = list(pd.unique(scores[column]))
    if value is None:
        if len(values) > 1:
            raise ValueError(f"scores hold several {column} values {values}; pick one")
        return scores
    rows = scores[scores[column] == value]
    if rows.empty:
        raise ValueError(f"no scores with {column}={value!r}; available: {values}")
    return rows


def transfer_table(
    scores: pd.DataFrame, metric: str | None = None, k: int | None = None
) -> pd.DataFrame:
    """Train x test matrix of mean scores from :func:`transfer_matrix` output.

    ``metric`` and ``k`` may be omitted when the scores hold a single one. Both axes follow one
    language order (first seen among training, then test languages), so a language found on
    both sides has its in-language score on the diagonal, whatever order the test data had.
    """
    df = select_rows(select_rows(scores, "metric", metric), "k", k)
    table = df.pivot_table(index="train_language", columns="test_language", values="score",
                           aggfunc="mean", sort=False)
    order = list(dict.fromkeys([*table.index, *table.columns]))
    return table.reindex(index=[g for g in order if g in table.index],
                         columns=[g for g in order if g in table.columns])
