"""How a text and a vector become a cache row and back: the text's key, the vector's blob
format, reading rows in chunks, and the checks before storing.

:mod:`skmoe.cache` holds the object and its namespaces; :mod:`skmoe._cache_db` the file's layout.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# Hashes per ``IN (...)`` lookup and rows per write transaction: keeps statements small (SQLite's
# variable limit) and memory proportional to one chunk, and makes long writes commit progressively.
LOOKUP_CHUNK = 500
WRITE_CHUNK = 500
VECTOR_DTYPE = np.dtype("<f4")  # explicit little-endian: files move between machines


def text_hash(text: str) -> bytes:
    """The key of ``text``: its sha256 digest (texts are never stored in clear)."""
    if not isinstance(text, str):
        raise TypeError(f"texts must be str, got {type(text).__name__}")
    # 'surrogatepass': a lone surrogate still gets a stable, distinct key instead of crashing.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def chunks(seq: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def checksum(blob: bytes) -> int:
    """The CRC-32 stored beside a vector (schema version 4)."""
    return zlib.crc32(blob)


def blob_intact(blob: object, stored: int | None, nbytes: int) -> bool:
    """A stored vector's bytes: the right size, and its checksum matches (when it has one)."""
    return (isinstance(blob, bytes) and len(blob) == nbytes
            and (stored is None or checksum(blob) == stored))


def row_is_sound(blob: object, stored: int | None, nbytes: int, vector_dtype: np.dtype) -> bool:
    """A stored vector whose bytes are intact (:func:`blob_intact`) and values finite."""
    return blob_intact(blob, stored, nbytes) and bool(
        np.isfinite(np.frombuffer(blob, vector_dtype)).all())


def read_rows(conn: sqlite3.Connection, row: tuple[int, int], hashes: list[bytes],
              full: np.ndarray, found: np.ndarray, cut: np.ndarray, *,
              has_cut: bool, has_crc: bool = False) -> list[bytes]:
    """Fill ``full``/``found``/``cut`` from the namespace ``row`` (id, width) of the file.

    Returns the hashes of the damaged rows (wrong size, checksum mismatch, NaN or inf), which
    stay misses.
    """
    positions: dict[bytes, list[int]] = {}
    for i, h in enumerate(hashes):
        positions.setdefault(h, []).append(i)
    # Rows land in a full-size array as they arrive (a chunk's blobs at a time), not in a
    # dict of every blob joined and converted afterwards (three copies of a large result).
    width = row[1]
    nbytes = width * VECTOR_DTYPE.itemsize
    column = "cut" if has_cut else "NULL"
    crc = "crc" if has_crc else "NULL"
    damaged: list[bytes] = []
    for chunk in chunks(list(positions), LOOKUP_CHUNK):
        marks = ",".join("?" * len(chunk))
        query = (f"SELECT text_hash, vector, {column}, {crc} FROM embeddings "
                 f"WHERE ns_id = ? AND text_hash IN ({marks})")
        rows_at: list[int] = []
        blobs: list[bytes] = []
        for key, blob, was_cut, stored in conn.execute(query, (row[0], *chunk)):
            if not blob_intact(blob, stored, nbytes):  # finiteness: per chunk, below
                damaged.append(key)
                continue
            for i in positions[key]:
                rows_at.append(i)
                blobs.append(blob)
                cut[i] = -1 if was_cut is None else was_cut
        if rows_at:  # one conversion per chunk of a few hundred rows
            block = np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(-1, width)
            full[rows_at] = block
            good = np.isfinite(block).all(axis=1)
            at = np.asarray(rows_at)
            found[at[good]] = True
            if not good.all():
                cut[at[~good]] = -1
                damaged += [hashes[i] for i in at[~good]]
    return damaged


def rows_to_store(vectors: Any, n: int, cut: Sequence[bool | None] | np.ndarray | None
                  ) -> tuple[np.ndarray, list[int | None]]:
    """``vectors`` as the stored float32 ``[n, dim]`` array, checked, and the ``cut`` flags
    (1/0, None for unknown: all of them when ``cut`` is None, or per row)."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] != n:
        raise ValueError(f"vectors must have shape ({n}, dim), got {array.shape}")
    if array.shape[1] == 0:
        raise ValueError("vectors must have at least one column")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"vectors must be floating point, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=VECTOR_DTYPE)
    if not np.isfinite(array).all():
        raise ValueError("refusing to cache non-finite vectors (NaN/inf)")
    if cut is not None and len(cut) != n:
        raise ValueError(f"cut must have {n} entries, got {len(cut)}")
    return array, [None] * n if cut is None else [None if c is None else int(bool(c)) for c in cut]
