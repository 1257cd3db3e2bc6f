"""A process-safe handle on the cache's SQLite file: connections, and faults that degrade.

:class:`CacheFile` holds only a path and a timeout; connections are opened lazily, one per thread
and process, never pickled. A problem with the file (damaged, read-only, full disk, a folder)
becomes one :class:`CacheUnavailableWarning` naming the file, what happened and the fix, and
stops reading or writing (or both) for this object in this process, so that the caller's work
goes on uncached. :class:`skmoe.cache.EmbeddingCache` builds on it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import warnings
import weakref
from typing import Any

from ._cache_db import CacheFormatError, Layout, diagnose, open_connection

__all__ = ["CacheFile", "CacheUnavailableWarning"]


class CacheUnavailableWarning(UserWarning):
    """The cache file cannot be read or written; the work goes on without that side of it."""


# Errors that mean "the file or its location is at fault", as opposed to a bug in the caller.
_FAULTS = (sqlite3.OperationalError, sqlite3.DatabaseError, CacheFormatError, OSError)
_BUGS = (sqlite3.ProgrammingError, sqlite3.InterfaceError)


class _Held:
    """A thread's connection, kept in that thread's local storage: when the thread ends (any
    thread, one started by ``threading`` or not), the storage goes and the connection is closed
    (a thread per request kept one open each: 2 fds and up to 1 MB, ~500 requests to EMFILE)."""

    __slots__ = ("conn", "sidecars", "__weakref__")

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        # the write-ahead log and its index this connection opened (while it is open, their
        # inodes cannot be reused: a file with one of these identities is one of them)
        self.sidecars: dict[str, tuple[int, int] | None] = {}
        for suffix in _SIDECARS:
            try:
                self.sidecars[suffix] = _file_identity(path + suffix)
            except OSError:
                self.sidecars[suffix] = None
        weakref.finalize(self, _close_in, conn, os.getpid())


_SIDECARS = ("-wal", "-shm")


def _file_identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path``, None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _close_in(conn: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:  # a forked child leaves its parent's connections alone
        conn.close()


class CacheFile:
    """Lazy per-thread connections to one SQLite file, with degrading fault handling.

    Parameters
    ----------
    path : str or os.PathLike
        SQLite file; created (with parent folders) on first use, stored as an absolute path.
    timeout : float, default=60.0
        Seconds a writer waits for another process's write transaction before failing.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0) -> None:
        path = os.fspath(path)
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ValueError(
                "EmbeddingCache needs a file path (in-memory databases are per connection)"
            )
        self.path = os.path.abspath(os.path.expanduser(path))
        self.timeout = float(timeout)
        self._reset_process_state()

    # -- process / thread local state -------------------------------------------------------

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._local = threading.local()
        # the threads' connections, for close(); each goes with its thread (_Held)
        self._connections: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._layout: Layout | None = None  # what the file offers, read at the first open
        self._hits = 0
        self._misses = 0
        # A fault stops that side (reads or writes) for this object in this process, after one
        # warning; the other side goes on. Damaged rows found by lookup, replaced by put_many.
        self._read_fault: str | None = None
        self._write_fault: str | None = None
        self._transient_warned = False  # one warning for faults that stop nothing (diagnose)
        self._damaged: set[tuple[str, bytes]] = set()
        # (st_dev, st_ino) of the file the connections opened: a file removed or replaced at the
        # path since is noticed by reopen_if_replaced (the connections would go on using the
        # old, possibly deleted, file: hits from it, new rows lost with it)
        self._identity: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.timeout = state["timeout"]
        self._reset_process_state()

    def __deepcopy__(self, memo: dict) -> CacheFile:
        # A handle on a shared file: sklearn's clone (GridSearchCV, cross_val_score) deep-copies
        # parameters, and a copy would count the clones' hits and misses where the user never
        # looks. Every clone uses this same object instead.
        return self

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            # Forked child: the parent's connections must not be used, nor closed here (SQLite
            # forbids carrying a connection across fork). Abandon them and start afresh.
            self._reset_process_state()

    def _conn(self) -> sqlite3.Connection:
        self._check_pid()
        held = getattr(self._local, "held", None)
        if held is None:
            conn, layout = open_connection(self.path, self.timeout)
            held = self._local.held = _Held(conn, self.path)
            try:
                identity = _file_identity(self.path)
            except OSError:
                identity = None
            with self._lock:
                self._connections.add(held)
                if self._layout is None or layout.version > self._layout.version:
                    self._layout = layout
                if self._identity is None:
                    self._identity = identity
        return held.conn

    def reopen_if_replaced(self) -> bool:
        """Start afresh if the file at :attr:`path` is no longer the one the connections opened.

        After ``rm cache.sqlite*`` (or a copy renamed over it), connections kept from before
        would go on reading and writing the old file, deleted or not: hits served from it, new
        rows lost with it. One ``os.stat``, meant for the start of a call (the registry calls it
        each time it hands the cache out); when the file is gone or another, this object's
        connections are closed and its state (counts, stopped sides) reset, as after
        :meth:`remove`, and the next use opens (or creates) the file now at the path. Returns
        whether it did. Another thread inside a call on this cache meanwhile loses the cache for
        the read or write under way only (those rows are misses, or not stored), without an
        error.
        """
        self._check_pid()
        if self._identity is None:  # nothing opened yet (or since the last reset)
            return False
        try:
            now = _file_identity(self.path)
        except OSError:  # not readable now: the next use says why
            return False
        if now == self._identity:
            return False
        self._retire_log()
        self.close()
        self._reset_process_state()
        return True

    def _retire_log(self) -> None:
        """Leave no write-ahead log of the old file at the path, where the next open would
        replay the old file's pages into the new one (damage: SQLite neither checkpoints nor
        deletes the log of a file moved or deleted under it). Checkpointed into the old file and
        emptied through one of this object's connections, which reach the old log whatever is
        at the path now; failing that, the log and index are removed if they are the very files
        a still-open connection opened (never the new file's)."""
        with self._lock:
            held = getattr(self._local, "held", None) or next(iter(self._connections), None)
        if held is None:
            return
        try:
            busy = held.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error:
            busy = 1
        if not busy:
            return
        for suffix, identity in held.sidecars.items():
            try:
                if identity is not None and _file_identity(self.path + suffix) == identity:
                    os.remove(self.path + suffix)
            except OSError:
                pass

    def _file_layout(self) -> Layout:
        self._conn()
        assert self._layout is not None
        return self._layout

    # -- faults -------------------------------------------------------------------------------

    def _fault(self, side: str, exc: BaseException, *, opening: bool = False) -> None:
        """Stop reading or writing (or both, for an unusable file) after one warning.

        ``opening``: the file could not be opened at all (nor read-only), so neither side works.
        """
        if isinstance(exc, sqlite3.ProgrammingError) and "closed database" in str(exc):
            # closed under this call by another thread (the registry closing an idle cache's
            # connections, or a file replaced at the path): these rows go without the cache,
            # the next use opens a connection again
            return
        if isinstance(exc, _BUGS) or not isinstance(exc, _FAULTS):
            raise exc
        found = diagnose(exc, self.path)
        what, fix, both = found.what, found.fix, found.unusable or opening
        if found.transient:  # the process's state, not the file's: this call goes without
            if not self._transient_warned:
                self._transient_warned = True
                self._warn(f"embedding cache {self.path}: {what}; these rows go without the "
                           f"cache (it is tried again on the next call). Fix: {fix}.")
            return
        with self._lock:
            sides = ("read", "write") if both else (side,)
            new = [s for s in sides if getattr(self, f"_{s}_fault") is None]
            for s in new:
                setattr(self, f"_{s}_fault", what)
        if not new:
            return
        stopped = {"read": "reading it", "write": "writing to it"}[side]
        self._warn(f"embedding cache {self.path}: {what}; continuing without "
                   f"{'the cache' if both else stopped}. Fix: {fix}.")

    @staticmethod
    def _warn(message: str) -> None:
        try:
            from ._stack import external_stacklevel

            level = external_stacklevel()
        except (ImportError, KeyError, OSError):  # without the package (worker scripts), or
            # out of descriptors to read its file
            level = 3
        warnings.warn(message, CacheUnavailableWarning, stacklevel=level)

    def _guarded_conn(self, side: str) -> sqlite3.Connection | None:
        """This thread's connection, or None (with one warning) when ``side`` has stopped."""
        self._check_pid()
        if getattr(self, f"_{side}_fault") is not None:
            return None
        try:
            conn = self._conn()
        except Exception as exc:
            self._fault(side, exc, opening=True)
            return None
        layout = self._layout
        if side == "write" and layout is not None and not layout.writable:
            self._fault("write", layout.write_error or sqlite3.OperationalError("read-only"))
            return None
        return conn

    def _write(self, work: Any) -> None:
        """Run ``work(conn)`` in a write transaction; a fault stops writing, with a warning."""
        conn = self._guarded_conn("write")
        if conn is None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # not a file fault (a caller's error): raised again by _fault
            self._fault("write", exc)

    def close(self) -> None:
        """Close this process's connections; the cache reopens lazily if used again.

        Call it when no other thread is using the cache.
        """
        self._check_pid()
        with self._lock:
            connections = [held.conn for held in self._connections]
            self._connections = weakref.WeakSet()
            self._local = threading.local()
        for conn in connections:
            conn.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if os.getpid() == self._pid:
                for held in list(self._connections):
                    held.conn.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass
