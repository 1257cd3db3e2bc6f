"""Validation of text input: every accepted container, and errors that name the offending row."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def row_label(index: Any, position: int) -> str:
    """Where row ``position`` is, for errors: ``"row 3"``, or ``"row 3 (index 'c')"`` when its
    index label differs from its position (a filtered table keeps the row numbers of its file).

    Parameters
    ----------
    index : pandas.Index, sequence or None
        The row labels (None: positions only).
    position : int
        The row's position.

    Returns
    -------
    str
    """
    if index is None:
        return f"row {position}"
    label = _plain(index[position])
    return f"row {position}" if label == position else f"row {position} (index {label!r})"


def validate_texts(X: Any, name: str | None = None) -> list[str]:
    """Return ``X`` as a list of ``str``, or raise an error naming the first bad row (and
    ``name``, the argument, when given: ``"b: Missing text at row 1 ..."``).

    Accepted: list/tuple/1-D array of str, a pandas or polars Series, a pyarrow array, a
    one-column pandas/polars DataFrame, pyarrow Table or 2-D array (what ``ColumnTransformer``
    passes for a single text column). Empty strings are valid texts.

    Raises
    ------
    TypeError
        For a bare ``str``/``bytes`` instead of a collection, an unordered container (set,
        dict), or rows that are not ``str`` (bytes, numbers, lists, ...).
    ValueError
        For missing values (None/NaN), lone surrogates, or tables with several columns.
    """
    try:
        return _validate_texts(X)
    except (TypeError, ValueError) as exc:
        if name is None:
            raise
        raise type(exc)(f"{name}: {exc}") from None


def _validate_texts(X: Any) -> list[str]:
    if X is None:
        raise TypeError("Expected a collection of texts, got None.")
    if hasattr(X, "tocsr") and hasattr(X, "nnz"):  # scipy sparse: numbers, not texts
        raise TypeError(f"Expected texts, got a scipy sparse matrix {X.shape}: a text "
                        "transformer takes a list or column of strings.")
    if isinstance(X, (str, bytes, bytearray)):
        raise TypeError(
            f"Expected a collection of texts, got a single {type(X).__name__} (one raw text); wrap it "
            "in a list: [text]."
        )
    if isinstance(X, (set, frozenset, dict)):
        # Unordered (or keyed) containers would give rows in an arbitrary order.
        raise TypeError(
            f"Expected an ordered collection of texts (list, tuple, array, Series), got "
            f"{type(X).__name__}; convert it with list(...) in the order you want the rows."
        )
    index = None
    X = _from_arrow_or_polars(X)
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
        _one_column(X.columns, "DataFrame")
        X = X.iloc[:, 0]
    if hasattr(X, "iloc"):  # pandas Series
        index = list(X.index)
        X = X.to_list()
    elif isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            raise ValueError(f"Expected a 1-D array of texts (or one column), got shape {X.shape}.")
        X = X.tolist()
    elif not isinstance(X, (list, tuple)):
        try:
            X = list(X)
        except TypeError:
            raise TypeError(
                f"Expected a list, tuple, array or pandas Series of texts, got {type(X).__name__}."
            ) from None
    texts = list(X)
    for i, t in enumerate(texts):
        if isinstance(t, str):
            continue
        where = row_label(index, i)
        if t is None or (isinstance(t, (float, np.floating)) and np.isnan(t)) or _is_pandas_na(t):
            raise ValueError(f"Missing text at {where}: got {t!r}. Drop or fill missing values first.")
        if isinstance(t, (bytes, bytearray)):
            raise TypeError(f"Text at {where} is bytes, not str; decode it first (e.g. .decode('utf-8')).")
        raise TypeError(f"Text at {where} is {type(t).__name__} ({t!r:.40}), not str.")
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            pair = t[exc.start : exc.start + 2]
            if len(pair) == 2 and "\ud800" <= pair[0] <= "\udbff" and "\udc00" <= pair[1] <= "\udfff":
                # a character split in UTF-16 halves: recoverable, not noise ('replace' gave ??)
                raise ValueError(
                    f"Text at {row_label(index, i)} holds a character as a UTF-16 surrogate "
                    f"pair ({pair!r} at character {exc.start}); join the halves, e.g. "
                    "text.encode('utf-16', 'surrogatepass').decode('utf-16')."
                ) from None
            raise ValueError(
                f"Text at {row_label(index, i)} is not valid Unicode (lone surrogate "
                f"{t[exc.start]!r} at character {exc.start}); clean it, e.g. "
                "text.encode('utf-8', 'replace').decode('utf-8')."
            ) from None
    return texts


def check_prompt(prompt: Any, name: str = "prompt") -> None:
    """Refuse a ``prompt`` that is neither None nor a str of valid Unicode (it is put before
    every text and tokenized with it), naming the argument."""
    if prompt is None:
        return
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a str (the prefix put before every text) or None, got "
                        f"{type(prompt).__name__} {prompt!r:.40}")
    validate_texts([prompt], name)  # lone surrogates: as a text's


def split_pairs(X: Any) -> tuple[list[str], list[str]]:
    """Two text columns from a 2-column DataFrame, ``[n, 2]`` array or list of pairs (or any
    iterable of pairs, such as ``zip(a, b)``).

    Two lists ``a`` and ``b`` of texts are the pairs ``list(zip(a, b))``; ``[a, b]`` itself is
    refused (with that hint) unless ``a`` and ``b`` hold two texts each, when it cannot be told
    from two pairs and is read as the pairs ``(a[0], a[1])`` and ``(b[0], b[1])``.
    """
    if hasattr(X, "iloc") and hasattr(X, "columns"):
        if X.shape[1] != 2:
            raise ValueError(f"Expected two text columns, got {X.shape[1]}: {list(X.columns)[:5]}.")
        columns = [(repr(name), X.iloc[:, i]) for i, name in enumerate(X.columns)]
    else:
        if hasattr(X, "__iter__") and not hasattr(X, "__len__"):  # zip(a, b), a generator
            X = list(X)
        if isinstance(X, (list, tuple)) and len(X) == 2 and all(
                isinstance(side, np.ndarray) or hasattr(side, "iloc") for side in X):
            raise ValueError(_ZIP_HINT.format(shape="two arrays/Series of texts"))
        arr = np.asarray(X, dtype=object)
        if arr.ndim == 2 and arr.shape[0] == 2 and arr.shape[1] > 2:
            raise ValueError(_ZIP_HINT.format(shape=f"shape {arr.shape}"))
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"Expected pairs of texts with shape (n, 2), got shape {arr.shape}.")
        columns = [(str(i), arr[:, i]) for i in range(2)]
    a, b = (validate_texts(column, f"Column {name} of the pairs") for name, column in columns)
    return a, b


_ZIP_HINT = ("Expected pairs of texts with shape (n, 2), got {shape}: two columns of texts "
             "rather than a list of pairs? Pass list(zip(a, b)) or a 2-column DataFrame.")


def check_int(name: str, value: Any, low: int, high: int | None = None,
              optional: bool = False) -> None:
    """An integer parameter (numpy integers too; not bool, not float) within ``[low, high]``
    (``optional``: None allowed): a TypeError or ValueError naming it."""
    if value is None and optional:
        return
    if not is_int_at_least(value, None):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got {value!r} "
                        f"({type(value).__name__})")
    if value < low or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """A switch: True or False (numpy's too). ``center="false"`` is a non-empty string, so
    truthy: it turned centring on."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_verbose(value: Any) -> None:
    """``verbose``: True/False (scikit-learn's habit) or an int >= 0."""
    if not isinstance(value, (bool, np.bool_)):
        check_int("verbose", value, 0)


def check_number(name: str, value: Any, *, low: float = -np.inf, low_open: bool = False) -> None:
    """A finite real number (not bool) at least ``low`` (above it with ``low_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not (
            np.isfinite(value)):
        raise TypeError(f"{name} must be a finite number, got {value!r} "
                        f"({type(value).__name__})")
    if value < low or (low_open and value == low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")


def label_kinds(values: Any) -> dict[str, Any]:
    """The kinds of value among labels (``"str"``, ``"number"``, or a type name), each with its
    first value: ``{"str": "sports", "number": 3}`` for labels that mix the two."""
    kinds: dict[str, Any] = {}
    for v in np.asarray(values, dtype=object).ravel():
        kind = ("str" if isinstance(v, str) else
                "number" if isinstance(v, numbers.Number) and not isinstance(v, bool) else
                type(v).__name__)
        kinds.setdefault(kind, v.item() if isinstance(v, np.generic) else v)
    return kinds


def check_label_types(values: Any, name: str = "labels") -> None:
    """Refuse labels of several kinds (``"3"`` and ``3`` are different classes, and sorting them
    fails) with a ``TypeError`` that names both kinds and what to do."""
    kinds = label_kinds(values)
    if len(kinds) > 1:
        shown = ", ".join(f"{kind} ({first!r})" for kind, first in kinds.items())
        raise TypeError(f"{name} mix several kinds of value: {shown}; convert them to one kind "
                        "first (e.g. .astype(str))")


def is_int_at_least(value: Any, low: int | None) -> bool:
    """An integer (numpy's too, not bool) of at least ``low`` (None: any integer)."""
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Integral)
            and (low is None or value >= low))


def check_finite_rows(x: np.ndarray, name: str, offset: int = 0) -> np.ndarray:
    """``x`` (2-D vectors) unchanged, or a ValueError naming the first row with a NaN or an
    infinite value (a NaN wins every argmax and spoils every mean it enters)."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} row {offset + int(np.argmax(bad))} has a NaN or infinite value")
    return x


def check_no_missing(values: np.ndarray, name: str) -> None:
    """Refuse None/NaN entries (labels, groups), naming the first row: NaN never equals
    itself, so it would silently form a group of nothing or a class of its own."""
    import pandas as pd

    missing = pd.isna(values)
    if np.any(missing):
        raise ValueError(f"{name} has a missing value (None/NaN) at row {int(np.argmax(missing))}")


def as_column(values: Any, n: int, name: str, *, rows: str = "X") -> np.ndarray:
    """One value per row (labels, groups, ids) as a 1-D array of ``n`` entries.

    Parameters
    ----------
    values : array-like of shape (n,)
        A list, array or pandas/polars Series.
    n : int
        The number of rows of ``rows``.
    name : str
        The argument's name in errors.
    rows : str, default="X"
        The argument whose rows ``values`` describe, in the length error.

    Returns
    -------
    numpy.ndarray of shape (n,)
        ``np.asarray(values)``.

    Raises
    ------
    ValueError
        For a 2-D input (a one-column DataFrame, a list of tuples), another length, or a
        missing value (:func:`check_no_missing`).
    TypeError
        For an entry that is itself a collection (a tuple, list, set, dict or array), naming
        its row: such entries cannot be compared as one label or group.
    """
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged: some entries are sequences (named by row below)
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    if arr.ndim != 1:
        tuples = (isinstance(values, (list, tuple)) and len(values) > 0
                  and isinstance(values[0], (list, tuple)))
        hint = ("; entries that are tuples or lists are not single values: join each into one "
                "string first" if tuples else
                "; pass a single column, e.g. df['col'] rather than df[['col']]"
                if arr.ndim == 2 else "; pass a list, array or Series")
        raise ValueError(f"{name} must be 1-D (one value per row), got shape {arr.shape}{hint}")
    if len(arr) != n:
        raise ValueError(f"{rows} has {n} rows but {name} has {len(arr)}")
    # a list of texts with a NaN becomes a text array holding "nan": check the values as given
    check_no_missing(np.asarray(values, dtype=object) if arr.dtype.kind in "US" else arr, name)
    if arr.dtype == object:
        index = values.index if hasattr(values, "iloc") else None
        for i, v in enumerate(arr):
            if isinstance(v, (tuple, list, set, frozenset, dict, np.ndarray)):
                raise TypeError(
                    f"{name} at {row_label(index, i)} is a {type(v).__name__} ({v!r:.40}), not a "
                    "single value; join each entry into one string first (e.g. '_'.join(...))")
    return arr


def check_aligned(**arguments: Any) -> None:
    """Refuse pandas arguments that are paired row by row but whose indexes differ.

    The evaluation reports pair ``X``, ``y`` and ``groups`` (and their like) by position, as
    scikit-learn does. Two pandas objects whose indexes share labels but not their order (``y``
    sorted, ``X`` not) would pair each text with another row's label, silently. Equal indexes
    pass, and so do indexes with no label in common (``y`` built afresh from ``X``'s rows: no
    alignment can be meant), lists, arrays and ``None``; different lengths are left to the
    length checks.

    Parameters
    ----------
    **arguments
        The arguments paired row by row, by name (``X=X, y=y, groups=groups``).

    Raises
    ------
    ValueError
        Naming the first two pandas arguments whose indexes differ, the first row where they
        do, and how to align them.
    """
    first: tuple[str, Any] | None = None
    for name, value in arguments.items():
        if not (hasattr(value, "iloc") and hasattr(value, "index")):  # pandas Series/DataFrame
            continue
        if first is None:
            first = (name, value)
            continue
        ref_name, ref = first
        a, b = ref.index, value.index
        if len(a) != len(b) or a.equals(b) or not a.isin(b).any():
            continue
        same = (a == b) | (a.isna() & b.isna())  # NaN labels equal each other here
        pos = int(np.flatnonzero(~np.asarray(same))[0])
        raise ValueError(
            f"{ref_name} and {name} are pandas objects with different indexes (row {pos} has "
            f"index {_plain(a[pos])!r} in {ref_name} but {_plain(b[pos])!r} in {name}), and "
            f"rows are paired by position: align them first, e.g. {name} = {name}.loc[{ref_name}.index], or pass "
            f"{name}.to_numpy() to pair them by position")


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value, for messages: ``12``, not ``np.int64(12)``."""
    return value.item() if isinstance(value, np.generic) else value


def _from_arrow_or_polars(X: Any) -> Any:
    """A polars DataFrame or a pyarrow Table/Array as a list (one column only); else ``X``."""
    module = type(X).__module__.split(".")[0]
    if module not in ("polars", "pyarrow"):
        return X
    if module == "polars" and hasattr(X, "columns") and hasattr(X, "to_series"):  # DataFrame
        _one_column(X.columns, "polars DataFrame")
        return X.to_series(0).to_list()
    if module == "pyarrow" and hasattr(X, "column_names"):  # Table / RecordBatch
        _one_column(X.column_names, "pyarrow Table")
        X = X.column(0)
    return X.to_pylist() if hasattr(X, "to_pylist") else X


def _one_column(columns: Any, kind: str) -> None:
    columns = list(columns)
    if len(columns) != 1:
        raise ValueError(
            f"Expected one text column, got a {kind} with {len(columns)} columns "
            f"({columns[:5]}); select the text column first."
        )


def _is_pandas_na(value: Any) -> bool:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return value is pd.NA or value is pd.NaT
