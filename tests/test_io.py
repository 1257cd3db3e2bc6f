"""The input readers (skmoe.io) on files users have: long cells, archives, line endings, blank
lines, UTF-16, damaged archives. Each case changed or lost texts silently, or failed with a
message that named the wrong cause (audit of 2026-12-04)."""

from __future__ import annotations

import gzip
import warnings
import zipfile

import pandas as pd
import pytest

from skmoe.io import InputError, read_texts

LONG = "word " * 30_000  # 150,000 characters: over the csv module's default field limit


def _quiet(path, column=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_texts(path, column)


@pytest.mark.parametrize("name, sep", [("t.csv", ","), ("t.tsv", "\t")])
def test_cells_longer_than_the_csv_modules_limit_read_as_pandas_reads_them(tmp_path, name, sep):
    """The strict quote pass stopped at a 131,072-character cell: a CSV was refused ("text
    follows a closing quote") and a quoted TSV read without quoting, its quotes doubled)."""
    texts = [LONG, 'He said "hi"', "tab\tinside", "plain"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / name, sep=sep, index=False)
    assert _quiet(tmp_path / name) == texts


def test_zip_and_crlf_tables_and_bare_cr_text_files(tmp_path):
    """.csv.zip was refused by the quote pass ("read as tables only"); a .txt with bare CR line
    ends was one text (the .csv of the same lines gave three)."""
    with zipfile.ZipFile(tmp_path / "t.csv.zip", "w") as archive:
        archive.writestr("t.csv", "text\r\nhello\r\n\"a, b\"\r\n")
    assert _quiet(tmp_path / "t.csv.zip") == ["hello", "a, b"]
    (tmp_path / "cr.txt").write_bytes(b"one\rtwo\r\nthree\nfour\r")
    assert _quiet(tmp_path / "cr.txt") == ["one", "two", "three", "four"]
    (tmp_path / "bom.txt").write_bytes("\ufeffun\ndeux\n".encode())
    assert _quiet(tmp_path / "bom.txt") == ["un", "deux"]
    (tmp_path / "bom.jsonl").write_bytes('\ufeff{"text": "a"}\n{"text": "b"}\n'.encode())
    assert _quiet(tmp_path / "bom.jsonl") == ["a", "b"]  # was: "Expected object or value"


def test_blank_lines_of_a_table_are_said_not_dropped_silently(tmp_path):
    (tmp_path / "b.csv").write_text("text,id\nfirst,1\n\nthird,3\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"1 blank line\(s\) skipped \(first: line 3\); rows are "
                      "the non-blank lines"):
        assert read_texts(tmp_path / "b.csv") == ["first", "third"]


def test_utf16_and_damaged_archives_are_named(tmp_path):
    """UTF-16 without a byte-order mark read as UTF-8 texts full of NULs; a damaged .gz was an
    unnamed error (exit 1) and a truncated one an 'internal error'."""
    (tmp_path / "u16.txt").write_bytes("hello\nworld\n".encode("utf-16-le"))
    with pytest.raises(InputError, match="u16.txt: line 1 holds a NUL character: a UTF-16"):
        read_texts(tmp_path / "u16.txt")
    (tmp_path / "bom16.txt").write_bytes("hello\n".encode("utf-16"))
    with pytest.raises(InputError, match="not valid UTF-8 .*: a UTF-16 file"):
        read_texts(tmp_path / "bom16.txt")
    pd.DataFrame({"text": ["a\x00b"]}).to_csv(tmp_path / "nul.csv", index=False)
    with pytest.raises(InputError, match="nul.csv: row 0 holds a NUL character"):
        read_texts(tmp_path / "nul.csv")
    # in Parquet and JSON Lines a NUL is the cell's own, not a sign of UTF-16 (the API takes
    # it): it was refused as "a UTF-16 or binary file?" (audit)
    pd.DataFrame({"text": ["a\x00b", "c"]}).to_parquet(tmp_path / "nul.parquet")
    pd.DataFrame({"text": ["a\x00b", "c"]}).to_json(tmp_path / "nul.jsonl", orient="records",
                                                    lines=True)
    for name in ("nul.parquet", "nul.jsonl"):
        assert read_texts(tmp_path / name) == ["a\x00b", "c"]
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(b"one\ntwo\n" * 100)[:-20])
    (tmp_path / "bad.csv.zip").write_bytes(b"not a zip")
    for name in ("bad.txt.gz", "cut.txt.gz", "bad.csv.zip"):
        with pytest.raises(InputError, match=f"cannot read .*{name}: .*damaged or truncated"):
            read_texts(tmp_path / name)
