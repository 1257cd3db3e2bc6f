"""Few-shot linear probes per language, cross-lingual transfer, and SetFit's three regimes.

Protocol (MTEB classification / SetFit): for each k in ``samples_per_label`` and each of
``n_experiments`` seeded draws, take k training rows per class (:class:`FewShotSplit`), fit a
fresh clone of the head (default ``LogisticRegression(max_iter=100)`` as in MTEB) on their
embeddings, and score it on the test rows. The union of all rows any draw needs is encoded
once, before any head is fit; texts shared between draws, languages or train and test are
encoded once.

Results are tidy ``pandas.DataFrame`` s, one row per (group, k, seed, metric); pass them to
:func:`summarize` for mean +- std.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer

from .._stack import external_stacklevel
from ..validation import as_column, check_aligned, check_label_types, is_int_at_least
from .embeddings import EmbeddingSource, as_groups, as_rows, concat_sources
from .splits import FewShotSplit, FewShotWarning
from .tables import summarize, transfer_table  # noqa: F401  (this module's public names)

Scorer = Callable[[Any, np.ndarray, np.ndarray], float]
#: ``metrics=`` of the reports: scorer names or callables, alone, in a sequence, or in a dict
#: name -> scorer (a name or a callable)
Metrics = Sequence[str | Scorer] | Mapping[str, str | Scorer] | str | Scorer


class UnseenLabelWarning(UserWarning):
    """Test rows carry a label that no training row has: no probe can predict them, so they
    count as errors in every score."""


def default_head() -> LogisticRegression:
    """The MTEB probe head: ``LogisticRegression(max_iter=100)``."""
    return LogisticRegression(max_iter=100)


def _scorers(metrics: Metrics) -> dict[str, Scorer]:
    """Metric name -> scorer ``scorer(estimator, X, y)``, every one resolved and checked before
    any head is fit. Names are scikit-learn scorer names; a callable in a list is named by its
    function (``make_scorer(f1_score, ...)``: ``"f1_score"``)."""
    if isinstance(metrics, str) or callable(metrics):
        metrics = [metrics]
    pairs = (list(metrics.items()) if isinstance(metrics, Mapping)
             else [(_metric_name(m), m) for m in metrics])
    if not pairs:
        raise ValueError("metrics is empty")
    out: dict[str, Scorer] = {}
    for name, metric in pairs:
        if str(name) in out:
            raise ValueError(f"metrics name {name!r} twice; pass a dict of name -> scorer")
        if isinstance(metric, str):
            metric = get_scorer(metric)
        elif not callable(metric):
            raise TypeError(f"metric {name!r} must be a scorer name or a callable "
                            f"scorer(estimator, X, y), got {type(metric).__name__}")
        out[str(name)] = metric
    return out


def _metric_name(metric: Any) -> str:
    if isinstance(metric, str):
        return metric
    func = getattr(metric, "_score_func", metric)  # a make_scorer object names its function
    return str(getattr(func, "__name__", None) or repr(metric))


def _ks(samples_per_label: int | Iterable[int]) -> list[int]:
    single = not isinstance(samples_per_label, Iterable) or isinstance(samples_per_label, str)
    ks = [samples_per_label] if single else list(samples_per_label)
    if not ks:
        raise ValueError("samples_per_label is empty")
    if not all(is_int_at_least(k, 1) for k in ks):
        raise ValueError(f"samples_per_label must be an int >= 1 or a sequence of them, got "
                         f"{samples_per_label!r}")
    return [int(k) for k in ks]


@dataclass
class _Data:
    """Train rows ``0..n_train-1`` then test rows; their embedding source is built on first use,
    after every check and draw that needs only the labels and groups (building it may fit an
    unfitted transformer, which can encode every training text)."""

    make_source: Callable[[], EmbeddingSource]
    y: np.ndarray
    groups: np.ndarray
    n_train: int
    _source: EmbeddingSource | None = None

    @property
    def source(self) -> EmbeddingSource:
        if self._source is None:
            self._source = self.make_source()
        return self._source

    @property
    def train_rows(self) -> np.ndarray:
        return np.arange(self.n_train)

    @property
    def test_rows(self) -> np.ndarray:
        return np.arange(self.n_train, len(self.y))

    def rows_of(self, rows: np.ndarray, groups: Iterable[Any]) -> np.ndarray:
        return rows[np.isin(self.groups[rows], list(groups))]


def _prepare(X, y, groups, X_test, y_test, groups_test, transformer,
             names: tuple[str, str] = ("groups", "groups_test")) -> _Data:
    """Check every argument (``names``: the arguments ``groups`` and ``groups_test`` stand for)
    without encoding anything: the source is built later, by :func:`_run`."""
    check_aligned(X=X, y=y, **{names[0]: groups})
    check_aligned(X_test=X_test, y_test=y_test, **{names[1]: groups_test})
    X, n = as_rows(X, transformer, "X")
    y = as_column(y, n, "y")
    g = as_groups(groups, n, names[0])
    check_label_types(y, "y")
    if X_test is None:
        if y_test is not None or groups_test is not None:
            raise ValueError(f"y_test / {names[1]} given without X_test")
        return _Data(lambda: concat_sources([X], transformer, fit_part=0, names=["X"]), y, g, n)
    if y_test is None:
        raise ValueError("X_test given without y_test")
    X_test, n_test = as_rows(X_test, transformer, "X_test")
    y_test = as_column(y_test, n_test, "y_test", rows="X_test")
    check_label_types(np.concatenate([y.astype(object), y_test.astype(object)]), "y and y_test")
    if groups_test is None and groups is not None:
        raise ValueError(f"{names[0]} given for the training rows but not {names[1]}")
    gt = as_groups(groups_test, n_test, names[1], rows="X_test")
    _warn_unseen(y, y_test)
    return _Data(lambda: concat_sources([X, X_test], transformer, fit_part=0,
                                        names=["X", "X_test"]),
                 np.concatenate([y, y_test]), np.concatenate([g, gt]), n)


def _warn_unseen(y: np.ndarray, y_test: np.ndarray) -> None:
    unseen = ~np.isin(y_test, np.unique(y))
    if unseen.any():
        labels = pd.unique(y_test[unseen]).tolist()
        warnings.warn(
            f"test label(s) {', '.join(map(repr, labels))} ({int(unseen.sum())} of {len(y_test)} "
            f"test rows, first at row {int(np.argmax(unseen))} of y_test) never appear in y: no "
            "probe can predict them, so they count as errors in every score",
            UnseenLabelWarning, stacklevel=external_stacklevel())


@dataclass
class _Fit:
    keys: dict[str, Any]
    train: np.ndarray
    tests: list[tuple[dict[str, Any], np.ndarray]] = field(default_factory=list)


def _draws(data: _Data, pool: np.ndarray, k: int, n_experiments: int, random_state: Any,
           test_size: Any = None, *, of: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Few-shot (train, rest) draws among ``pool`` rows, as global row indices; ``of`` names
    the rows (``"group 'fra'"``) in warnings and errors."""
    cv = FewShotSplit(n_per_class=k, n_splits=n_experiments, test_size=test_size,
                      random_state=random_state)
    with _naming(of):
        return [(pool[tr], pool[te]) for tr, te in cv.split(pool, data.y[pool])]


def _train_draws(data: _Data, pool: np.ndarray, k: int, n_experiments: int,
                 random_state: Any, *, of: str) -> list[np.ndarray]:
    """Few-shot training draws among ``pool`` rows (tested elsewhere), as global row indices."""
    cv = FewShotSplit(n_per_class=k, n_splits=n_experiments, random_state=random_state)
    with _naming(of):
        return [pool[tr] for tr in cv.train_draws(data.y[pool])]


@contextlib.contextmanager
def _naming(of: str) -> Iterator[None]:
    """Prefix the few-shot warnings and errors raised inside with whose rows they are about
    (with 32 languages, "2 class(es) have fewer than 8 examples" alone does not say where)."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FewShotWarning)
            yield
    except ValueError as exc:
        raise ValueError(f"{of}: {exc}") from exc
    finally:
        for w in caught:
            named = issubclass(w.category, FewShotWarning)
            warnings.warn_explicit(f"{of}: {w.message}" if named else w.message,
                                   w.category, w.filename, w.lineno)


def _warn_untrained_labels(data: _Data, fits: list[_Fit]) -> None:
    """Fits tested on a label their own training rows lack (a language without one class)
    can never predict those rows; say so once. Labels absent from all training rows were
    named by :func:`_warn_unseen` already."""
    trained = set(data.y[: data.n_train].tolist())
    tested: dict[int, set] = {}  # test row sets are shared between fits: their labels once
    cases: dict[tuple[str, Any], int] = {}
    for fit in fits:
        have = set(data.y[fit.train].tolist())
        for test_keys, rows in fit.tests:
            if id(rows) not in tested:
                tested[id(rows)] = set(data.y[rows].tolist())
            for label in tested[id(rows)] - have:
                if label in trained:
                    where = ", ".join(f"{k}={v!r}" for k, v in fit.keys.items()
                                      if k not in ("k", "seed"))
                    key = (where + "".join(f" -> {k}={v!r}" for k, v in test_keys.items()), label)
                    cases[key] = cases.get(key, 0) + 1
    if cases:
        shown = "; ".join(f"{where}: {label!r}" for where, label in list(cases)[:5])
        more = f" (and {len(cases) - 5} more)" if len(cases) > 5 else ""
        warnings.warn(
            f"{sum(cases.values())} probe fit(s) are scored on a label their training rows lack "
            f"({shown}{more}): those test rows count as errors in every score",
            UnseenLabelWarning, stacklevel=external_stacklevel())


def _run(data: _Data, fits: list[_Fit], estimator: Any, metrics: Any) -> pd.DataFrame:
    scorers = _scorers(metrics)
    _warn_untrained_labels(data, fits)
    head = default_head() if estimator is None else estimator
    needed = [f.train for f in fits] + [rows for f in fits for _, rows in f.tests]
    data.source.prefetch(np.unique(np.concatenate(needed)) if needed else [])
    records = []
    not_converged = 0
    for fit in fits:
        est = clone(head)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            try:
                est.fit(data.source.get(fit.train), data.y[fit.train])
            except ValueError as exc:  # e.g. one class only: say which fit
                keys = ", ".join(f"{k}={v!r}" for k, v in fit.keys.items())
                raise ValueError(f"probe head fit failed for {keys}: {exc}") from exc
        not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:  # re-emit everything that is not a convergence warning
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for test_keys, rows in fit.tests:
            X_te, y_te = data.source.get(rows), data.y[rows]
            for name, scorer in scorers.items():
                records.append({**fit.keys, **test_keys, "metric": name,
                                "score": float(scorer(est, X_te, y_te)),
                                "n_train": len(fit.train), "n_test": len(rows)})
    if not_converged:
        # MTEB accepts these (mteb #944); say it once instead of once per fit.
        warnings.warn(
            f"{not_converged} of {len(fits)} probe fits hit max_iter before converging "
            "(expected with LogisticRegression(max_iter=100), the MTEB protocol)",
            ConvergenceWarning,
            stacklevel=external_stacklevel(),
        )
    return pd.DataFrame.from_records(records)


def probe_report(
    X: Any,
    y: Any,
    *,
    groups: Any = None,
    X_test: Any = None,
    y_test: Any = None,
    groups_test: Any = None,
    transformer: Any = None,
    estimator: Any = None,
    samples_per_label: int | Iterable[int] = (8, 16, 32),
    n_experiments: int = 10,
    metrics: Metrics = ("accuracy", "f1_macro"),
    test_size: float | int | None = None,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Few-shot linear-probe scores per group (e.g. language).

    Parameters
    ----------
    X : sequence of str or array of shape (n_samples, n_features)
        Training pool: texts (with ``transformer``) or precomputed embeddings.
    y : array-like of shape (n_samples,)
        Class labels.
    groups : array-like of shape (n_samples,), optional
        Group of each row, e.g. its language; one report row set per group. Default: one group
        named ``"all"``.
    X_test, y_test, groups_test : optional
        A separate test set (as in SIB-200's ``test.tsv``). Each group is scored on its own
        test rows. Without it, each draw is scored on the rest of its group's rows
        (``test_size`` of them).
    transformer : object with ``transform(list[str])``, optional
        Needed when ``X`` holds texts, e.g. ``MoEEmbeddingTransformer(...)``. If it is not
        fitted, a clone is fitted on the training texts ``X`` (never on the test texts).
    estimator : classifier, optional
        The head, cloned per draw. Default ``LogisticRegression(max_iter=100)``.
    samples_per_label : int or sequence of int, default=(8, 16, 32)
        k, training examples per class.
    n_experiments : int, default=10
        Seeded draws per k.
    metrics : str, callable, sequence of them, or dict of name -> str or callable
        scikit-learn scorer names (``"accuracy"``, ``"f1_macro"``, ``"matthews_corrcoef"``,
        ``"neg_mean_absolute_error"``, ...) or callables ``scorer(estimator, X, y)``.
    test_size : int or float, optional
        Without ``X_test`` only: size of the test part of each draw (default: all other rows).
    random_state : int, default=0
        Seeds the draws. The same seed gives the same draw in every group with the same labels
        in the same row order (for SIB-200: the same sentences in every language).

    Returns
    -------
    pandas.DataFrame
        Columns ``group, k, seed, metric, score, n_train, n_test``; ``seed`` is the draw index.

    See Also
    --------
    summarize : mean and standard deviation per group, k and metric.
    """
    data = _prepare(X, y, groups, X_test, y_test, groups_test, transformer)
    has_test = X_test is not None
    fits: list[_Fit] = []
    trained = pd.unique(data.groups[: data.n_train])
    untrained = [g for g in pd.unique(data.groups[data.n_train:]) if g not in set(trained)]
    if untrained:  # test rows only exist with a test set
        warnings.warn(f"group(s) {', '.join(map(repr, untrained))} have test rows but no training "
                      "rows: not scored (transfer_matrix scores them with heads trained on other "
                      "groups)", UserWarning, stacklevel=external_stacklevel())
    for group in trained:
        pool = data.rows_of(data.train_rows, [group])
        test_rows = data.rows_of(data.test_rows, [group]) if has_test else None
        if has_test and len(test_rows) == 0:
            raise ValueError(f"group {group!r} has no test rows")
        for k in _ks(samples_per_label):
            # With a test set every row of the pool may train (k up to the class sizes).
            of = f"group {group!r}"
            draws = ([(train, test_rows) for train in
                      _train_draws(data, pool, k, n_experiments, random_state, of=of)] if has_test
                     else _draws(data, pool, k, n_experiments, random_state, test_size, of=of))
            for seed, (train, test) in enumerate(draws):
                fits.append(_Fit({"group": group, "k": k, "seed": seed}, train, [({}, test)]))
    return _run(data, fits, estimator, metrics)


def transfer_matrix(
    X: Any,
    y: Any,
    languages: Any,
    *,
    X_test: Any,
    y_test: Any,
    languages_test: Any,
    train_languages: Iterable[Any] | None = None,
    test_languages: Iterable[Any] | None = None,
    transformer: Any = None,
    estimator: Any = None,
    samples_per_label: int | Iterable[int] = 16,
    n_experiments: int = 10,
    metrics: Metrics = ("accuracy",),
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Cross-lingual transfer: train a probe on language A, score it on language B.

    One head per (train language, k, draw) is fit and scored on every test language.

    Parameters
    ----------
    X, y, languages : training pool, labels and the language of each row.
    X_test, y_test, languages_test : the test set (required: testing on the training pool of
        another language would leak on parallel corpora such as SIB-200).
    train_languages, test_languages : optional
        Subsets (default: all languages present in the training pool / the test set).
    transformer, estimator, samples_per_label, n_experiments, metrics, random_state
        As in :func:`probe_report`.

    Returns
    -------
    pandas.DataFrame
        Columns ``train_language, test_language, k, seed, metric, score, n_train, n_test``.
        :func:`transfer_table` pivots it into a train x test matrix.
    """
    data = _prepare(X, y, languages, X_test, y_test, languages_test, transformer,
                    ("languages", "languages_test"))
    trains = _pick(data.groups[: data.n_train], train_languages, "train_languages")
    tests = _pick(data.groups[data.n_train:], test_languages, "test_languages")
    test_sets = [({"test_language": t}, data.rows_of(data.test_rows, [t])) for t in tests]
    fits = []
    for lang in trains:
        pool = data.rows_of(data.train_rows, [lang])
        for k in _ks(samples_per_label):
            for seed, train in enumerate(_train_draws(data, pool, k, n_experiments, random_state,
                                                      of=f"training language {lang!r}")):
                keys = {"train_language": lang, "k": k, "seed": seed}
                fits.append(_Fit(keys, train, test_sets))
    return _run(data, fits, estimator, metrics)


REGIMES = ("each", "en", "all")


def transfer_regimes(
    X: Any,
    y: Any,
    languages: Any,
    *,
    X_test: Any,
    y_test: Any,
    languages_test: Any,
    regimes: Iterable[str] = REGIMES,
    source_language: Any = "eng_Latn",
    test_languages: Iterable[Any] | None = None,
    transformer: Any = None,
    estimator: Any = None,
    samples_per_label: int | Iterable[int] = 16,
    n_experiments: int = 10,
    metrics: Metrics = ("accuracy",),
    random_state: int | None = 0,
) -> pd.DataFrame:
    """SetFit's multilingual regimes: train on the target language, on English, or on all.

    - ``"each"``: k per class from the target language's training rows.
    - ``"en"``: k per class from ``source_language`` (English by default), one head scored on
      every test language.
    - ``"all"``: k per class from the pooled training rows of every language (SetFit pools the
      languages and then samples, so the head sees k per class in total, not per language).

    Parameters are as in :func:`transfer_matrix`; ``test_languages`` defaults to the languages
    of the test set.

    Returns
    -------
    pandas.DataFrame
        Columns ``regime, test_language, k, seed, metric, score, n_train, n_test``.
    """
    regimes = list(regimes)
    unknown = sorted(set(regimes) - set(REGIMES))
    if unknown:
        raise ValueError(f"unknown regime(s) {unknown}; choose from {list(REGIMES)}")
    data = _prepare(X, y, languages, X_test, y_test, languages_test, transformer,
                    ("languages", "languages_test"))
    tests = _pick(data.groups[data.n_train:], test_languages, "test_languages")
    rows_test = {t: data.rows_of(data.test_rows, [t]) for t in tests}
    fits: list[_Fit] = []
    for k in _ks(samples_per_label):
        for regime in regimes:
            if regime == "each":
                for t in tests:
                    pool = data.rows_of(data.train_rows, [t])
                    if len(pool) == 0:
                        raise ValueError(f"regime 'each': no training rows for {t!r}")
                    for seed, train in enumerate(_train_draws(
                            data, pool, k, n_experiments, random_state, of=f"language {t!r}")):
                        keys = {"regime": regime, "k": k, "seed": seed}
                        fits.append(_Fit(keys, train, [({"test_language": t}, rows_test[t])]))
                continue
            if regime == "en":
                pool = data.rows_of(data.train_rows, [source_language])
                if len(pool) == 0:
                    raise ValueError(f"regime 'en': no training rows for {source_language!r}")
            else:
                pool = data.train_rows
            all_tests = [({"test_language": t}, rows_test[t]) for t in tests]
            of = f"regime {regime!r}"
            for seed, train in enumerate(_train_draws(data, pool, k, n_experiments, random_state,
                                                      of=of)):
                fits.append(_Fit({"regime": regime, "k": k, "seed": seed}, train, all_tests))
    out = _run(data, fits, estimator, metrics)
    return out[["regime", "test_language"] + [c for c in out.columns
                                              if c not in ("regime", "test_language")]]


def _pick(present: np.ndarray, wanted: Iterable[Any] | None, name: str) -> list[Any]:
    have = list(pd.unique(present))
    if wanted is None:
        return have
    wanted = list(wanted)
    missing = [w for w in wanted if w not in set(have)]
    if missing:
        raise ValueError(f"{name}: {missing} not found; available: {have}")
    return wanted
