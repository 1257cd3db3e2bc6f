"""Reading users' files: texts one per line, tables (CSV, TSV, Parquet, JSON lines), a column.

Every problem is an :class:`InputError` whose message names the file (and the column or row);
the command line prints it as one line. Empty texts are kept (rows must match the input) but
warned about, naming the first line or row.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._stack import external_stacklevel

INPUT_FORMATS = ("txt", "csv", "tsv", "parquet", "jsonl")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


class InputError(ValueError):
    """A user's file cannot be read as asked (missing, unreadable, bad format, no such column)."""


def one_line(exc: BaseException | str) -> str:
    """A message on one line (tracebacks and multi-line errors folded)."""
    return re.sub(r"\s+", " ", str(exc)).strip()


def listing(names: Sequence[str], limit: int = 12) -> str:
    """``a, b, c`` (the first ``limit`` names, then how many in all)."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def input_format(path: Path, explicit: str | None = None) -> str:
    """The format of an input file from ``explicit`` (``--input-format``) or its extension."""
    if explicit:
        return explicit
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    ext = {"pq": "parquet", "ndjson": "jsonl", "text": "txt"}.get(ext, ext)
    if ext not in INPUT_FORMATS:
        raise InputError(
            f"cannot tell the format of {path} from its extension; use one of "
            f"{', '.join('.' + f for f in INPUT_FORMATS)} or pass --input-format"
        )
    return ext


def check_readable(path: Path) -> None:
    """Refuse a path that is missing, a folder, or not readable."""
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a file: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"input file is not readable (permission denied): {path}")


def read_lines(path: Path) -> list[str]:
    """One text per line (UTF-8, or gzip/bz2/xz-compressed UTF-8); empty lines are kept as
    empty texts so rows match lines."""
    try:
        with _open_text(path) as fh:
            data = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if data.startswith("\ufeff"):  # a UTF-8 byte-order mark is not part of the first text
        data = data[1:]
    lines = data.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_table(path: Path, fmt: str) -> Any:
    """Read a CSV/TSV/Parquet/JSON-lines file into a DataFrame, with one-line errors.

    CSV and TSV cells stay text: no NA guessing ("NA", "null" are words), no number parsing.
    """
    import pandas as pd

    check_readable(path)
    try:
        if fmt in ("csv", "tsv"):
            return _read_delimited(path, "\t" if fmt == "tsv" else ",")
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"cannot parse {path} as {fmt.upper()}: {one_line(exc)}") from None
    except (KeyError, ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"cannot read {path} as {fmt}: {one_line(exc)}") from None
    raise InputError(f"unsupported table format {fmt!r}")


def _read_delimited(path: Path, sep: str) -> Any:
    """A CSV/TSV file, every cell a string. A row with more fields than the header is refused
    with its line (pandas would take the first field of every row for an index, or drop the
    extra fields with a warning). A field that opens a quote and goes on after closing it
    (``"Hello" she said``) would lose its quotes silently: a CSV file is refused with its line;
    a TSV file is then plain TSV (no quoting, as the format defines it) and read again so,
    with a warning."""
    import csv

    quoting = csv.QUOTE_MINIMAL
    bad = _bad_quote(path, sep)
    if bad is not None and sep == ",":
        raise InputError(f"{path}: line {bad[0]}: {bad[1]}; a quoted field must end at its "
                         "closing quote: double the quotes inside it (\"\"), or quote the whole "
                         "field")
    if bad is not None:
        warnings.warn(f"{path}: line {bad[0]} is not CSV-quoted ({bad[1]}): the file is read as "
                      "plain TSV, quote characters kept as text", UserWarning,
                      stacklevel=external_stacklevel())
        quoting = csv.QUOTE_NONE
    frame = _read_csv(path, sep, quoting)
    if sep == "\t" and quoting != csv.QUOTE_NONE:
        _warn_quoted_breaks(frame, path)
    return frame


def _read_csv(path: Path, sep: str, quoting: int) -> Any:
    import pandas as pd

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8",
                            index_col=False, quoting=quoting)
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        raise InputError(_long_row(path, sep, quoting))
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return frame


def _bad_quote(path: Path, sep: str) -> tuple[int, str] | None:
    """The first line where CSV quoting breaks (text after a closing quote, or a quote never
    closed), with the csv module's reason; None when the file parses strictly."""
    import csv

    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=sep, strict=True)
        try:
            for _ in reader:
                pass
        except csv.Error as exc:
            reason = ("a quote opened here or above is never closed" if "end of data" in str(exc)
                      else "text follows a closing quote")
            return reader.line_num, reason
    return None


def _warn_quoted_breaks(frame: Any, path: Path) -> None:
    """TSV cells are read with CSV quoting (how pandas writes them, e.g. SIB-200's files); a
    cell holding a line break got it from quotes, most often one stray quote character that
    merged the lines up to the next one: say where."""
    for column in frame.columns:
        broken = frame[column].str.contains("\n", regex=False).to_numpy()
        if broken.any():
            warnings.warn(
                f"{path}: {int(broken.sum()):,} cell(s) of column {column!r} hold a line break "
                f"inside quotes (first at row {int(broken.argmax())}); if the file is not quoted, "
                "a stray \" merged lines there: remove or escape the quote characters",
                UserWarning, stacklevel=external_stacklevel())
            return


def _long_row(path: Path, sep: str, quoting: int) -> str:
    """Name the first row with more fields than the header (read again with the csv module)."""
    import csv

    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=sep, quoting=quoting)
        width = len(next(reader, []))
        for row in reader:
            if len(row) > width:
                return (f"{path}: line {reader.line_num} has {len(row)} fields, the header "
                        f"{width}; quote the fields that hold {sep!r} (or fix the row)")
    return f"{path}: a row has more fields than the header"  # pragma: no cover


def _open_text(path: Path) -> Any:
    """``path`` opened as UTF-8 text, through gzip, bz2 or lzma by its last extension."""
    import bz2
    import gzip
    import lzma

    suffix = path.suffix.lower()
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix)
    if opener is None and suffix in _COMPRESSION:
        raise InputError(f"{path}: {suffix} files are read as tables only (csv, tsv, jsonl); "
                         "decompress it, or compress it with gzip, bz2 or xz")
    return (opener or open)(path, "rt", encoding="utf-8", newline="")


def pick_column(frame: Any, column: str | None, path: Path, option: str = "--column") -> str:
    """The text column: the one asked for, else ``text``, else the only column."""
    names = [str(c) for c in frame.columns]
    if column is not None:
        if column not in names:
            raise InputError(f"column {column!r} not found in {path}; columns: {listing(names)}")
        return column
    if "text" in names:
        return "text"
    if len(names) == 1:
        return names[0]
    raise InputError(f"{path} has several columns ({listing(names)}); choose one with {option}")


def column_texts(frame: Any, column: str, path: Path) -> list[str]:
    """A column as validated texts (errors name the file, the column and the row); empty
    texts are warned about (:func:`warn_empty`)."""
    from .validation import validate_texts

    try:
        texts = validate_texts(frame[column].reset_index(drop=True))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}, column {column!r}: {one_line(exc)}") from None
    warn_empty(texts, path, "row")
    return texts


def warn_empty(texts: Sequence[str], path: Path, unit: str = "row",
               rows: Sequence[Any] | None = None) -> None:
    """Warn when texts are empty or only spaces, naming how many and the first ``unit``
    (``"line"``: 1-based, as an editor shows it; ``"row"``: 0-based data row, or its label in
    ``rows`` when given, e.g. the row numbers a filtered table keeps)."""
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:  # kept (rows must match the input) but most likely missing data: say so
        first = blank[0] if rows is None else rows[blank[0]]
        where = f"line {blank[0] + 1}" if unit == "line" else f"row {first}"
        warnings.warn(f"{len(blank):,} empty text(s) in {path} (first at {where}) are embedded "
                      "as the empty string", UserWarning, stacklevel=external_stacklevel())


def read_texts(path: Path, column: str | None = None, fmt: str | None = None) -> list[str]:
    """The texts of an input file: lines of a .txt, or one column of a table."""
    check_readable(path)
    fmt = input_format(path, fmt)
    if fmt == "txt":
        if column is not None:
            raise InputError(f"--column does not apply to a text file with one text per line: "
                             f"{path}")
        texts = read_lines(path)
        warn_empty(texts, path, "line")
    else:
        frame = read_table(path, fmt)
        texts = column_texts(frame, pick_column(frame, column, path), path)
    if not texts:
        raise InputError(f"no texts in {path}")
    return texts
