"""Reading users' files: texts one per line, tables (CSV, TSV, Parquet, JSON lines), a column.

Every problem is an :class:`InputError` whose message names the file (and the column or row);
the command line prints it as one line. Empty texts are kept (rows must match the input) but
warned about, naming the first line or row.
"""

from __future__ import annotations

import csv
import io
import lzma
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
    """One text per line (UTF-8, plain or compressed); a line ends at LF, CRLF or CR (as in CSV
    files); empty lines are kept as empty texts so rows match lines."""
    try:
        with _open_text(path) as fh:
            data = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(_not_utf8(path, exc)) from None
    except _DAMAGED as exc:
        raise InputError(_damaged(path, exc)) from None
    lines = _LINE_END.split(data)
    if lines and lines[-1] == "":  # the line end that ends the last line
        lines.pop()
    _refuse_nul(lines, path, "line")
    return lines


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
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(_not_utf8(path, exc)) from None
    except (EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise InputError(_damaged(path, exc)) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"cannot parse {path} as {fmt.upper()}: {one_line(exc)}") from None
    except (KeyError, ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"cannot read {path} as {fmt}: {one_line(exc)}") from None
    raise InputError(f"unsupported table format {fmt!r}")


def _read_delimited(path: Path, sep: str) -> Any:
    """A CSV/TSV file, every cell a string, after one strict pass with the csv module
    (:func:`_scan`) that pandas' parser does not make:

    - a row with more fields than the header is refused with its line (pandas would take the
      first field of every row for an index, or drop the extra fields with a warning);
    - a field that opens a quote and goes on after closing it (``"Hello" she said``) would lose
      its quotes silently: a CSV file is refused with its line; a TSV file is then plain TSV (no
      quoting, as the format defines it) and read again so, with a warning;
    - blank lines, which pandas skips, are counted and warned about (rows are then the
      non-blank lines).
    """
    scan = _scan(path, sep, csv.QUOTE_MINIMAL)
    if scan.bad_quote is not None and sep == ",":
        line, reason = scan.bad_quote
        raise InputError(f"{path}: line {line}: {reason}; a quoted field must end at its closing "
                         "quote: double the quotes inside it (\"\"), or quote the whole field")
    quoting = csv.QUOTE_MINIMAL
    if scan.bad_quote is not None:
        line, reason = scan.bad_quote
        warnings.warn(f"{path}: line {line} is not CSV-quoted ({reason}): the file is read as "
                      "plain TSV, quote characters kept as text", UserWarning,
                      stacklevel=external_stacklevel())
        quoting = csv.QUOTE_NONE
        scan = _scan(path, sep, quoting)
    if scan.long_row is not None:
        raise InputError(f"{path}: {scan.long_row}; quote the fields that hold {sep!r} (or fix "
                         "the row)")
    if scan.blank_lines:
        warnings.warn(f"{path}: {scan.blank_lines:,} blank line(s) skipped (first: line "
                      f"{scan.first_blank}); rows are the non-blank lines. An empty text is "
                      '"" in a one-column file', UserWarning, stacklevel=external_stacklevel())
    frame = _read_csv(path, sep, quoting)
    if sep == "\t" and quoting != csv.QUOTE_NONE:
        _warn_quoted_breaks(frame, path)
    return frame


def _read_csv(path: Path, sep: str, quoting: int) -> Any:
    import pandas as pd

    with warnings.catch_warnings():  # a row pandas reads as too long drops fields: refuse it
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                               encoding="utf-8", index_col=False, quoting=quoting)
        except pd.errors.ParserWarning as exc:
            raise InputError(f"{path}: {one_line(exc)}") from None


@dataclass
class _Scan:
    """What one strict pass over a CSV/TSV file found (lines 1-based, as an editor shows)."""

    bad_quote: tuple[int, str] | None = None  # (line, reason): the scan stopped there
    long_row: str | None = None  # the first row with more fields than the header
    blank_lines: int = 0
    first_blank: int | None = None


def _scan(path: Path, sep: str, quoting: int) -> _Scan:
    """One pass with the csv module in strict mode (fields of any length)."""
    found = _Scan()
    with _open_text(path) as fh, _fields_of_any_length():
        reader = csv.reader(fh, delimiter=sep, quoting=quoting, strict=True)
        width = None
        try:
            for row in reader:
                if not row:
                    found.blank_lines += 1
                    found.first_blank = found.first_blank or reader.line_num
                elif width is None:
                    width = len(row)
                elif len(row) > width and found.long_row is None:
                    found.long_row = (f"line {reader.line_num} has {len(row)} fields, the header "
                                      f"{width}")
        except csv.Error as exc:
            reason = ("a quote opened here or above is never closed" if "end of data" in str(exc)
                      else "text follows a closing quote")
            found.bad_quote = (reader.line_num, reason)
    return found


@contextmanager
def _fields_of_any_length() -> Iterator[None]:
    """The csv module refuses fields over 131,072 characters (a process-wide limit): lifted
    for one pass, then put back."""
    before = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(before)


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


def _open_text(path: Path) -> Any:
    """``path`` opened as UTF-8 text (a byte-order mark dropped), through gzip, bz2, xz, zip
    (one file inside) or zstandard by its last extension."""
    import bz2
    import gzip

    suffix = path.suffix.lower()
    if suffix == ".zip":
        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise InputError(f"{path}: a .zip input must hold one file, it holds {len(names)}")
        return io.TextIOWrapper(archive.open(names[0]), encoding="utf-8-sig", newline="")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise InputError(f"{path}: reading .zst needs the zstandard package (pip install "
                             "zstandard), or decompress it") from None
        return zstandard.open(path, "rt", encoding="utf-8-sig", newline="")
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
    return opener(path, "rt", encoding="utf-8-sig", newline="")


#: What a damaged or truncated compressed file raises while it is read.
_DAMAGED = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)
_LINE_END = re.compile(r"\r\n|\r|\n")


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    utf16 = exc.object[:2] in (b"\xff\xfe", b"\xfe\xff")
    hint = ": a UTF-16 file (byte-order mark); save it as UTF-8" if utf16 else ""
    return f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}){hint}"


def _damaged(path: Path, exc: BaseException) -> str:
    return f"cannot read {path}: {one_line(exc) or type(exc).__name__} (a damaged or truncated file?)"


def _refuse_nul(texts: Sequence[str], path: Path, unit: str) -> None:
    """A NUL character in a text file: most likely UTF-16 without a byte-order mark (whose ASCII
    reads as UTF-8 with a NUL after every letter) or a binary file."""
    for i, text in enumerate(texts):
        if "\x00" in text:
            where = f"line {i + 1}" if unit == "line" else f"row {i}"
            raise InputError(f"{path}: {where} holds a NUL character: a UTF-16 or binary file? "
                             "Save it as UTF-8")


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


def column_texts(frame: Any, column: str, path: Path, fmt: str | None = None) -> list[str]:
    """A column as validated texts (errors name the file, the column and the row); empty
    texts are warned about (:func:`warn_empty`)."""
    from .validation import validate_texts

    try:
        texts = validate_texts(frame[column].reset_index(drop=True))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}, column {column!r}: {one_line(exc)}") from None
    if fmt not in ("parquet", "jsonl"):  # a NUL there is the cell's own (the API takes it)
        _refuse_nul(texts, path, "row")
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
    return read_inputs(path, column, fmt)[0]


def read_inputs(path: Path, column: str | None = None, fmt: str | None = None,
                id_column: str | None = None) -> tuple[list[str], list[Any] | None]:
    """The texts of an input file (:func:`read_texts`) and, with ``id_column``, the ids of a
    table's rows (none may be missing: a join on them would lose the row)."""
    check_readable(path)
    fmt = input_format(path, fmt)
    ids = None
    if fmt == "txt":
        for option, value in (("--column", column), ("--id-column", id_column)):
            if value is not None:
                raise InputError(f"{option} does not apply to a text file with one text per "
                                 f"line: {path}")
        texts = read_lines(path)
        warn_empty(texts, path, "line")
    else:
        frame = read_table(path, fmt)
        texts = column_texts(frame, pick_column(frame, column, path), path, fmt)
        if id_column is not None:
            ids = column_ids(frame, id_column, path)
    if not texts:
        raise InputError(f"no texts in {path}")
    return texts, ids


def column_ids(frame: Any, column: str, path: Path) -> list[Any]:
    """A table's id column as a list, refused (naming the row) where an id is missing."""
    import pandas as pd

    names = [str(c) for c in frame.columns]
    if column not in names:
        raise InputError(f"id column {column!r} not found in {path}; columns: {listing(names)}")
    values = frame[column].reset_index(drop=True)
    missing = pd.isna(values).to_numpy()
    if missing.any():
        raise InputError(f"{path}, id column {column!r}: missing id at row "
                         f"{int(missing.argmax())}")
    return values.tolist()
