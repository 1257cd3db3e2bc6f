"""The cache file's layout and connections: one schema, ordered migrations, and fault diagnosis.

The layout version is SQLite's ``PRAGMA user_version``. :data:`MIGRATIONS` lists, in order, the
step that brings a file to each version; opening a file runs the steps it lacks inside one write
transaction, so every process sees either the old layout or the new one. A file that cannot be
written (read-only location) is read at the version it has, through a read-only connection.

This module knows SQLite; :mod:`skmoe.cache` knows vectors and namespaces.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._cache_rows import row_is_sound

__all__ = ["SCHEMA_VERSION", "CacheFormatError", "Layout", "check_file", "diagnose",
           "open_connection", "open_readonly"]


class CacheFormatError(RuntimeError):
    """The file was written by an incompatible skmoe cache layout, or a stored row is damaged."""


def _v1_tables(conn: sqlite3.Connection) -> None:
    """Version 1: namespaces (id, fingerprint, width) and vectors keyed by (namespace, sha256)."""
    conn.execute("CREATE TABLE IF NOT EXISTS namespaces (id INTEGER PRIMARY KEY, "
                 "namespace TEXT NOT NULL UNIQUE, dim INTEGER NOT NULL)")
    conn.execute("CREATE TABLE IF NOT EXISTS embeddings (ns_id INTEGER NOT NULL, "
                 "text_hash BLOB NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (ns_id, text_hash))")


def _v2_cut_flag(conn: sqlite3.Connection) -> None:
    """Version 2: whether a text was cut to the token limit when embedded (1/0, NULL unknown).

    Files of version 1 written by skmoe releases that added the column on open already have it.
    """
    if not _has_column(conn, "embeddings", "cut"):
        conn.execute("ALTER TABLE embeddings ADD COLUMN cut INTEGER")


def _v3_labels(conn: sqlite3.Connection) -> None:
    """Version 3: human-readable labels of a namespace (what ``skmoe cache stats`` shows)."""
    conn.execute("CREATE TABLE IF NOT EXISTS namespace_labels "
                 "(namespace TEXT PRIMARY KEY, labels TEXT NOT NULL)")


def _v4_checksums(conn: sqlite3.Connection) -> None:
    """Version 4: a CRC-32 of each stored vector's bytes (NULL for rows written before), so a
    row whose bytes changed on disk but still read as finite numbers is found and recomputed."""
    if not _has_column(conn, "embeddings", "crc"):
        conn.execute("ALTER TABLE embeddings ADD COLUMN crc INTEGER")


#: (version reached, step), in order. Append a step to change the layout; never edit one.
MIGRATIONS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = (
    (1, _v1_tables),
    (2, _v2_cut_flag),
    (3, _v3_labels),
    (4, _v4_checksums),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


@dataclass(frozen=True)
class Layout:
    """What one open file offers: its version, optional parts, and whether it can be written."""

    version: int
    has_cut: bool
    has_labels: bool
    writable: bool
    write_error: BaseException | None = None  # why not, for a read-only file
    has_crc: bool = False


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


#: Everything :func:`_layout` reads, in one statement: version, objects, the embeddings table,
#: its ``cut`` column, the labels table, the ``crc`` column.
_LAYOUT_QUERY = (
    "SELECT (SELECT user_version FROM pragma_user_version), "
    "(SELECT count(*) FROM sqlite_master), "
    "(SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'embeddings'), "
    "(SELECT count(*) FROM pragma_table_info('embeddings') WHERE name = 'cut'), "
    "(SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'namespace_labels'), "
    "(SELECT count(*) FROM pragma_table_info('embeddings') WHERE name = 'crc')")


def _foreign(conn: sqlite3.Connection) -> bool:
    """True for someone else's database: objects but no skmoe version. One statement, so one
    snapshot: read apart, another thread's migration could commit between the two reads and
    make a file it just created look foreign."""
    version, objects = conn.execute(_LAYOUT_QUERY).fetchone()[:2]
    return int(version) == 0 and int(objects) > 0


def _layout(conn: sqlite3.Connection, path: str, *, writable: bool,
            write_error: BaseException | None = None) -> Layout:
    """The file's layout, read in one statement, so from one snapshot: read apart, a migration
    committed by another process between the reads could pair an old version with new tables."""
    version, objects, embeddings, cut, labels, crc = (
        int(v) for v in conn.execute(_LAYOUT_QUERY).fetchone())
    if version > SCHEMA_VERSION:
        raise CacheFormatError(
            f"{path} has cache schema version {version}, this skmoe reads up to "
            f"{SCHEMA_VERSION}; upgrade skmoe, use another path or delete the file")
    if not embeddings:
        if version or objects:
            raise CacheFormatError(f"{path} is an SQLite file but not a skmoe cache")
        raise CacheFormatError(f"{path} is an empty file, not a skmoe cache")
    return Layout(version, bool(cut), bool(labels), writable, write_error, has_crc=bool(crc))


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` (a new file: create it), in one transaction."""
    version = _version(conn)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        _layout(conn, path, writable=False)  # raises the error that says so
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn)  # re-check inside the write lock: another process may be done
        if _foreign(conn):
            raise CacheFormatError(f"{path} is an SQLite file but not a skmoe cache")
        for target, step in MIGRATIONS:
            if target > version:
                step(conn)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _connect_rw(path: str, timeout: float) -> sqlite3.Connection:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write
    # lock up front and waits under busy_timeout, instead of failing on a read->write upgrade.
    # check_same_thread=False only so close() can close other threads' connections; each
    # thread still uses its own.
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if _foreign(conn):
            # someone else's database: refuse before switching it to WAL or adding tables
            raise CacheFormatError(f"{path} is an SQLite file but not a skmoe cache")
        # Only takes effect on a new, empty file. A 768-d row is ~3.1 kB: with the default
        # 4 kB pages each row fills a page (+45 % on disk); 16 kB pages pack five.
        conn.execute("PRAGMA page_size = 16384")
        deadline = time.monotonic() + timeout
        while True:
            # Switching a fresh file to WAL can report "locked" while another process creates
            # the same file, even with busy_timeout set: retry until the timeout.
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            raise CacheFormatError(f"could not put {path} in WAL mode (got {mode!r})")
        # In WAL mode, NORMAL fsyncs only at checkpoints; a COMMIT has still written its frames
        # to the WAL file (the OS page cache) before returning, so a killed process loses no
        # committed row. Only an OS crash or power loss may roll back the last commits, and
        # never corrupts the file. FULL would fsync every commit for no gain in our threat model.
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def open_readonly(path: str, timeout: float = 60.0) -> tuple[sqlite3.Connection, Layout]:
    """A connection that never writes (no migration): for a read-only location or a check.

    ``mode=ro`` first; if even that cannot open (a WAL file in a read-only folder has no
    shared-memory file and cannot make one), ``immutable=1``, which reads without locks.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "no cache file", path)
    uri = "file:" + urllib.parse.quote(path)
    error: BaseException | None = None
    for flags in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"{uri}?{flags}", uri=True, timeout=timeout,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            return conn, _layout(conn, path, writable=False)
        except sqlite3.OperationalError as exc:
            conn.close()
            error = exc
        except BaseException:
            conn.close()
            raise
    assert error is not None
    raise error


def open_connection(path: str, timeout: float) -> tuple[sqlite3.Connection, Layout]:
    """Open ``path`` for reading and writing (creating or migrating it), else for reading only.

    A file that exists but cannot be written (read-only file, folder or file system) is opened
    read-only with ``Layout.writable`` False and the reason in ``Layout.write_error``; any other
    problem raises.
    """
    if os.path.exists(path) and not os.path.isfile(path):  # a folder, /dev/null, a fifo...
        # SQLite would open a device and create "<path>-journal" beside it: never get there.
        raise CacheFormatError(f"{path} is not a regular file")
    try:
        conn = _connect_rw(path, timeout)
    except (sqlite3.OperationalError, OSError) as exc:
        if not (os.path.isfile(path) and (_cannot_write(exc) or _no_space(exc))):
            raise
        try:
            conn, layout = open_readonly(path, timeout)
        except (sqlite3.Error, CacheFormatError, OSError):
            raise exc from None
        return conn, dataclasses.replace(layout, writable=False, write_error=exc)
    return conn, _layout(conn, path, writable=True)


def _cannot_write(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return True
    text = str(exc).lower()
    return any(k in text for k in ("readonly", "read-only", "unable to open", "permission"))


def _no_space(exc: BaseException) -> bool:
    """A full disk or a file-size limit. SQLite says "database or disk is full" for the first,
    and only "disk I/O error" when a write to the WAL or its index fails with ENOSPC or EFBIG
    (seen: opening on a full tmpfs, and under ``ulimit -f``): not damage, the file is sound."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "full" in text or "disk i/o" in text


def out_of_descriptors() -> bool:
    """Whether this process has no file descriptor left (``EMFILE``/``ENFILE``): SQLite then
    says only "unable to open database file", which would otherwise read as a permission
    problem. Probed by opening one descriptor."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return False


def _sqlite_header(path: str) -> bool:
    """Whether ``path`` starts as every SQLite database does (an unreadable one: assume so)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return True


class Diagnosis(NamedTuple):
    """What a cache fault is and what to do about it (:func:`diagnose`)."""

    what: str  # what happened, for a message
    fix: str  # how to fix it
    unusable: bool = False  # neither reads nor writes can work with this file
    damaged: bool = False  # SQLite cannot read it: it holds nothing to keep
    transient: bool = False  # the process, not the file (e.g. out of descriptors): retry later


def diagnose(exc: BaseException, path: str) -> Diagnosis:
    """Name the fault ``exc`` met on the cache file ``path``, and its fix."""
    text = str(exc).lower()
    clear = f"run `skmoe cache clear {path}` (it removes a damaged file) or delete the file"
    check = f"`skmoe cache check {path}` tells whether the file itself is sound"
    if os.path.isdir(path):
        return Diagnosis("the cache path is a folder",
                         "pass a file path, e.g. .../embeddings.sqlite", True)
    if os.path.exists(path) and not os.path.isfile(path):
        return Diagnosis("the cache path is not a regular file", "pass a path to a file", True)
    if isinstance(exc, CacheFormatError):
        return Diagnosis(str(exc), "pass another cache path (this file is left as it is)", True)
    if "not a database" in text and not _sqlite_header(path):  # someone's file, not a cache
        return Diagnosis("the file is not an SQLite file, so not an skmoe cache (it is left "
                         "alone)", "pass another cache path (--cache PATH, or cache=... in "
                         "Python)", True)
    if "malformed" in text or "not a database" in text:
        return Diagnosis(f"the file is damaged ({exc})", clear, True, damaged=True)
    if "disk i/o" in text:  # SQLite's word for ENOSPC/EFBIG on the WAL, and for failing disks
        return Diagnosis(f"writing failed ({exc}): the disk is full, the file is at a size limit "
                         "(ulimit -f), or the disk is failing",
                         f"free space on that disk or point the cache at another disk; {check}")
    if _no_space(exc):
        return Diagnosis(f"the disk is full ({exc})",
                         "free space on that disk or point the cache at another disk")
    if "unable to open" in text and out_of_descriptors():
        return Diagnosis(f"this process has run out of file descriptors ({exc})",
                         "raise the limit (ulimit -n) or use fewer threads", transient=True)
    if _cannot_write(exc):
        return Diagnosis(f"it cannot be written ({exc})",
                         "make the file, the -wal and -shm files beside it (SQLite gives them "
                         "the file's mode) and its folder writable, or pass another cache path",
                         not os.path.isfile(path))
    if "locked" in text or "busy" in text:
        return Diagnosis(f"another process held its lock too long ({exc})",
                         "retry, or raise EmbeddingCache(timeout=...)")
    return Diagnosis(f"{type(exc).__name__}: {exc}", f"{check}; else pass another cache path")


def check_file(path: str, timeout: float, vector_dtype: np.dtype) -> list[str]:
    """The problems of a cache file, found without changing it (empty when it is sound)."""
    try:
        conn, layout = open_readonly(path, timeout)  # an older version is fine: writers migrate it
    except Exception as exc:
        found = diagnose(exc, path)
        return [f"cannot be opened: {found.what}. Fix: {found.fix}"]
    problems: list[str] = []
    try:
        integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append("SQLite integrity check: " + "; ".join(integrity[:5]))
        bad: dict[str, int] = {}
        crc = "e.crc" if layout.has_crc else "NULL"
        rows = conn.execute(f"SELECT n.namespace, n.dim, e.vector, {crc} FROM embeddings e "
                            "JOIN namespaces n ON n.id = e.ns_id")
        for namespace, dim, blob, stored in rows:
            if not row_is_sound(blob, stored, dim * vector_dtype.itemsize, vector_dtype):
                bad[namespace] = bad.get(namespace, 0) + 1
        problems += [f"namespace {ns[:12]}: {n} damaged vector(s) (wrong size, not finite or "
                     "not matching its checksum; they are recomputed on use)"
                     for ns, n in bad.items()]
    except sqlite3.DatabaseError as exc:
        problems.append(f"the file is damaged ({exc})")
    finally:
        conn.close()
    if problems:
        problems.append(f"fix: `skmoe cache clear {path}` empties it (a file it cannot read is "
                        "removed)")
    return problems
