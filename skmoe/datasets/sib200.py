"""SIB-200 topic classification: the bundled sample and a loader for local copies.

Every SIB-200 language holds the same sentences (FLORES-200 translations) with the same
``index_id`` and ``category`` in the same row order, so the frames returned here double as a
sentence-aligned parallel corpus (join on ``index_id``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import IO

import pandas as pd

SPLITS = ("train", "dev", "test")
COLUMNS = ["language", "split", "index_id", "category", "text"]
SAMPLE_FILE = "sib200_sample.tsv"


def _read_tsv(path: Path | str | IO[bytes]) -> pd.DataFrame:
    # The files were written by pandas with minimal quoting: a few texts are wrapped in double
    # quotes, so a real CSV parser is needed (splitting on tabs would keep the quotes).
    # keep_default_na=False: a text such as "NA" stays a string.
    return pd.read_csv(path, sep="\t", dtype={"index_id": "int64", "category": str, "text": str},
                       keep_default_na=False, encoding="utf-8")


def as_str_list(value: str | Iterable[str] | None, name: str) -> list[str] | None:
    """``value`` as a list of strings (None stays None: "all"); an empty one is refused, as it
    would select no rows."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    out = list(value)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{name} must be a string or a list of strings, got {value!r}")
    if not out:
        raise ValueError(f"{name} is empty, which selects no rows; pass None for all of them")
    return out


def load_sib200(
    path: str | os.PathLike[str],
    languages: str | Iterable[str] | None = None,
    splits: str | Iterable[str] | None = ("train", "test"),
) -> pd.DataFrame:
    """Load SIB-200 from a local folder with one sub-folder per language.

    Parameters
    ----------
    path : path
        Folder holding ``<lang>/train.tsv``, ``<lang>/dev.tsv``, ``<lang>/test.tsv`` (the layout
        of ``data/annotated/`` in the SIB-200 repository).
    languages : str or list of str, optional
        FLORES-200 codes such as ``"eng_Latn"``; default: every language folder found.
    splits : str or list of str, optional
        Any of ``"train"``, ``"dev"``, ``"test"``; None: all three.

    Returns
    -------
    pandas.DataFrame
        Columns ``language, split, index_id, category, text``; rows in file order, languages in
        the order asked for (sorted when not given).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"SIB-200 folder not found: {root}")
    split_list = as_str_list(splits, "splits") or list(SPLITS)
    bad = sorted(set(split_list) - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split(s) {bad}; choose from {list(SPLITS)}")
    langs = as_str_list(languages, "languages")
    if langs is None:
        langs = sorted(p.name for p in root.iterdir() if (p / "train.tsv").is_file())
        if not langs:
            raise FileNotFoundError(f"no <language>/train.tsv folders under {root}")
    missing = [lang for lang in langs if not (root / lang).is_dir()]
    if missing:
        raise FileNotFoundError(f"language folder(s) {missing} not found under {root}")
    frames = []
    for lang in langs:
        for split in split_list:
            df = _read_tsv(root / lang / f"{split}.tsv")
            df.insert(0, "split", split)
            df.insert(0, "language", lang)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def load_sib200_sample(
    languages: str | Iterable[str] | None = None,
    splits: str | Iterable[str] | None = ("train", "test"),
) -> pd.DataFrame:
    """The small SIB-200 sample shipped inside skmoe (8 languages, works offline).

    Per language: 16 training rows per topic (112) and 8 test rows per topic (56), the same
    ``index_id`` s in every language. Data: SIB-200 (Adelani et al., EACL 2024; Apache-2.0)
    on FLORES-200 sentences (Meta AI; CC BY-SA 4.0) - see ``skmoe/datasets/data/README.md``.

    Parameters
    ----------
    languages : str or list of str, optional
        Subset of ``eng_Latn fra_Latn deu_Latn spa_Latn rus_Cyrl zho_Hans arb_Arab hin_Deva``.
    splits : str or list of str, optional
        ``"train"`` and/or ``"test"``; None: both.

    Returns
    -------
    pandas.DataFrame
        Columns ``language, split, index_id, category, text``.
    """
    with resources.files("skmoe.datasets").joinpath("data", SAMPLE_FILE).open("rb") as fh:
        df = _read_tsv(fh)
    split_list = as_str_list(splits, "splits") or list(pd.unique(df["split"]))
    bad = sorted(set(split_list) - set(df["split"]))
    if bad:
        raise ValueError(f"the sample has no split(s) {bad}; it has {sorted(set(df['split']))}")
    langs = as_str_list(languages, "languages")
    if langs is not None:
        unknown = sorted(set(langs) - set(df["language"]))
        if unknown:
            raise ValueError(
                f"the sample has no language(s) {unknown}; it has {sorted(set(df['language']))}"
            )
        df = df[df["language"].isin(langs)]
    df = df[df["split"].isin(split_list)]
    return df.reset_index(drop=True)[COLUMNS]
