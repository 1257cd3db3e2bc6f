"""STS 2017 (SemEval-2017 Task 1) multilingual and cross-lingual test sets from local files."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .sib200 import as_str_list

# Languages of (sentence1, sentence2) per track, from the text itself: the file names do not
# follow the column order (ar-en, 4b and tr-en have English first, 4a has Spanish first).
STS17_TRACKS: dict[str, tuple[str, str]] = {
    "track1.ar-ar": ("ar", "ar"),
    "track2.ar-en": ("en", "ar"),
    "track3.es-es": ("es", "es"),
    "track4a.es-en": ("es", "en"),
    "track4b.es-en": ("en", "es"),
    "track5.en-en": ("en", "en"),
    "track6.tr-en": ("en", "tr"),
}
COLUMNS = ["track", "language1", "language2", "sentence1", "sentence2", "score"]


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    # Plain "s1<TAB>s2" lines, not CSV: quote characters are part of the text (QUOTE_NONE).
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    for i, row in enumerate(rows, 1):
        if len(row) != 2:
            raise ValueError(f"{path}:{i}: expected 2 tab-separated fields, got {len(row)}")
    return [(a, b) for a, b in rows]


def _read_scores(path: Path) -> list[float]:
    return [float(line) for line in path.read_text(encoding="utf-8").split()]


def load_sts17(
    path: str | os.PathLike[str], tracks: str | Iterable[str] | None = None
) -> pd.DataFrame:
    """Load the SemEval-2017 STS test pairs with their gold scores from a local folder.

    Parameters
    ----------
    path : path
        Folder holding ``STS2017.eval.v1.1/STS.input.<track>.txt`` and
        ``STS2017.gs/STS.gs.<track>.txt`` (the two official zips, unzipped).
    tracks : str or list of str, optional
        Track names such as ``"track5.en-en"`` (see ``STS17_TRACKS``); default: all seven.

    Returns
    -------
    pandas.DataFrame
        Columns ``track, language1, language2, sentence1, sentence2, score`` (gold 0-5).
        ``language1``/``language2`` give the real language of each column, which for some
        tracks is not the order in the file name.

    Notes
    -----
    ``track6.tr-en`` has 500 input pairs but only 250 gold scores and the release does not say
    which pairs they belong to; a word-overlap check points to the first 250 lines, so only
    those are returned. Treat track 6 results as provisional.
    """
    root = Path(path)
    wanted = as_str_list(tracks, "tracks") or list(STS17_TRACKS)
    unknown = sorted(set(wanted) - set(STS17_TRACKS))
    if unknown:
        raise ValueError(f"unknown STS17 track(s) {unknown}; known: {list(STS17_TRACKS)}")
    frames = []
    for track in wanted:
        inp = root / "STS2017.eval.v1.1" / f"STS.input.{track}.txt"
        gold = root / "STS2017.gs" / f"STS.gs.{track}.txt"
        for f in (inp, gold):
            if not f.is_file():
                raise FileNotFoundError(f"STS17 file not found: {f}")
        pairs, scores = _read_pairs(inp), _read_scores(gold)
        if len(scores) > len(pairs):
            raise ValueError(f"{track}: {len(scores)} gold scores but only {len(pairs)} pairs")
        # Gold covers the first len(scores) pairs (all of them except in track 6).
        pairs = pairs[: len(scores)]
        lang1, lang2 = STS17_TRACKS[track]
        frames.append(pd.DataFrame({
            "track": track, "language1": lang1, "language2": lang2,
            "sentence1": [a for a, _ in pairs], "sentence2": [b for _, b in pairs],
            "score": scores,
        }))
    return pd.concat(frames, ignore_index=True)[COLUMNS]
