"""A labelled multilingual table made ready for the probes: columns checked, rows split.

:func:`prepare_data` is the one place that checks a table's text, label, language, split and id
columns and splits its rows into train and test (the data's own split, or a seeded stratified
hold-out). The report and the command line call it before any model is loaded, so a bad table
fails in a second with a message naming the column and the row.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._stack import external_stacklevel
from ..validation import check_label_types, row_label

#: Language codes tried, in order, when no source language is given.
ENGLISH = ("eng_Latn", "eng", "en", "en_US", "english", "English")
#: Split values that name rows for neither probe (e.g. SIB-200's ``dev``): left out, and said so.
UNUSED_SPLITS = ("dev", "development", "val", "valid", "validation")


class DataError(ValueError):
    """The table cannot be used (missing column, unknown split value, a language without test
    rows, ...). ``column_role`` names the column's role (``"text"``, ``"label"``, ...) when the
    problem is a column that is not there, so a caller can name its own option for it."""

    def __init__(self, message: str, column_role: str | None = None) -> None:
        super().__init__(message)
        self.column_role = column_role


@dataclass
class ReportData:
    """Train and test rows of a labelled multilingual table, ready for the probes.

    ``train`` and ``test`` have columns ``text, label, language`` (and ``id`` when an id column
    was given); ``split_note`` says in words how they were split.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    languages: list[Any]
    source_language: Any
    split_note: str


def prepare_data(
    data: pd.DataFrame,
    *,
    text_column: str = "text",
    label_column: str = "category",
    language_column: str = "language",
    split_column: str | None = "split",
    id_column: str | None = None,
    source_language: Any = None,
    test_fraction: float = 1 / 3,
    random_state: int = 0,
) -> ReportData:
    """Check the columns and split the rows into train and test.

    With ``split_column`` the rows marked ``train`` / ``test`` (case-insensitive) are used;
    rows marked ``dev`` or ``validation`` are left out (the split note says how many), and any
    other value is an error naming it (a typo would otherwise drop rows silently).

    ``id_column`` is the id a sentence shares with its translations (e.g. SIB-200's
    ``index_id``; kept as column ``id``): it pairs translations for the report's bitext
    retrieval. Without a split column, ``test_fraction`` of the rows is held out, stratified by
    label: with ``id_column`` by id, so a held-out sentence is held out in every language and no
    test row translates a training row; without it each language holds out the same positions
    with the same seed, which keeps translations together only when every language lists its
    sentences in the same order.

    Raises
    ------
    DataError
        Naming the column (and the row, or the value) that is wrong: a missing column, a
        missing label or language, labels of several kinds (``3`` and ``"3"``), an unknown
        split value, a test label that no training row has, a language without train or test
        rows or with a single training label, a repeated id.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if isinstance(test_fraction, (bool, np.bool_)) or not (
            isinstance(test_fraction, numbers.Real) and 0 < test_fraction < 1):
        raise DataError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    needed = {"text": text_column, "label": label_column, "language": language_column}
    if split_column is not None:
        needed["split"] = split_column
    if id_column is not None:
        needed["id"] = id_column
    for role, name in needed.items():
        if name not in data.columns:
            raise DataError(f"{role} column {name!r} not found; columns: "
                            f"{', '.join(map(str, data.columns))}", column_role=role)
    df = pd.DataFrame({
        "text": _texts(data[text_column], text_column),
        "label": data[label_column].to_numpy(),
        "language": data[language_column].to_numpy(),
    })
    for role in ("label", "language"):
        _check_present(df[role], role, needed[role], data.index)
    try:
        check_label_types(df["label"], f"the labels (column {label_column!r})")
    except TypeError as exc:
        raise DataError(str(exc)) from None
    if id_column is not None:
        df["id"] = data[id_column].to_numpy()
        if df["id"].isna().any():
            first = row_label(data.index, int(df["id"].isna().to_numpy().argmax()))
            raise DataError(f"missing id at {first} of column {id_column!r}")
        repeated = df[df.duplicated(["language", "id"])]
        if len(repeated):
            first = repeated.iloc[0]
            raise DataError(f"id {first['id']} repeats within language {first['language']!r} "
                            f"(column {id_column!r}): ids must name one sentence per language")
    languages = list(pd.unique(df["language"]))
    if not languages:
        raise DataError("no rows")
    if split_column is not None:
        train, test, note = _own_split(df, data[split_column], split_column, data.index)
        if id_column is not None:
            _warn_split_ids(train, test, split_column, id_column)
    elif id_column is not None:
        is_test = _holdout_ids(df, df["id"].to_numpy(), test_fraction, random_state)
        train, test = df[~is_test], df[is_test]
        note = (f"a seeded ({random_state}) stratified hold-out of {test_fraction:.0%} of the "
                f"sentence ids (column {id_column!r}): the same sentences in every language")
    else:
        train_idx, test_idx = _holdout(df, test_fraction, random_state)
        train, test = df.loc[train_idx], df.loc[test_idx]
        note = (f"a seeded ({random_state}) stratified hold-out of {test_fraction:.0%} of each "
                "language's rows, by position (translations stay together only if every "
                "language lists them in the same order; give an id column otherwise)")
    _check_parts(train, test, languages, label_column)
    source = _source_language(languages, source_language)
    return ReportData(train.reset_index(drop=True), test.reset_index(drop=True), languages,
                      source, note)


def _texts(column: pd.Series, name: str) -> np.ndarray:
    from ..validation import validate_texts

    try:
        return np.asarray(validate_texts(column), dtype=object)
    except (TypeError, ValueError) as exc:
        raise DataError(f"column {name!r}: {exc}") from None


def _check_present(values: pd.Series, role: str, column: str, index: pd.Index) -> None:
    """No missing (None/NaN) or blank values: a CSV read without NA guessing gives ``""``."""
    blank = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())
    if blank.any():
        first = row_label(index, int(blank.to_numpy().argmax()))
        raise DataError(f"missing {role} at {first} of column "
                        f"{column!r}; fill or drop such rows first")


def _own_split(df: pd.DataFrame, column: pd.Series, name: str, index: pd.Index
               ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    split = column.astype(str).str.strip().str.lower().to_numpy()
    known = {"train", "test", *UNUSED_SPLITS}
    unknown = [v for v in pd.unique(split) if v not in known]
    if unknown:
        first = row_label(index, int(np.argmax(split == unknown[0])))
        counts = ", ".join(f"{v!r} ({int((split == v).sum())} rows)" for v in unknown[:5])
        raise DataError(f"column {name!r} has split value(s) other than train / test: {counts}; "
                        f"first at {first}. Fix them, or drop those rows (values "
                        f"{', '.join(UNUSED_SPLITS)} are left out on purpose)")
    note = f"the data's own split (column {name!r})"
    unused = ~np.isin(split, ["train", "test"])
    if unused.any():
        values = ", ".join(sorted(set(split[unused])))
        note += f"; {int(unused.sum()):,} rows marked {values} not used"
    return df[split == "train"], df[split == "test"], note


def _warn_split_ids(train: pd.DataFrame, test: pd.DataFrame, split: str, ids: str) -> None:
    """The data's own split puts a sentence id in train and test: a test row then translates a
    training row, and transfer scores are inflated (the id hold-out never does this)."""
    both = pd.unique(test["id"][test["id"].isin(set(train["id"]))]).tolist()  # Python scalars
    if len(both):
        warnings.warn(
            f"{len(both):,} id(s) of column {ids!r} (first: {both[0]!r}) have training and test "
            f"rows in column {split!r}: those test rows translate training rows, which inflates "
            "cross-lingual scores; give each id one split in every language, or drop the split "
            "column for an id hold-out", UserWarning, stacklevel=external_stacklevel())


def _check_parts(train: pd.DataFrame, test: pd.DataFrame, languages: list[Any],
                 label_column: str) -> None:
    for lang in languages:
        for name, part in (("train", train), ("test", test)):
            if not (part["language"] == lang).any():
                raise DataError(f"language {lang!r} has no {name} rows")
    if train["label"].nunique() < 2:
        raise DataError("the probe needs at least two labels")
    unseen = test[~test["label"].isin(set(train["label"]))]
    if len(unseen):
        labels = pd.unique(unseen["label"]).tolist()
        raise DataError(
            f"test label(s) {', '.join(map(repr, labels))} (column {label_column!r}, "
            f"{len(unseen)} test rows, first in language {unseen['language'].iloc[0]!r}) never "
            "appear in the training rows: no probe can predict them. Fix or drop those rows")
    for lang, labels in train.groupby("language", sort=False)["label"]:
        if labels.nunique() < 2:  # its in-language probe could not be fitted
            raise DataError(
                f"language {lang!r} has a single label ({labels.iloc[0]!r}) in its {len(labels)} "
                "training row(s); a probe needs at least two")


def _holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train_parts, test_parts = [], []
    for lang in pd.unique(df["language"]):
        idx = np.flatnonzero((df["language"] == lang).to_numpy())
        if len(idx) < 2:
            raise DataError(f"language {lang!r} has {len(idx)} row(s); at least 2 are needed")
        labels = df["label"].to_numpy()[idx]
        counts = pd.Series(labels).value_counts()
        n_test = max(1, int(round(fraction * len(idx))))
        stratify = labels if counts.min() >= 2 and n_test >= len(counts) else None
        tr, te = train_test_split(idx, test_size=n_test, stratify=stratify, random_state=seed)
        train_parts.append(np.sort(tr))
        test_parts.append(np.sort(te))
    return np.concatenate(train_parts), np.concatenate(test_parts)


def _holdout_ids(df: pd.DataFrame, ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows whose id is held out: a seeded share of the distinct ids, stratified by each id's
    most frequent label."""
    from sklearn.model_selection import train_test_split

    per_id = pd.DataFrame({"id": ids, "label": df["label"].to_numpy()})
    label_of = per_id.groupby("id", sort=True)["label"].agg(lambda v: v.value_counts().index[0])
    if len(label_of) < 2:
        raise DataError(f"the id column has {len(label_of)} distinct id(s); at least 2 are needed")
    n_test = max(1, int(round(fraction * len(label_of))))
    counts = label_of.value_counts()
    stratify = label_of.to_numpy() if counts.min() >= 2 and n_test >= len(counts) else None
    _, test_ids = train_test_split(label_of.index.to_numpy(), test_size=n_test,
                                   stratify=stratify, random_state=seed)
    return np.isin(ids, test_ids)


def _source_language(languages: list[Any], wanted: Any) -> Any:
    if wanted is not None:
        if wanted not in languages:
            raise DataError(f"source language {wanted!r} is not in the data; it has {languages}")
        return wanted
    for code in ENGLISH:
        if code in languages:
            return code
    return languages[0]
