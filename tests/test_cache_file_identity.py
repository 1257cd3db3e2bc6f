"""A cache file removed or replaced at its path while the process holds it open.

A notebook user runs ``!rm embeddings.sqlite*`` to start afresh and re-runs the cell: the handle
the registry kept went on reading and writing the deleted file (hits served from it, new rows
lost with it, ``bytes=0``). The handle now notices, when it is handed out, that the path names
another file (or none) and starts afresh on the file there.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import threading
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from skmoe import registry
from skmoe.cache import EmbeddingCache, cache_namespace
from skmoe.estimator import MoEEmbeddingTransformer

TEXTS = [f"text number {i} about cache files" for i in range(10)]
NS = cache_namespace(model="m", revision="r")


def _remove(path: str) -> None:
    for p in glob.glob(path + "*"):
        os.remove(p)


def _deleted_fds(path: str) -> list[str]:
    """This process's descriptors on deleted files of ``path`` (Linux)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(path) and target.endswith("(deleted)"):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc")
def test_a_removed_cache_file_is_created_afresh_not_served(fast_moe, tmp_path):
    path = str(tmp_path / "emb.sqlite")
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", center=False, verbose=0, cache=path)
    est.fit(TEXTS).transform(TEXTS[:5])
    assert est.cache_stats().entries == 5
    _remove(path)  # `!rm emb.sqlite*` in a cell

    again = clone(est)  # the cell re-run: a new estimator on the same path
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: a fresh cache is what was asked
        again.fit(TEXTS).transform(TEXTS)
    stats = again.cache_stats()
    assert stats.hits == 0 and stats.misses == 10  # no hit served from the deleted file
    assert stats.entries == 10 and stats.bytes > 0 and os.path.isfile(path)
    assert EmbeddingCache(path).stats().entries == 10  # on disk: what a new process sees
    assert _deleted_fds(path) == []  # the old file's descriptors are closed
    # the first estimator shares the handle, so it reads the new file too
    assert est.cache_stats().entries == 10


def test_a_file_renamed_over_the_path_is_read(tmp_path):
    path = str(tmp_path / "emb.sqlite")
    handle = registry.get_cache(path)
    handle.put_many(NS, ["a", "b"], np.ones((2, 4), np.float32))
    other = EmbeddingCache(tmp_path / "backup.sqlite")
    other.put_many(NS, ["c"], np.full((1, 4), 2, np.float32))
    other.close()  # checkpointed into the file: no WAL left beside it
    os.replace(other.path, path)  # a copy restored by renaming it over

    assert registry.get_cache(path) is handle  # still one handle per path
    found, vectors = handle.lookup(NS, ["a", "c"])
    assert found.tolist() == [False, True] and vectors.tolist() == [[2, 2, 2, 2]]
    assert len(handle) == 1


class _NoCheckpoint:
    """A connection whose checkpoint fails (another process reading the old file)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args):
        if "wal_checkpoint" in sql:
            raise sqlite3.OperationalError("database table is locked")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


@pytest.mark.parametrize("checkpoint", ["works", "fails"])
@pytest.mark.parametrize("how", ["rename over", "rm the file, not its log"])
def test_the_old_files_log_is_never_replayed_into_the_new_one(tmp_path, how, checkpoint):
    """SQLite leaves the log of a file moved under it beside the path; opened with the new
    file, it would write the old file's pages into it."""
    path = str(tmp_path / "emb.sqlite")
    handle = EmbeddingCache(path)
    handle.put_many(NS, ["a", "b"], np.ones((2, 4), np.float32))
    assert os.path.getsize(path + "-wal") > 0  # the rows are in the log still
    if checkpoint == "fails":
        handle._local.held.conn = _NoCheckpoint(handle._local.held.conn)
    if how == "rename over":
        other = EmbeddingCache(tmp_path / "backup.sqlite")
        other.put_many(NS, ["c"], np.full((1, 4), 2, np.float32))
        other.close()
        os.replace(other.path, path)
    else:
        os.remove(path)

    assert handle.reopen_if_replaced()
    expected = 1 if how == "rename over" else 0
    assert len(handle) == expected and handle.lookup(NS, ["a", "b"])[0].tolist() == [False, False]
    assert handle.integrity_check() == "ok"
    handle.close()
    fresh = EmbeddingCache(path)  # another process, later
    assert len(fresh) == expected and fresh.integrity_check() == "ok"


def test_the_callers_own_cache_object_is_checked_too(tmp_path):
    mine = EmbeddingCache(tmp_path / "mine.sqlite")
    mine.put_many(NS, ["a"], np.ones((1, 4), np.float32))
    assert registry.get_cache(mine) is mine and not mine.reopen_if_replaced()  # unchanged: a stat
    _remove(mine.path)
    assert registry.get_cache(mine) is mine
    assert len(mine) == 0 and os.path.isfile(mine.path)
    assert not mine.reopen_if_replaced()


def test_a_handle_never_opened_has_nothing_to_reopen(tmp_path):
    cache = EmbeddingCache(tmp_path / "never.sqlite")
    assert not cache.reopen_if_replaced()
    assert not os.path.exists(cache.path)  # checking creates nothing


def test_connections_closed_under_a_call_cost_that_call_its_cache_only(tmp_path, monkeypatch):
    """Another thread closing the handle's connections (an idle handle, a replaced file) while a
    lookup is inside the file: those rows go without the cache, no error, no warning."""
    import skmoe.cache as cache_module

    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    cache.put_many(NS, ["a"], np.ones((1, 4), np.float32))
    real = cache_module.read_rows

    def closed_meanwhile(conn: sqlite3.Connection, *args, **kwargs):
        worker = threading.Thread(target=cache.close)
        worker.start()
        worker.join()
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(cache_module, "read_rows", closed_meanwhile)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found, _ = cache.lookup(NS, ["a"])
    assert found.tolist() == [False]
    monkeypatch.undo()
    assert cache.lookup(NS, ["a"])[0].tolist() == [True]  # the next call opens it again
    assert cache.stats().stopped is None
