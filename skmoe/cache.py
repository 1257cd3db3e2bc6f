"""Persistent embedding cache: (namespace fingerprint, sha256(text)) -> full-width float32 vector.

The cache is one SQLite file in WAL mode, safe to share between threads, processes (joblib, Dask
workers on one host) and runs. The object holds only its path: connections are opened lazily, one
per thread and process, and are never pickled, so the cache can travel inside a pickled estimator.

The *namespace* is a fingerprint of everything that determines a vector (model revision, weights
digest, prompt, max_length, pooling, compute dtype, device type, cache-format version); build it
with :func:`embedding_namespace` (the recipe every caller shares) or :func:`cache_namespace`
(both live in :mod:`skmoe._cache_namespace`).
Texts are stored only as their sha256 digest, never in clear.

WAL needs a local file system (shared memory for the WAL index); do not put the file on NFS.

A cache problem never costs the caller's results: a damaged, read-only or full file, or a path
that is a folder, gives one :class:`CacheUnavailableWarning` (file, problem, fix) and the work goes
on without reading or writing it (see :mod:`skmoe._cache_file`); damaged rows are misses. The
table layout and its migrations live in :mod:`skmoe._cache_db`; how a text and a vector become a
row and back (key, blob format, chunked reads, checks before storing) in :mod:`skmoe._cache_rows`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from ._cache_db import CacheFormatError, check_file
from ._cache_file import CacheFile, CacheUnavailableWarning
from ._cache_namespace import (  # the namespace recipe, re-exported
    CACHE_FORMAT_VERSION,
    cache_namespace,
    embedding_namespace,
    json_default,
)
from ._cache_rows import VECTOR_DTYPE as _VECTOR_DTYPE
from ._cache_rows import WRITE_CHUNK as _WRITE_CHUNK
from ._cache_rows import checksum, read_rows, rows_to_store
from ._cache_rows import text_hash as _text_hash

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheDimensionError",
    "CacheFormatError",
    "CacheStats",
    "CacheUnavailableWarning",
    "EmbeddingCache",
    "cache_namespace",
    "embedding_namespace",
    "resolve_cache",
]

class CacheDimensionError(ValueError):
    """A vector's width does not match the width recorded for its namespace."""


@dataclass(frozen=True)
class CacheStats:
    """Size of the cache file and this object's hit/miss counts.

    Attributes
    ----------
    path : str
        The SQLite file.
    entries : int
        Stored vectors, all namespaces.
    namespaces : int
        Distinct namespaces.
    bytes : int
        Size on disk of the database file plus its write-ahead log.
    hits, misses : int
        Looked-up texts found / not found by this object in this process since it was created
        (duplicates within one lookup count once per position).
    stopped : str or None
        Why this object stopped reading or writing the file in this process (after its one
        :class:`CacheUnavailableWarning`), e.g. ``"reading and writing: the file is damaged
        (...)"``; None while both work.
    """

    path: str
    entries: int
    namespaces: int
    bytes: int
    hits: int
    misses: int
    stopped: str | None = None


class EmbeddingCache(CacheFile):
    """A persistent, process-safe store of embedding vectors keyed by namespace and text.

    Parameters
    ----------
    path : str or os.PathLike
        SQLite file; created (with parent folders) on first use. Stored as an absolute path so a
        pickled cache means the same file in a worker with another working directory.
    timeout : float, default=60.0
        Seconds a writer waits for another process's write transaction before failing.

    Notes
    -----
    Values are immutable: writing an existing (namespace, text) keeps the first vector
    (``INSERT OR IGNORE``). The namespace already fixes the model, so both are the same vector up
    to the engine's documented numerical tolerance. Use :meth:`clear` to drop entries.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> cache = EmbeddingCache(tempfile.mkdtemp() + "/emb.sqlite")
    >>> ns = cache_namespace(model="m", revision="abc", prompt="query: ")
    >>> cache.put_many(ns, ["a", "b"], np.ones((2, 4), dtype=np.float32))
    >>> found, vectors = cache.lookup(ns, ["a", "c"])
    >>> found.tolist(), vectors.shape
    ([True, False], (1, 4))
    """

    # -- identity -----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmbeddingCache):
            return NotImplemented
        return (self.path, self.timeout) == (other.path, other.timeout)

    def __hash__(self) -> int:
        return hash((EmbeddingCache, self.path, self.timeout))

    def __repr__(self) -> str:
        try:
            if os.path.exists(self.path):
                entries, size = len(self), self._file_bytes()
            else:  # don't create the file just to print it
                entries, size = 0, 0
            detail = f"entries={entries}, bytes={size}"
        except (sqlite3.Error, CacheFormatError, OSError) as exc:
            detail = f"unreadable: {exc}"
        return f"EmbeddingCache({self.path!r}, {detail})"

    # -- queries ------------------------------------------------------------------------------

    def _namespace_row(self, namespace: str) -> tuple[int, int] | None:
        if not isinstance(namespace, str) or not namespace:
            raise TypeError("namespace must be a non-empty str (see cache_namespace)")
        return (
            self._conn()
            .execute("SELECT id, dim FROM namespaces WHERE namespace = ?", (namespace,))
            .fetchone()
        )

    @overload  # found, vectors
    def lookup(self, namespace: str, texts: Sequence[str], *, dim: int | None = ...,
               with_cut: Literal[False] = ..., out: np.ndarray | None = ...,
               count: bool = ...) -> tuple[np.ndarray, np.ndarray]: ...
    @overload  # found, vectors, cut
    def lookup(self, namespace: str, texts: Sequence[str], *, dim: int | None = ...,
               with_cut: Literal[True], out: np.ndarray | None = ...,
               count: bool = ...) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    @overload
    def lookup(self, namespace: str, texts: Sequence[str], *, dim: int | None = ...,
               with_cut: bool, out: np.ndarray | None = ..., count: bool = ...
               ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def lookup(
        self, namespace: str, texts: Sequence[str], *, dim: int | None = None,
        with_cut: bool = False, out: np.ndarray | None = None, count: bool = True,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Find cached vectors for ``texts``.

        A file that cannot be read (damaged, not a cache, a folder, ...) gives one
        :class:`CacheUnavailableWarning` naming the file, the problem and the fix; from then on
        every text is a miss for this object. A stored row that is damaged (wrong size, NaN or
        inf, or bytes that do not match its stored CRC-32) is a miss too, and the next
        :meth:`put_many` of that text replaces it.

        Parameters
        ----------
        namespace : str
            Fingerprint from :func:`cache_namespace`.
        texts : sequence of str
            Texts in any number; queried in chunks of a few hundred.
        dim : int, optional
            Expected vector width; a namespace stored with another width raises
            :class:`CacheDimensionError`.
        with_cut : bool, default=False
            Also return whether each found text was truncated when it was embedded.
        out : ndarray of float32, shape (n_texts, dim), optional
            Write each found text's vector straight into its row (others are left alone, except
            rows read and then found damaged), and return ``out`` itself as ``vectors``: no
            second copy of a large result.
        count : bool, default=True
            Count the hits and misses in :meth:`stats` (a second look for texts already counted
            as misses passes False and settles them with :meth:`recount`).

        Returns
        -------
        found : ndarray of bool, shape (n_texts,)
            Whether each text is cached.
        vectors : ndarray of float32, shape (found.sum(), dim)
            The cached vectors of the found texts, in input order (``out[found] = vectors``);
            ``out`` itself when given. Width is ``dim`` if given, else the namespace's width
            (0 for an unknown namespace and no ``dim``).
        cut : ndarray of int8, shape (n_texts,)
            Only with ``with_cut=True``: per text, whether it was truncated when its vector was
            computed (1), was not (0), or is not known (-1: not found, or stored without the
            flag).
        """
        if not isinstance(namespace, str) or not namespace:
            raise TypeError("namespace must be a non-empty str (see cache_namespace)")
        hashes = [_text_hash(t) for t in texts]
        found = np.zeros(len(hashes), dtype=bool)
        cut = np.full(len(hashes), -1, dtype=np.int8)
        if out is not None and dim is None and out.ndim == 2:
            dim = out.shape[1]  # the width out was made for: checked against the namespace
        row = None
        if self._guarded_conn("read") is not None:
            try:
                row = self._namespace_row(namespace)
            except Exception as exc:
                self._fault("read", exc)
        if row is not None and dim is not None and row[1] != dim:
            raise CacheDimensionError(
                f"namespace {namespace[:12]}… stores {row[1]}-d vectors, {dim} expected"
            )
        width = row[1] if row is not None else (dim if dim is not None else 0)
        if out is not None and out.shape != (len(hashes), width):
            raise ValueError(f"out has shape {out.shape}, expected {(len(hashes), width)}")
        full = out if out is not None else np.empty((len(hashes), width), dtype=np.float32)
        if row is not None and hashes:
            try:
                layout = self._file_layout()
                damaged = read_rows(self._conn(), row, hashes, full, found, cut,
                                    has_cut=layout.has_cut, has_crc=layout.has_crc)
                if damaged:
                    self._note_damaged(namespace, damaged, row[1])
            except Exception as exc:
                self._fault("read", exc)
                found[:] = False
                cut[:] = -1
        n_found = int(found.sum())
        if count:
            self._count(n_found, len(hashes) - n_found)
        if out is not None:
            vectors = out
        elif n_found == len(hashes):
            vectors = full
        else:
            vectors = full[found]
        return (found, vectors, cut) if with_cut else (found, vectors)

    def _note_damaged(self, namespace: str, damaged: list[bytes], width: int) -> None:
        with self._lock:
            new = {(namespace, h) for h in damaged} - self._damaged
            self._damaged |= new
        if new:
            self._warn(
                f"embedding cache {self.path}: {len(set(damaged))} stored vector(s) of namespace "
                f"{namespace[:12]}… are damaged (not {width} finite float32 values); they are "
                f"recomputed and replaced. Run `skmoe cache check {self.path}` to scan the file.")

    def recount(self, found: int) -> None:
        """``found`` texts counted as misses were found after all (under an older namespace)."""
        self._count(found, -found)

    def _count(self, hits: int, misses: int) -> None:
        with self._lock:
            self._hits += hits
            self._misses += misses

    def put_many(self, namespace: str, texts: Sequence[str], vectors: Any,
                 cut: Sequence[bool | None] | np.ndarray | None = None) -> None:
        """Store vectors, committing every few hundred rows.

        Rows committed before an interruption (even ``SIGKILL``) stay in the file. A file that
        cannot be written (read-only, full disk, damaged) gives one
        :class:`CacheUnavailableWarning` naming the file, the problem and the fix, and this
        object stops writing; the caller's vectors are not affected.

        Parameters
        ----------
        namespace : str
            Fingerprint from :func:`cache_namespace`.
        texts : sequence of str
            One text per row of ``vectors``; existing entries are kept as they are (except
            damaged ones found by :meth:`lookup`, which are replaced).
        vectors : array-like of shape (n_texts, dim)
            Full-width embeddings; stored as float32 and must be finite.
        cut : sequence or ndarray of bool, optional
            Whether each text was truncated to the token limit when embedded (stored, so that
            :meth:`lookup` can report it); unknown when omitted, or for a row given None.
        """
        if not isinstance(namespace, str) or not namespace:
            raise TypeError("namespace must be a non-empty str (see cache_namespace)")
        hashes = [_text_hash(t) for t in texts]
        array, flags = rows_to_store(vectors, len(hashes), cut)
        if not hashes or self._guarded_conn("write") is None:
            return
        dim = array.shape[1]
        # Files that could not gain the ``cut`` or ``crc`` column (read at an older version) go
        # without them.
        layout = self._file_layout()
        names = ["ns_id", "text_hash", "vector"] + ["cut"] * layout.has_cut + ["crc"] * layout.has_crc
        insert = (f"INSERT OR IGNORE INTO embeddings ({', '.join(names)}) "
                  f"VALUES ({', '.join('?' * len(names))})")
        for start in range(0, len(hashes), _WRITE_CHUNK):
            stop = start + _WRITE_CHUNK
            part = hashes[start:stop]
            replace = [h for h in part if (namespace, h) in self._damaged]

            def work(conn: sqlite3.Connection, part: list[bytes] = part,
                     replace: list[bytes] = replace, start: int = start, stop: int = stop) -> None:
                ns_id = self._namespace_id_for_write(conn, namespace, dim)
                conn.executemany("DELETE FROM embeddings WHERE ns_id = ? AND text_hash = ?",
                                 ((ns_id, h) for h in replace))
                conn.executemany(insert, (
                    _row(ns_id, h, row.tobytes(), c, layout)
                    for h, row, c in zip(part, array[start:stop], flags[start:stop], strict=True)
                ))

            self._write(work)
            if self._write_fault is not None:
                return
            if replace:
                with self._lock:
                    self._damaged -= {(namespace, h) for h in replace}

    def _namespace_id_for_write(self, conn: sqlite3.Connection, namespace: str, dim: int) -> int:
        conn.execute(
            "INSERT OR IGNORE INTO namespaces (namespace, dim) VALUES (?, ?)", (namespace, dim)
        )
        ns_id, stored_dim = conn.execute(
            "SELECT id, dim FROM namespaces WHERE namespace = ?", (namespace,)
        ).fetchone()
        if stored_dim != dim:
            raise CacheDimensionError(
                f"namespace {namespace[:12]}… stores {stored_dim}-d vectors, got {dim}-d"
            )
        return ns_id

    def clear(self, namespace: str | None = None) -> int:
        """Delete the entries of one namespace, or all entries.

        The file does not shrink until :meth:`vacuum`. Unlike :meth:`lookup` and
        :meth:`put_many`, a fault raises (see :meth:`remove` for a damaged file).

        Returns
        -------
        int
            Number of vectors deleted.
        """
        conn = self._conn()
        has_labels = self._file_layout().has_labels
        conn.execute("BEGIN IMMEDIATE")
        try:
            if namespace is None:
                deleted = conn.execute("DELETE FROM embeddings").rowcount
                conn.execute("DELETE FROM namespaces")
                if has_labels:
                    conn.execute("DELETE FROM namespace_labels")
            else:
                row = conn.execute(
                    "SELECT id FROM namespaces WHERE namespace = ?", (namespace,)
                ).fetchone()
                deleted = 0
                if row is not None:
                    deleted = conn.execute(
                        "DELETE FROM embeddings WHERE ns_id = ?", (row[0],)
                    ).rowcount
                    conn.execute("DELETE FROM namespaces WHERE id = ?", (row[0],))
                if has_labels:
                    conn.execute("DELETE FROM namespace_labels WHERE namespace = ?", (namespace,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        with self._lock:
            self._damaged = {d for d in self._damaged if namespace not in (None, d[0])}
        return deleted

    def remove(self) -> None:
        """Delete the cache file (and its write-ahead log), e.g. when it is damaged beyond use.

        Closes this process's connections first; other processes should not be using it.
        """
        self.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(self.path + suffix)
            except FileNotFoundError:
                pass
        self._reset_process_state()

    def vacuum(self) -> None:
        """Return free pages to the file system and truncate the write-ahead log."""
        conn = self._conn()
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def describe(self, namespace: str, **labels: Any) -> None:
        """Attach human-readable labels (model name, prompt, ...) to ``namespace``.

        The namespace itself is a hash; the labels are what ``skmoe cache stats`` shows so that a
        user can tell the namespaces apart. They are information only (never part of a key); the
        latest description wins. A write fault warns once and stops writing, as in
        :meth:`put_many`.
        """
        text = json.dumps(labels, sort_keys=True, ensure_ascii=False, default=json_default)
        if self._guarded_conn("write") is None or not self._file_layout().has_labels:
            return
        self._write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO namespace_labels VALUES (?, ?)", (namespace, text)))

    def labels(self) -> dict[str, dict[str, Any]]:
        """The labels given by :meth:`describe` for each stored namespace that has them."""
        conn = self._conn()
        if not self._file_layout().has_labels:
            return {}
        rows = conn.execute("SELECT l.namespace, l.labels FROM namespace_labels l "
                            "JOIN namespaces n ON n.namespace = l.namespace").fetchall()
        return {name: json.loads(text) for name, text in rows}

    def namespaces(self) -> dict[str, tuple[int, int]]:
        """Map each stored namespace to ``(dim, entries)``."""
        rows = (
            self._conn()
            .execute(
                "SELECT n.namespace, n.dim, count(e.ns_id) FROM namespaces n "
                "LEFT JOIN embeddings e ON e.ns_id = n.id GROUP BY n.id"
            )
            .fetchall()
        )
        return {name: (dim, count) for name, dim, count in rows}

    def __len__(self) -> int:
        return self._conn().execute("SELECT count(*) FROM embeddings").fetchone()[0]

    def _file_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                   if os.path.isfile(p))

    def stats(self) -> CacheStats:
        """Entries, namespaces, bytes on disk (database + WAL) and this object's hits/misses.

        On a file that cannot be read, warns once (as :meth:`lookup` does) and reports 0
        entries and namespaces: the counters stay usable while the work goes on uncached.
        """
        entries = n_namespaces = 0
        conn = self._guarded_conn("read")
        if conn is not None:
            try:
                entries = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
                n_namespaces = conn.execute("SELECT count(*) FROM namespaces").fetchone()[0]
            except Exception as exc:
                self._fault("read", exc)
        with self._lock:
            hits, misses = self._hits, self._misses
            read, write = self._read_fault, self._write_fault
        if read is not None and read == write:
            stopped: str | None = f"reading and writing: {read}"
        else:
            sides = [f"{side}: {why}" for side, why in (("reading", read), ("writing", write))
                     if why is not None]
            stopped = "; ".join(sides) or None
        return CacheStats(
            path=self.path,
            entries=entries,
            namespaces=n_namespaces,
            bytes=self._file_bytes(),
            hits=hits,
            misses=misses,
            stopped=stopped,
        )

    def integrity_check(self) -> str:
        """Run SQLite's ``PRAGMA integrity_check``; ``"ok"`` when the file is sound."""
        rows = self._conn().execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)

    def check(self) -> list[str]:
        """Scan the file without changing it; the problems found (empty when it is sound).

        Opens its own read-only connection (no migration), runs SQLite's integrity check and
        reads every stored vector, counting those of the wrong size, not finite or not matching
        their checksum.
        """
        return check_file(self.path, self.timeout, _VECTOR_DTYPE)


def resolve_cache(cache: EmbeddingCache | str | os.PathLike | None) -> EmbeddingCache | None:
    """Turn an estimator's ``cache`` parameter (None, a path or a cache) into a cache or None."""
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return EmbeddingCache(cache)
    raise TypeError(f"cache must be None, a path or an EmbeddingCache, got {type(cache).__name__}")


def _row(ns_id: int, key: bytes, blob: bytes, cut: int | None, layout: Any) -> tuple:
    """One ``INSERT`` row with the columns the file has (``cut`` and ``crc`` are optional)."""
    return ((ns_id, key, blob) + ((cut,) if layout.has_cut else ())
            + ((checksum(blob),) if layout.has_crc else ()))
