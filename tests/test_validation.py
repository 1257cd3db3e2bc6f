"""``validate_texts``: every accepted container, and every bad input with an error naming its row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from skmoe.validation import as_column, check_aligned, row_label, split_pairs, validate_texts

TEXTS = ["first text", "", "drittes Stück", "四"]


@pytest.mark.parametrize(
    "container",
    [
        list,
        tuple,
        lambda t: np.asarray(t),  # fixed-width unicode array
        lambda t: np.asarray(t, dtype=object),
        lambda t: np.asarray(t, dtype=object)[:, None],  # [n, 1], what ColumnTransformer may pass
        lambda t: pd.Series(t, index=[10, 11, 12, 13]),
        lambda t: pd.Series(t, dtype="string"),
        lambda t: pd.DataFrame({"text": t}),  # one-column DataFrame
        lambda t: (x for x in t),  # any ordered iterable
        lambda t: pl.Series(t),
        lambda t: pl.DataFrame({"text": t}),
        lambda t: pa.array(t),
        lambda t: pa.chunked_array([t[:2], t[2:]]),
        lambda t: pa.table({"text": t}),
    ],
    ids=["list", "tuple", "ndarray-U", "ndarray-object", "ndarray-n1", "series", "series-string",
         "dataframe", "generator", "polars-series", "polars-dataframe", "arrow-array",
         "arrow-chunked", "arrow-table"],
)
def test_accepted_containers_give_the_same_list(container):
    out = validate_texts(container(TEXTS))
    assert out == TEXTS
    assert all(type(t) is str or isinstance(t, str) for t in out)


def test_empty_strings_and_empty_input_are_valid():
    assert validate_texts(["", ""]) == ["", ""]
    assert validate_texts([]) == []
    assert validate_texts(pd.Series([], dtype=object)) == []


@pytest.mark.parametrize("bare", ["a text", b"bytes", bytearray(b"x")])
def test_bare_string_or_bytes_is_a_type_error(bare):
    with pytest.raises(TypeError, match="wrap it in a list"):
        validate_texts(bare)


@pytest.mark.parametrize("unordered", [{"a", "b"}, frozenset({"a"}), {"a": 1}])
def test_unordered_containers_are_rejected(unordered):
    with pytest.raises(TypeError, match="ordered collection"):
        validate_texts(unordered)


def test_non_iterable_is_a_type_error():
    with pytest.raises(TypeError, match="got int"):
        validate_texts(3)


# (bad item, expected error type, a fragment of the message besides the row)
BAD_ITEMS = [
    (None, ValueError, "Missing text"),
    (float("nan"), ValueError, "Missing text"),
    (np.float32("nan"), ValueError, "Missing text"),
    (pd.NA, ValueError, "Missing text"),
    (pd.NaT, ValueError, "Missing text"),
    (b"raw bytes", TypeError, "is bytes"),
    (bytearray(b"raw"), TypeError, "is bytes"),
    (42, TypeError, "is int"),
    (3.5, TypeError, "is float"),
    (["nested"], TypeError, "is list"),
    ("bad \ud800 surrogate", ValueError, "lone surrogate"),
    # an emoji in UTF-16 halves: the lone-surrogate advice ('replace') turned it into '??'
    ("ok \ud83d\ude00", ValueError, "surrogate pair ('\\ud83d\\ude00' at character 3); join"),
]


@pytest.mark.parametrize(("bad", "error", "fragment"), BAD_ITEMS, ids=[repr(b[0])[:20] for b in BAD_ITEMS])
def test_bad_rows_name_the_first_offending_row_and_type(bad, error, fragment):
    texts = ["ok", "fine", bad, "later", bad]
    with pytest.raises(error) as info:
        validate_texts(texts)
    msg = str(info.value)
    assert "row 2" in msg and "row 4" not in msg
    assert fragment in msg


def test_series_errors_also_name_the_index_label():
    s = pd.Series(["ok", None, "x"], index=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"row 1 \(index 'b'\)"):
        validate_texts(s)
    df = pd.DataFrame({"text": ["ok", "x", 7]}, index=[100, 101, 102])
    with pytest.raises(TypeError, match=r"row 2 \(index 102\).*int"):
        validate_texts(df)


def test_surrogate_error_says_where_in_the_text():
    with pytest.raises(ValueError, match=r"row 0 .*character 3"):
        validate_texts(["abc\udfffdef"])


@pytest.mark.parametrize(
    "table",
    [pd.DataFrame({"a": ["x"], "b": ["y"]}), np.array([["x", "y"]], dtype=object),
     np.empty((1, 1, 1), dtype=object), pl.DataFrame({"a": ["x"], "b": ["y"]}),
     pa.table({"a": ["x"], "b": ["y"]})],
    ids=["dataframe-2col", "ndarray-2col", "ndarray-3d", "polars-2col", "arrow-2col"],
)
def test_several_columns_are_a_value_error(table):
    with pytest.raises(ValueError, match="column|1-D"):
        validate_texts(table)


@pytest.mark.parametrize("container", [pl.Series, lambda t: pl.DataFrame({"text": t}), pa.array],
                         ids=["polars-series", "polars-dataframe", "arrow-array"])
def test_missing_values_in_polars_and_arrow_name_the_row(container):
    with pytest.raises(ValueError, match=r"Missing text at row 1\b"):
        validate_texts(container(["ok", None, "x"]))


def test_split_pairs_reads_any_iterable_of_pairs():
    a, b = ["x", "y", "z"], ["1", "2", "3"]
    assert split_pairs(zip(a, b, strict=True)) == (a, b)
    assert split_pairs(p for p in zip(a, b, strict=True)) == (a, b)
    assert split_pairs(iter([("x", "1")])) == (["x"], ["1"])


def test_check_aligned_refuses_pandas_arguments_with_other_indexes():
    X = pd.Series(["a", "b", "c"], index=[10, 11, 12])
    y = pd.Series([0, 1, 0], index=[12, 11, 10])
    with pytest.raises(ValueError, match=r"^X and y are pandas objects with different indexes "
                       r"\(row 0 has index 10 in X but 12 in y\).*y = y\.loc\[X\.index\].*"
                       r"y\.to_numpy\(\)"):
        check_aligned(X=X, y=y)
    with pytest.raises(ValueError, match="^X and groups"):  # the first pandas one is the reference
        check_aligned(X=X, y=[0, 1, 0], groups=pd.Series(list("abc"), index=[11, 12, 13]))
    check_aligned(X=X, y=pd.Series([0, 1, 0]))  # no label in common: y built afresh, by position
    nan_index = pd.Series([1, 2, 3], index=[float("nan"), 1.0, 2.0])
    with pytest.raises(ValueError, match=r"row 1 has index 1\.0 in X but 2\.0 in y"):
        check_aligned(X=nan_index, y=pd.Series([1, 2, 3], index=[float("nan"), 2.0, 1.0]))
    check_aligned(X=X, y=y.loc[X.index], groups=np.zeros(3))  # equal indexes
    check_aligned(X=X, y=y.to_numpy(), groups=None)  # one pandas argument
    check_aligned(X=pd.DataFrame({"t": list("abc")}), y=pd.Series([0, 1, 0]))  # RangeIndex both
    check_aligned(X=X, y=y.iloc[:2])  # lengths differ: the length check names it


def test_as_column_names_the_argument_and_the_row():
    assert as_column(pd.Series([1, 2]), 2, "y").tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"y must be 1-D .*shape \(2, 1\).*df\['col'\]"):
        as_column(pd.DataFrame({"label": [1, 2]}), 2, "y")
    with pytest.raises(ValueError, match="texts has 3 rows but groups has 2"):
        as_column(["a", "b"], 3, "groups", rows="texts")
    with pytest.raises(ValueError, match="groups has a missing value .* at row 1"):
        as_column(["a", None], 2, "groups")
    tuples = pd.Series([("eng", 1), ("fra", 2)], index=["p", "q"])
    with pytest.raises(TypeError, match=r"groups at row 0 \(index 'p'\) is a tuple"):
        as_column(tuples, 2, "groups")
    with pytest.raises(ValueError, match="tuples or lists are not single values"):
        as_column([("eng", 1), ("fra", 2)], 2, "groups")
    with pytest.raises(TypeError, match=r"groups at row 1 is a tuple"):  # ragged: numpy refused
        as_column(["eng", ("fra", 2)], 2, "groups")


def test_row_label_shows_numpy_index_labels_as_plain_values():
    assert row_label(pd.Index([10, 11]), 1) == "row 1 (index 11)"
    assert row_label(pd.Index([0, 1]), 1) == "row 1"
    assert row_label(None, 4) == "row 4"


def test_as_column_finds_a_nan_among_texts_in_a_list():
    with pytest.raises(ValueError, match="groups has a missing value .* at row 1"):
        as_column(["a", float("nan")], 2, "groups")
