"""The report's learned-pooling part: :class:`~skmoe.LearnedPooling` against mean pooling.

Per language of the report, on that language's training rows only: mean pooling
(``LearnedPooling(max_iter=0)``, the transformer's mean pooling to 1e-5, from the same token
states) and learned pooling (its default training, chosen on SIB-200 dev), each followed by
``LogisticRegression()`` at sklearn's defaults trained on the same rows and scored on the
language's test rows. The difference comes with a paired bootstrap interval over the test rows.
The token states are computed once per text (``skmoe.token_states``) and shared by both sides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._encoder_params import EncoderParams
from .evaluation.data import ReportData

#: ``MoEEmbeddingTransformer`` parameters that ``LearnedPooling`` takes with the same meaning:
#: those both declare through :class:`~skmoe._encoder_params.EncoderParams` (model, prompt, token
#: limit, long-text mode) and the output and placement ones.
SHARED_PARAMS = (*(f.name for f in fields(EncoderParams)), "normalize", "center", "device",
                 "dtype", "local_files_only", "verbose")
#: Bootstrap resamples of the paired interval.
N_BOOTSTRAP = 1000


@dataclass
class PoolingComparison:
    """What :func:`compare_pooling` measured."""

    table: pd.DataFrame  # one row per language
    seconds: float  # wall time of the whole comparison (token states included)
    states_seconds: float  # of which: the encoder pass for the token states
    image: tuple[str, str] | None  # (file, caption) of the token-weights plot


def pooling_params(transformer: Any) -> dict[str, Any] | None:
    """``LearnedPooling`` parameters mirroring ``transformer``'s, or None when it has none
    (any transformer other than skmoe's own: there are no token states to pool)."""
    get = getattr(transformer, "get_params", None)
    params = get(deep=False) if callable(get) else {}
    if "model" not in params or not hasattr(transformer, "get_encoder"):
        return None
    return {k: params[k] for k in SHARED_PARAMS if k in params}


def paired_interval(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval over paired rows of ``mean(b) - mean(a)``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(N_BOOTSTRAP, len(a)))
    diffs = (b[idx] - a[idx]).mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def compare_pooling(params: dict[str, Any], rd: ReportData, out: Path, *,
                    max_iter: int | None = None, random_state: int = 0,
                    plot: bool = True) -> PoolingComparison:
    """Mean vs learned pooling per language of ``rd`` (see the module's docstring); writes
    ``learned_pooling.csv`` / ``.md`` and, with ``plot``, ``token_weights.png`` to ``out``."""
    from sklearn.linear_model import LogisticRegression

    from . import render
    from .learned_pooling import LearnedPooling, plot_token_weights

    started = time.perf_counter()
    # Computing every text's pooled vectors first memoises their token states; each language's
    # mean pooling is then fitted on its own training rows (its output is centred on them, as
    # the learned side's is), at no encoder cost.
    mean = LearnedPooling(**params, max_iter=0).fit(list(rd.train["text"]),
                                                    list(rd.train["label"]))
    mean.transform(list(rd.train["text"]) + list(rd.test["text"]))
    states_seconds = time.perf_counter() - started
    rows = []
    shown = None
    for lang in rd.languages:
        tr = rd.train[rd.train["language"] == lang]
        te = rd.test[rd.test["language"] == lang]
        x_tr, y_tr = list(tr["text"]), tr["label"].to_numpy()
        x_te, y_te = list(te["text"]), te["label"].to_numpy()
        mean = LearnedPooling(**params, max_iter=0).fit(x_tr, y_tr)
        head = LogisticRegression().fit(mean.transform(x_tr), y_tr)
        correct = {"mean_pooling": (head.predict(mean.transform(x_te)) == y_te).astype(float)}
        epochs = {} if max_iter is None else {"max_iter": max_iter}  # None: LearnedPooling's default
        learned = LearnedPooling(**params, **epochs, random_state=random_state)
        learned.fit(x_tr, y_tr)
        head = LogisticRegression().fit(learned.transform(x_tr), y_tr)
        correct["learned_pooling"] = (head.predict(learned.transform(x_te)) == y_te).astype(float)
        low, high = paired_interval(correct["mean_pooling"], correct["learned_pooling"],
                                    seed=random_state)
        rows.append({"language": lang, "train_rows": len(tr), "test_rows": len(te),
                     "mean_pooling": correct["mean_pooling"].mean(),
                     "learned_pooling": correct["learned_pooling"].mean(),
                     "difference": correct["learned_pooling"].mean()
                     - correct["mean_pooling"].mean(),
                     "ci_low": low, "ci_high": high, "epochs": int(learned.n_iter_)})
        if lang == rd.source_language:
            shown = (learned, x_te)
    table = pd.DataFrame(rows)
    table.to_csv(out / "learned_pooling.csv", index=False)
    (out / "learned_pooling.md").write_text(render.markdown_table(table), encoding="utf-8")
    image = None
    if plot and shown is not None and shown[1]:
        import matplotlib.pyplot as plt

        pool, texts = shown
        fig = plot_token_weights(pool.token_weights(texts[:6]), max_texts=6)
        fig.savefig(out / "token_weights.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        image = ("token_weights.png",
                 f"Token weights of the pooling learned on {rd.source_language}'s training rows, "
                 f"on its first {min(6, len(texts))} test texts: darker = more weight than mean "
                 "pooling gives the token, white = less.")
    return PoolingComparison(table, time.perf_counter() - started, states_seconds, image)
