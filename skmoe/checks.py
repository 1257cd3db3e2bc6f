"""Estimator checks for transformers that take raw text: sklearn's data-free checks plus text ones.

``sklearn.utils.estimator_checks.check_estimator`` cannot test a text transformer: with
``input_tags.two_d_array = False`` it skips every check, and most of its checks feed numeric arrays
that a text transformer must reject. This module runs the sklearn checks that need no data and
text versions of the rest, so that users can check their own subclasses the same way::

    from skmoe.checks import check_text_transformer
    check_text_transformer(MyEmbedder(...))          # raises AssertionError naming the failed check

    # or one pytest test per check, like sklearn's parametrize_with_checks
    from skmoe.checks import parametrize_text_transformer_checks

    @parametrize_text_transformer_checks(MyEmbedder(...))
    def test_sklearn_contract(estimator, check):
        check(estimator)

sklearn checks run as they are (:data:`SKLEARN_CHECKS`): cloning, ``repr``, nothing set in
``__init__`` but parameters, default construction, ``get_params``/``set_params`` consistency,
``__init__``/``set_params`` never raising, mixin order, tag types, tag API, and
``get_feature_names_out`` raising ``NotFittedError`` before ``fit``.

Text equivalents of the numeric sklearn checks (:data:`TEXT_CHECKS`):

=========================================  =========================================================
text check                                 replaces (sklearn, numeric)
=========================================  =========================================================
``check_text_tags``                        (declares ``input_tags.string``)
``check_text_unfitted``                    check_transformers_unfitted, check_estimators_unfitted
``check_text_fit_returns_self``            check_estimators_fit_returns_self, check_fit_score_takes_y
``check_text_fit_keeps_params``            check_dont_overwrite_parameters,
                                           check_estimators_overwrite_params
``check_text_fit_check_is_fitted``         check_fit_check_is_fitted
``check_text_fit_idempotent``              check_fit_idempotent
``check_text_transform_output``            check_transformer_general, check_transformer_get_feature_names_out
``check_text_transform_keeps_state``       check_dict_unchanged
``check_text_clone``                       check_estimator_cloneable (fitted), clone equality
``check_text_pickle``                      check_estimators_pickle (plus a size limit: no weights)
``check_text_subset_invariance``           check_methods_subset_invariance (each text alone)
``check_text_order_invariance``            check_methods_sample_order_invariance
``check_text_input_containers``            check_transformer_data_not_an_array (list, tuple, array,
                                           Series, one-column DataFrame)
``check_text_set_output``                  check_set_output_transform(_pandas)
``check_text_empty_string``                (empty strings embed)
``check_text_duplicates``                  (duplicate texts give identical rows)
``check_text_rejects_bad_input``           (bare ``str`` and missing values raise; the message
                                           names the row)
=========================================  =========================================================

Not run, because they only make sense for numeric input: ``check_n_features_in*``,
``check_fit2d_*``, ``check_fit1d``, ``check_estimators_dtypes``,
``check_transformer_preserve_dtypes`` (the output dtype does not follow the input),
``check_estimators_nan_inf``, the sparse, sample-weight, array-API, read-only-memmap,
complex-data and positive-only checks, ``check_dataframe_column_names_consistency`` (no
``n_features_in_`` for text) and ``check_param_validation`` (parameters are validated in ``fit``).
``check_estimators_empty_data_messages`` is not run either: an empty list of texts gives a
``(0, n_features)`` matrix by design.

Float outputs are compared within ``atol`` (1e-5 by default: fp32 noise between batch shapes);
integer outputs (int8/uint8/binary) exactly.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as sk
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

#: Texts used when none are given: several scripts, an empty string and a long one.
DEFAULT_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning turns data into predictions.",
    "",
    "Le chat dort sur le canapé.",
    "Der Zug fährt um neun Uhr ab.",
    "東京は日本の首都です。",
    "Это короткое предложение.",
    "short",
    " ".join(["A much longer text that repeats itself to span many tokens."] * 8),
    "Embeddings map sentences to vectors.",
)

#: sklearn checks that need no numeric data and apply as they are.
SKLEARN_CHECKS: tuple[Callable[..., Any], ...] = (
    sk.check_estimator_cloneable,
    sk.check_estimator_repr,
    sk.check_no_attributes_set_in_init,
    sk.check_parameters_default_constructible,
    sk.check_get_params_invariance,
    sk.check_set_params,
    sk.check_do_not_raise_errors_in_init_or_set_params,
    sk.check_mixin_order,
    sk.check_valid_tag_types,
    sk.check_estimator_tags_renamed,
    sk.check_get_feature_names_out_error,
)


# -- helpers -----------------------------------------------------------------------------------
def _assert_same(a: Any, b: Any, atol: float, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shapes differ, {a.shape} vs {b.shape}"
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(b.dtype, np.floating):
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
        assert diff <= atol, f"{what}: max abs difference {diff:.3g} > atol {atol:.3g}"
    else:
        assert np.array_equal(a, b), f"{what}: integer outputs differ"


def _y(estimator: Any, texts: Sequence[str]) -> np.ndarray | None:
    """Two alternating labels for an estimator whose tags say fit needs ``y``, else None."""
    return np.arange(len(texts)) % 2 if get_tags(estimator).target_tags.required else None


def _fitted(estimator_orig: Any, texts: Sequence[str]) -> Any:
    return clone(estimator_orig).fit(list(texts), _y(estimator_orig, texts))


def _state_hash(estimator: Any) -> str:
    import joblib

    return joblib.hash(vars(estimator))


# -- the text checks ---------------------------------------------------------------------------
def check_text_tags(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """The estimator declares string input (``input_tags.string``)."""
    assert get_tags(estimator_orig).input_tags.string, f"{name} should set input_tags.string = True"


def check_text_unfitted(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """Before ``fit``: ``check_is_fitted`` and ``transform`` raise ``NotFittedError``."""
    if not get_tags(estimator_orig).requires_fit:
        return
    est = clone(estimator_orig)
    try:
        check_is_fitted(est)
    except NotFittedError:
        pass
    else:
        raise AssertionError(f"{name} passes check_is_fitted before fit")
    try:
        est.transform(list(texts))
    except NotFittedError:
        return
    raise AssertionError(f"{name}.transform should raise NotFittedError before fit")


def check_text_fit_returns_self(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """``fit(X)`` and ``fit(X, y)`` return the estimator itself."""
    est = clone(estimator_orig)
    assert est.fit(list(texts), _y(est, texts)) is est, f"{name}.fit(X) should return self"
    y = np.arange(len(texts)) % 2
    assert est.fit(list(texts), y) is est, f"{name}.fit(X, y) should return self"


def check_text_fit_keeps_params(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """``fit`` changes no parameter and adds only attributes ending (or starting) with ``_``."""
    import joblib

    est = clone(estimator_orig)
    params = {k: joblib.hash(v) for k, v in est.get_params().items()}
    before = set(vars(est))
    est.fit(list(texts), _y(est, texts))
    changed = [k for k, v in est.get_params().items() if joblib.hash(v) != params.get(k)]
    assert not changed, f"{name}.fit changed parameter(s) {changed}"
    public = [k for k in set(vars(est)) - before if not (k.endswith("_") or k.startswith("_"))]
    assert not public, f"{name}.fit added public attribute(s) {public} not ending with '_'"


def check_text_fit_check_is_fitted(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """After ``fit``, ``check_is_fitted`` passes."""
    est = _fitted(estimator_orig, texts)
    try:
        check_is_fitted(est)
    except NotFittedError as exc:
        raise AssertionError(f"{name} fails check_is_fitted after fit") from exc


def check_text_fit_idempotent(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """Fitting again on the same texts (even after fitting on others) gives the same transform."""
    texts = list(texts)
    est = _fitted(estimator_orig, texts)
    first = est.transform(texts)
    other = texts[::-1][:3]
    est.fit(other, _y(est, other)).fit(texts, _y(est, texts))
    _assert_same(est.transform(texts), first, atol, f"{name}: transform after refitting")


def check_text_transform_output(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """A 2-D C-contiguous array, one row per text, finite, as wide as ``get_feature_names_out``;
    ``fit_transform`` equals ``fit(...).transform``."""
    texts = list(texts)
    est = _fitted(estimator_orig, texts)
    out = est.transform(texts)
    assert isinstance(out, np.ndarray), f"{name}.transform returned {type(out).__name__}, not ndarray"
    assert out.ndim == 2 and out.shape[0] == len(texts), f"{name}.transform returned shape {out.shape}"
    assert out.flags.c_contiguous, f"{name}.transform output is not C-contiguous"
    if np.issubdtype(out.dtype, np.floating):
        assert np.isfinite(out).all(), f"{name}.transform returned non-finite values"
    if hasattr(est, "get_feature_names_out"):
        names = est.get_feature_names_out()
        assert len(names) == out.shape[1], f"{name}: {len(names)} feature names for {out.shape[1]} columns"
    _assert_same(clone(estimator_orig).fit_transform(texts, _y(est, texts)), out, atol, f"{name}: fit_transform vs transform")


def check_text_transform_keeps_state(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """``transform`` does not change the estimator's ``__dict__``."""
    est = _fitted(estimator_orig, texts)
    before = _state_hash(est)
    est.transform(list(texts))
    est.transform(list(texts)[:2])
    assert _state_hash(est) == before, f"{name}.transform changed the estimator's __dict__"


def check_text_clone(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """A clone of a fitted estimator has equal parameters, is unfitted, and refits to equal output."""
    est = _fitted(estimator_orig, texts)
    twin = clone(est)
    a, b = est.get_params(deep=False), twin.get_params(deep=False)
    assert a.keys() == b.keys(), f"{name}: clone has other parameters"
    for key in a:
        assert a[key] is b[key] or _equal(a[key], b[key]), f"{name}: clone changed parameter {key!r}"
    if get_tags(estimator_orig).requires_fit:
        try:
            check_is_fitted(twin)
        except NotFittedError:
            pass
        else:
            raise AssertionError(f"{name}: a clone should not be fitted")
    twin.fit(list(texts), _y(twin, texts))
    _assert_same(twin.transform(list(texts)), est.transform(list(texts)), atol, f"{name}: clone vs original")


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and the like
        import joblib

        return joblib.hash(a) == joblib.hash(b)


def check_text_pickle(
    name: str, estimator_orig: Any, texts: Sequence[str], atol: float, max_bytes: int = 1_000_000
) -> None:
    """A pickled fitted estimator is small (no weights) and transforms like the original."""
    est = _fitted(estimator_orig, texts)
    expected = est.transform(list(texts))
    blob = pickle.dumps(est)
    assert len(blob) <= max_bytes, f"{name} pickles to {len(blob)} bytes (> {max_bytes}): weights inside?"
    again = pickle.loads(blob)
    _assert_same(again.transform(list(texts)), expected, atol, f"{name}: after a pickle round trip")


def check_text_subset_invariance(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """Each text alone gives the row it gets in the whole batch."""
    texts = list(texts)
    est = _fitted(estimator_orig, texts)
    full = est.transform(texts)
    for i, text in enumerate(texts):
        _assert_same(est.transform([text])[0], full[i], atol, f"{name}: text {i} alone vs in the batch")


def check_text_order_invariance(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """Permuting the texts permutes the rows and nothing else."""
    texts = list(texts)
    est = _fitted(estimator_orig, texts)
    full = est.transform(texts)
    perm = np.random.default_rng(0).permutation(len(texts))
    _assert_same(est.transform([texts[i] for i in perm]), full[perm], atol, f"{name}: shuffled input")
    _assert_same(est.transform(texts[::-1]), full[::-1], atol, f"{name}: reversed input")


def check_text_input_containers(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """A list, tuple, object array, pandas Series and one-column DataFrame give the same output."""
    import pandas as pd

    texts = list(texts)
    est = _fitted(estimator_orig, texts)
    ref = est.transform(texts)
    containers = {
        "tuple": tuple(texts),
        "ndarray": np.asarray(texts, dtype=object),
        "Series": pd.Series(texts, index=np.arange(len(texts)) + 100),
        "one-column DataFrame": pd.DataFrame({"text": texts}),
    }
    for kind, X in containers.items():
        _assert_same(est.transform(X), ref, atol, f"{name}: {kind} input")


def check_text_set_output(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """``set_output(transform="pandas")`` gives a DataFrame (feature-name columns, input index) and
    ``set_output(transform="default")`` an array again."""
    import pandas as pd

    texts = pd.Series(list(texts), index=np.arange(len(texts)) * 2)
    est = _fitted(estimator_orig, texts)
    ref = est.transform(texts)
    df = est.set_output(transform="pandas").transform(texts)
    assert isinstance(df, pd.DataFrame), f"{name}: set_output(transform='pandas') gave {type(df).__name__}"
    assert list(df.columns) == list(est.get_feature_names_out()), f"{name}: columns != feature names"
    assert list(df.index) == list(texts.index), f"{name}: the input's index was not kept"
    _assert_same(df.to_numpy(), ref, atol, f"{name}: pandas output values")
    back = est.set_output(transform="default").transform(texts)
    assert isinstance(back, np.ndarray), f"{name}: set_output(transform='default') gave {type(back).__name__}"


def check_text_empty_string(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """The empty string is a valid text."""
    est = _fitted(estimator_orig, texts)
    out = est.transform(["", "x"])
    assert out.shape[0] == 2, f"{name}: the empty string did not give a row"
    if np.issubdtype(out.dtype, np.floating):
        assert np.isfinite(out).all(), f"{name}: the empty string gave non-finite values"


def check_text_duplicates(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """Duplicate texts give identical rows."""
    texts = list(texts)
    est = _fitted(estimator_orig, texts)
    out = est.transform([texts[0], texts[1], texts[0], texts[0]])
    _assert_same(out[2], out[0], 0.0, f"{name}: a duplicate text")
    _assert_same(out[3], out[0], 0.0, f"{name}: a duplicate text")


def check_text_rejects_bad_input(name: str, estimator_orig: Any, texts: Sequence[str], atol: float) -> None:
    """A bare ``str`` and a missing value raise ``TypeError``/``ValueError``; the latter names its row."""
    est = _fitted(estimator_orig, texts)
    try:
        est.transform("a single string")
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"{name}.transform accepted a bare str (it would embed its characters)")
    try:
        est.transform(["ok", "fine", None])
    except (TypeError, ValueError) as exc:
        assert "row 2" in str(exc), f"{name}: the error for a missing text does not name row 2: {exc}"
    else:
        raise AssertionError(f"{name}.transform accepted None as a text")


TEXT_CHECKS: tuple[Callable[..., None], ...] = (
    check_text_tags,
    check_text_unfitted,
    check_text_fit_returns_self,
    check_text_fit_keeps_params,
    check_text_fit_check_is_fitted,
    check_text_fit_idempotent,
    check_text_transform_output,
    check_text_transform_keeps_state,
    check_text_clone,
    check_text_pickle,
    check_text_subset_invariance,
    check_text_order_invariance,
    check_text_input_containers,
    check_text_set_output,
    check_text_empty_string,
    check_text_duplicates,
    check_text_rejects_bad_input,
)


# -- running them ------------------------------------------------------------------------------
def check_names() -> list[str]:
    """Names of every check, sklearn ones first."""
    return [c.__name__ for c in SKLEARN_CHECKS + TEXT_CHECKS]


def text_transformer_checks(
    estimator: Any, texts: Sequence[str] | None = None, *, atol: float = 1e-5
) -> Iterator[tuple[Any, Callable[[Any], None]]]:
    """Yield ``(estimator, check)`` pairs; ``check(estimator)`` runs one check.

    ``check`` is a :func:`functools.partial` whose ``func.__name__`` is the check's name.
    """
    name = type(estimator).__name__
    texts = tuple(DEFAULT_TEXTS if texts is None else texts)
    if len(texts) < 4 or len(set(texts)) < 4:
        raise ValueError("the checks need at least 4 distinct texts")
    for check in SKLEARN_CHECKS:
        yield estimator, functools.partial(check, name)
    for check in TEXT_CHECKS:
        yield estimator, functools.partial(_text_check, check, name, texts=texts, atol=atol)


def _text_check(check: Callable[..., None], name: str, estimator: Any, *, texts: Sequence[str], atol: float) -> None:
    check(name, _seeded(estimator), texts, atol)


def _seeded(estimator: Any) -> Any:
    """A clone with ``random_state=0`` where it has the parameter, as scikit-learn's checks seed
    theirs: ``LearnedPooling()`` (random_state=None) failed the refit check at random."""
    est = clone(estimator)
    if "random_state" in est.get_params(deep=False):
        est.set_params(random_state=0)
    return est


def _check_name(check: Callable[..., Any]) -> str:
    if isinstance(check, functools.partial):
        if check.func is _text_check:
            return check.args[0].__name__
        return _check_name(check.func)
    return getattr(check, "__name__", repr(check))


def check_text_transformer(
    estimator: Any,
    texts: Sequence[str] | None = None,
    *,
    atol: float = 1e-5,
    checks: Sequence[str] | None = None,
    expected_failed_checks: dict[str, str] | None = None,
) -> None:
    """Run every check (or those named in ``checks``) on ``estimator``.

    Parameters
    ----------
    estimator : estimator instance
        Unfitted; each check works on clones.
    texts : sequence of str, optional
        At least 4 distinct texts (default :data:`DEFAULT_TEXTS`).
    atol : float, default=1e-5
        Tolerance for float outputs that should be equal (batch shapes change fp32 rounding).
    checks : sequence of str, optional
        Names of the checks to run (see :func:`check_names`).
    expected_failed_checks : dict, optional
        ``{check name: reason}`` of checks expected to fail; one that passes is an error.

    Raises
    ------
    AssertionError
        Naming the first check that failed (or the first expected failure that passed).
    """
    expected = dict(expected_failed_checks or {})
    wanted = None if checks is None else set(checks)
    unknown = (wanted or set()) | set(expected)
    unknown -= set(check_names())
    if unknown:
        raise ValueError(f"unknown check name(s): {sorted(unknown)}")
    for est, check in text_transformer_checks(estimator, texts, atol=atol):
        check_name = _check_name(check)
        if wanted is not None and check_name not in wanted:
            continue
        try:
            check(est)
        except Exception as exc:
            if check_name in expected:
                continue
            raise AssertionError(f"{check_name} failed for {type(estimator).__name__}: {exc}") from exc
        if check_name in expected:
            raise AssertionError(f"{check_name} was expected to fail ({expected[check_name]}) but passed")


def parametrize_text_transformer_checks(
    *estimators: Any,
    texts: Sequence[str] | None = None,
    atol: float = 1e-5,
    expected_failed_checks: dict[str, str] | None = None,
) -> Any:
    """A ``pytest.mark.parametrize("estimator, check", ...)`` over every check of every estimator.

    Checks named in ``expected_failed_checks`` are marked ``xfail(strict=True)``.
    """
    import pytest

    expected = expected_failed_checks or {}
    params = []
    for estimator in estimators:
        for est, check in text_transformer_checks(estimator, texts, atol=atol):
            check_name = _check_name(check)
            marks = [pytest.mark.xfail(strict=True, reason=expected[check_name])] if check_name in expected else []
            params.append(pytest.param(est, check, id=f"{type(est).__name__}-{check_name}", marks=marks))
    return pytest.mark.parametrize("estimator, check", params)
