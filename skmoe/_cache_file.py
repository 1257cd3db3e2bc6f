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

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        weakref.finalize(self, _close_in, conn, os.getpid())


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
            held = self._local.held = _Held(conn)
            with self._lock:
                self._connections.add(held)
                if self._layout is None or layout.version > self._layout.version:
                    self._layout = layout
        return held.conn

    def _file_layout(self) -> Layout:
        self._conn()
        assert self._layout is not None
        return self._layout

    # -- faults -------------------------------------------------------------------------------

    def _fault(self, side: str, exc: BaseException, *, opening: bool = False) -> None:
        """Stop reading or writing (or both, for an unusable file) after one warning.

        ``opening``: the file could not be opened at all (nor read-only), so neither side works.
        """
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
