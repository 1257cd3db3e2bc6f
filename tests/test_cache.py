"""EmbeddingCache: exact round trips, keys, errors, pickling, and real multi-process writes/kills."""

from __future__ import annotations

import _thread
import importlib.util
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import skmoe._cache_namespace as namespace_mod
import skmoe.cache as cache_mod
from skmoe.cache import (
    CACHE_FORMAT_VERSION,
    CacheDimensionError,
    CacheFormatError,
    CacheStats,
    EmbeddingCache,
    cache_namespace,
    resolve_cache,
)

WRITER = Path(__file__).parent / "cache_helpers" / "writer.py"
_spec = importlib.util.spec_from_file_location("cache_writer", WRITER)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)

NS_PARTS = dict(
    revision="1066b6599d099fbb93dfcb64f9c37a7c9e503e85",
    weights="sha256:abc",
    prompt="classification: ",
    max_length=512,
    pooling="mean",
    dtype="float32",
)


@pytest.fixture
def cache(tmp_path: Path) -> EmbeddingCache:
    with EmbeddingCache(tmp_path / "sub" / "emb.sqlite") as c:
        yield c


def random_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# -- keys ---------------------------------------------------------------------------------------


def test_namespace_is_deterministic_and_sensitive_to_every_part(monkeypatch):
    ns = cache_namespace(**NS_PARTS)
    assert len(ns) == 64 and ns == cache_namespace(**dict(reversed(list(NS_PARTS.items()))))
    for key, other in [
        ("revision", "0" * 40),
        ("weights", "sha256:abd"),
        ("prompt", "clustering: "),
        ("max_length", 256),
        ("pooling", "cls"),
        ("dtype", "bfloat16"),
    ]:
        assert cache_namespace(**{**NS_PARTS, key: other}) != ns, key
    monkeypatch.setattr(namespace_mod, "CACHE_FORMAT_VERSION", CACHE_FORMAT_VERSION + 1)
    assert cache_namespace(**NS_PARTS) != ns


def test_namespace_accepts_dtypes_and_paths_rejects_opaque_objects(tmp_path):
    import torch

    assert cache_namespace(dtype=torch.float16) == cache_namespace(dtype="torch.float16")
    assert cache_namespace(path=tmp_path) == cache_namespace(path=str(tmp_path))
    assert cache_namespace(n=np.int64(3)) == cache_namespace(n=3)
    with pytest.raises(TypeError, match="JSON-like"):
        cache_namespace(model=object())
    with pytest.raises(ValueError, match="reserved"):
        cache_namespace(cache_format_version=0)


# -- round trip and counts ----------------------------------------------------------------------


def test_round_trip_is_bit_identical_across_objects(cache):
    ns = cache_namespace(**NS_PARTS)
    vecs = random_vectors(50, 768)
    # Values that a lossy path (float64 round trip, text, byte order) would mangle.
    vecs[0, :6] = [-0.0, 1e-45, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1 / 3, -7.5]
    texts = [f"text {i} ✓ здравствуйте" for i in range(50)]
    cache.put_many(ns, texts, vecs)

    fresh = EmbeddingCache(cache.path)
    found, got = fresh.lookup(ns, texts)
    assert found.all() and got.dtype == np.float32 and got.shape == (50, 768)
    np.testing.assert_array_equal(bits(got), bits(vecs))
    fresh.close()


def test_lookup_order_mask_and_hit_miss_counts(cache):
    ns = cache_namespace(**NS_PARTS)
    vecs = random_vectors(3, 8)
    cache.put_many(ns, ["a", "b", "c"], vecs)
    found, got = cache.lookup(ns, ["c", "x", "a", "a", "y"])
    assert found.tolist() == [True, False, True, True, False]
    np.testing.assert_array_equal(got, vecs[[2, 0, 0]])
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (3, 2)
    cache.lookup(ns, ["b"])
    cache.lookup(cache_namespace(other=1), ["a"])  # unknown namespace: a miss
    stats = cache.stats()
    assert isinstance(stats, CacheStats)
    assert (stats.hits, stats.misses, stats.entries, stats.namespaces) == (4, 3, 3, 1)


def test_empty_inputs(cache):
    ns = cache_namespace(**NS_PARTS)
    found, got = cache.lookup(ns, [], dim=8)
    assert found.shape == (0,) and got.shape == (0, 8)
    cache.put_many(ns, [], np.zeros((0, 8), np.float32))
    cache.put_many(ns, ["a"], np.ones((1, 8), np.float32))
    found, got = cache.lookup(ns, ["zz"])
    assert found.tolist() == [False] and got.shape == (0, 8)


def test_changed_fingerprint_part_is_a_miss(cache):
    ns = cache_namespace(**NS_PARTS)
    cache.put_many(ns, ["hello"], np.ones((1, 4), np.float32))
    for key, other in [("prompt", "search_query: "), ("revision", "f" * 40)]:
        found, _ = cache.lookup(cache_namespace(**{**NS_PARTS, key: other}), ["hello"])
        assert not found.any(), key
    assert cache.lookup(ns, ["hello"])[0].all()


def test_first_write_wins_and_duplicates_in_one_put(cache):
    ns = cache_namespace(**NS_PARTS)
    cache.put_many(ns, ["a", "a"], np.array([[1.0, 2.0], [3.0, 4.0]]))
    cache.put_many(ns, ["a"], np.array([[9.0, 9.0]]))
    assert len(cache) == 1
    np.testing.assert_array_equal(cache.lookup(ns, ["a"])[1], [[1.0, 2.0]])


def test_lone_surrogates_and_bad_text_types(cache):
    ns = cache_namespace(**NS_PARTS)
    texts = ["\ud800", "\udfff", "a\ud83d", ""]
    vecs = random_vectors(4, 4)
    cache.put_many(ns, texts, vecs)
    found, got = cache.lookup(ns, texts)
    assert found.all() and len(cache) == 4
    np.testing.assert_array_equal(got, vecs)
    with pytest.raises(TypeError, match="str"):
        cache.lookup(ns, [b"bytes"])
    with pytest.raises(TypeError, match="str"):
        cache.put_many(ns, [None], np.ones((1, 4)))


# -- errors -------------------------------------------------------------------------------------


def test_dimension_mismatch_is_detected(cache):
    ns = cache_namespace(**NS_PARTS)
    cache.put_many(ns, ["a"], np.ones((1, 8), np.float32))
    with pytest.raises(CacheDimensionError, match="8-d"):
        cache.put_many(ns, ["b"], np.ones((1, 16), np.float32))
    with pytest.raises(CacheDimensionError, match="16 expected"):
        cache.lookup(ns, ["a"], dim=16)
    assert cache.lookup(ns, ["a"], dim=8)[0].all()
    assert len(cache) == 1  # the failed write left nothing behind
    other = cache_namespace(**{**NS_PARTS, "pooling": "cls"})
    cache.put_many(other, ["b"], np.ones((1, 16), np.float32))
    assert cache.namespaces() == {ns: (8, 1), other: (16, 1)}


@pytest.mark.parametrize("blob", ["zeroblob(12)", "NAN_SAME_LENGTH", "INF_SAME_LENGTH",
                                  "FINITE_OTHER_BYTES"])
def test_damaged_row_is_a_miss_with_a_warning_and_is_replaced(cache, blob):
    """Wrong size, NaN, inf, or bytes that changed on disk and still read as finite numbers
    (found by the row's CRC-32, schema version 4): a miss with one warning, then replaced."""
    ns = cache_namespace(**NS_PARTS)
    cache.put_many(ns, ["a", "b"], np.ones((2, 8), np.float32))
    bad = {"NAN_SAME_LENGTH": np.full(8, np.nan, "<f4").tobytes(),
           "INF_SAME_LENGTH": np.r_[np.ones(7), np.inf].astype("<f4").tobytes(),
           "FINITE_OTHER_BYTES": np.r_[np.ones(7), 1e37].astype("<f4").tobytes()}.get(blob)
    with sqlite3.connect(cache.path) as raw:
        if bad is None:
            raw.execute(f"UPDATE embeddings SET vector = {blob} WHERE text_hash = ?",
                        (cache_mod._text_hash("a"),))
        else:
            raw.execute("UPDATE embeddings SET vector = ? WHERE text_hash = ?",
                        (bad, cache_mod._text_hash("a")))
    raw.close()
    with pytest.warns(cache_mod.CacheUnavailableWarning, match=r"1 stored vector.*damaged"):
        found, got = cache.lookup(ns, ["a", "b"])
    assert found.tolist() == [False, True] and np.isfinite(got).all()
    out = np.full((2, 8), 7.0, np.float32)
    assert cache.lookup(ns, ["a", "b"], out=out)[0].tolist() == [False, True]
    cache.put_many(ns, ["a"], np.full((1, 8), 2.0, np.float32))  # recomputed: replaces the row
    found, got = EmbeddingCache(cache.path).lookup(ns, ["a", "b"])
    assert found.all() and (got[0] == 2.0).all() and (got[1] == 1.0).all()
    assert EmbeddingCache(cache.path).check() == []


@pytest.mark.parametrize(
    "vectors, error",
    [
        (np.ones(4), ValueError),  # 1-D
        (np.ones((2, 4)), ValueError),  # wrong row count
        (np.ones((1, 0)), ValueError),
        (np.array([[np.nan, 1.0]]), ValueError),
        (np.array([[np.inf, 1.0]]), ValueError),
        (np.array([["a", "b"]]), TypeError),
    ],
)
def test_put_many_rejects_bad_vectors(cache, vectors, error):
    with pytest.raises(error):
        cache.put_many(cache_namespace(**NS_PARTS), ["a"], vectors)
    assert len(cache) == 0


def test_rejects_foreign_files_and_in_memory_paths(tmp_path):
    with pytest.raises(ValueError, match="file path"):
        EmbeddingCache(":memory:")
    for name, sql, error in (("other", "CREATE TABLE t (x)", "not a skmoe cache"),
                             ("newer", "PRAGMA user_version = 99", "schema version 99")):
        path = tmp_path / f"{name}.sqlite"
        with sqlite3.connect(path) as raw:
            raw.execute(sql)
        raw.close()
        with pytest.raises(CacheFormatError, match=error):
            len(EmbeddingCache(path))


# -- management ---------------------------------------------------------------------------------


def test_clear_one_namespace_or_all(cache):
    a, b = cache_namespace(model="a"), cache_namespace(model="b")
    cache.put_many(a, ["x", "y"], np.ones((2, 4), np.float32))
    cache.put_many(b, ["x"], np.ones((1, 6), np.float32))
    assert cache.clear(a) == 2
    assert not cache.lookup(a, ["x"])[0].any() and cache.lookup(b, ["x"])[0].all()
    cache.put_many(a, ["x"], np.ones((1, 8), np.float32))  # width may change once cleared
    assert cache.clear() == 2 and len(cache) == 0 and cache.namespaces() == {}
    assert cache.clear(a) == 0


def test_namespace_labels_describe_and_follow_clear(cache):
    a, b = cache_namespace(model="a"), cache_namespace(model="b")
    assert cache.labels() == {}  # a file that never got a description (e.g. an older skmoe)
    cache.put_many(a, ["x"], np.ones((1, 4), np.float32))
    cache.put_many(b, ["x"], np.ones((1, 4), np.float32))
    cache.describe(a, model="org/a", prompt="query: ", max_length=512)
    cache.describe(a, model="org/a", prompt="query: ", max_length=256)  # the latest wins
    cache.describe(b, model="/models/b", prompt="")
    assert cache.labels() == {a: {"model": "org/a", "prompt": "query: ", "max_length": 256},
                              b: {"model": "/models/b", "prompt": ""}}
    assert cache_namespace(model="a") == a  # labels are information, never part of a key
    cache.clear(a)
    assert list(cache.labels()) == [b]
    cache.clear()
    assert cache.labels() == {}


def test_stats_bytes_and_vacuum(cache):
    assert cache.stats().bytes > 0  # schema already written
    cache.put_many(
        cache_namespace(**NS_PARTS), [str(i) for i in range(300)], random_vectors(300, 768)
    )
    full = cache.stats()
    assert full.entries == 300 and full.bytes > 300 * 768 * 4
    cache.close()  # checkpoints the WAL into the file
    # 16 kB pages: a 3 kB vector does not take a whole page of its own
    assert os.path.getsize(cache.path) < 1.25 * 300 * 768 * 4
    cache.clear()
    cache.vacuum()
    assert cache.stats().bytes < full.bytes / 10
    assert cache.integrity_check() == "ok"


def test_repr_shows_path_and_size(tmp_path):
    c = EmbeddingCache(tmp_path / "r.sqlite")
    assert repr(c) == f"EmbeddingCache({c.path!r}, entries=0, bytes=0)"
    assert not os.path.exists(c.path)  # repr does not create the file
    c.put_many("ns", ["a", "b"], np.ones((2, 4), np.float32))
    text = repr(c)
    assert c.path in text and "entries=2" in text
    assert f"bytes={c.stats().bytes}" in text and c.stats().bytes > 0
    c.close()


def test_pickle_round_trip_drops_connections(cache):
    ns = cache_namespace(**NS_PARTS)
    vecs = random_vectors(5, 8)
    cache.put_many(ns, list("abcde"), vecs)
    cache.lookup(ns, ["a"])  # connection open, counters non-zero
    blob = pickle.dumps(cache)
    assert len(blob) < 500  # path + timeout, no connection or thread-local state
    clone = pickle.loads(blob)
    assert clone == cache and hash(clone) == hash(cache) and clone.path == cache.path
    assert clone.stats().hits == 0
    found, got = clone.lookup(ns, list("edcba"))
    assert found.all()
    np.testing.assert_array_equal(got, vecs[::-1])
    clone.close()


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = EmbeddingCache("rel.sqlite")
    assert c.path == str(tmp_path / "rel.sqlite")


def test_resolve_cache():
    assert resolve_cache(None) is None
    c = EmbeddingCache("/tmp/x.sqlite")
    assert resolve_cache(c) is c
    assert resolve_cache("/tmp/x.sqlite") == c
    with pytest.raises(TypeError):
        resolve_cache(3)


def test_close_then_reuse_and_context_manager(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite") as c:
        c.put_many("ns", ["a"], np.ones((1, 2), np.float32))
    assert not c._connections
    assert c.lookup("ns", ["a"])[0].all()  # reopens lazily
    c.close()


def test_large_lookup_is_chunked(cache, monkeypatch):
    statements: list[str] = []
    ns = cache_namespace(**NS_PARTS)
    texts = [f"t{i}" for i in range(3000)]
    cache.put_many(ns, texts[::2], random_vectors(1500, 4))
    cache._conn().set_trace_callback(statements.append)
    found, got = cache.lookup(ns, texts + texts)
    assert found.sum() == 3000 and got.shape == (3000, 4)
    selects = [s for s in statements if "FROM embeddings" in s]
    assert len(selects) == 6  # 3000 unique hashes / 500 per statement
    cache._conn().set_trace_callback(None)


# -- threads and processes ----------------------------------------------------------------------


def test_threads_get_their_own_connections(cache):
    ns = cache_namespace(**NS_PARTS)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            idx = range(k * 100, (k + 1) * 100)
            cache.put_many(
                ns, [writer.row_text(i) for i in idx], [writer.row_vector(i) for i in idx]
            )
            assert cache.lookup(ns, [writer.row_text(i) for i in idx])[0].all()
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(cache) == 400
    assert cache.stats().hits == 400


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_thread_per_call_does_not_leak_connections(cache):
    """Every thread's connection stayed open after the thread ended: a thread-per-request
    server ran out of file descriptors after ~500 requests (ulimit -n 1024), then every
    request failed."""
    ns = cache_namespace(**NS_PARTS)
    cache.put_many(ns, ["a"], [writer.row_vector(0)])

    def call() -> None:
        assert cache.lookup(ns, ["a", "b"])[0].tolist() == [True, False]

    def one_thread() -> None:
        t = threading.Thread(target=call)
        t.start()
        t.join()

    def foreign_thread() -> None:  # not started by threading (C code, embedding servers)
        done = threading.Event()
        _thread.start_new_thread(lambda: (call(), done.set()), ())
        assert done.wait(10)
        time.sleep(0.01)  # the thread's state (and storage) goes after its function returns

    one_thread()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(100):
        one_thread()
    for _ in range(50):
        foreign_thread()
    time.sleep(0.1)  # the last thread's state goes after it returns
    assert len(os.listdir("/proc/self/fd")) - before < 5  # was +300 (two per connection)
    assert len(cache._connections) <= 2  # this thread's (put_many) and at most the last one's
    assert cache.lookup(ns, ["a"])[0].all()  # this thread's connection was never touched


def test_forked_child_reopens(cache):
    ns = cache_namespace(**NS_PARTS)
    cache.put_many(ns, ["parent"], np.ones((1, 4), np.float32))  # parent connection open
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's connection
        code = 1
        try:
            assert cache.lookup(ns, ["parent"])[0].all()
            cache.put_many(ns, ["child"], np.full((1, 4), 2.0, np.float32))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    found, got = cache.lookup(ns, ["parent", "child"])
    assert found.all() and got[1].tolist() == [2.0] * 4
    assert cache.integrity_check() == "ok"


def _start_writer(path, ns, start, stop, batch, go=None, ready=None, workers=1) -> subprocess.Popen:
    args = [sys.executable, str(WRITER), str(path), ns, str(start), str(stop), str(batch)]
    args += [str(go)] if go else []
    args += [str(ready)] if ready else []
    args += [str(workers)] if workers > 1 else []
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_rows(c: EmbeddingCache, ns: str, indices) -> None:
    indices = list(indices)
    found, got = c.lookup(ns, [writer.row_text(i) for i in indices])
    missing = [i for i, ok in zip(indices, found, strict=True) if not ok]
    assert not missing, f"{len(missing)} rows lost, e.g. {missing[:5]}"
    expected = np.stack([writer.row_vector(i) for i in indices])
    np.testing.assert_array_equal(bits(got), bits(expected))


def test_two_processes_write_concurrently_without_losing_rows(tmp_path):
    path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    ns = cache_namespace(**NS_PARTS)
    # Fresh file: both processes also race to create the schema and switch it to WAL.
    ready = [tmp_path / "ready-0", tmp_path / "ready-1"]
    procs = [  # rows 1000..1999 are written by both
        _start_writer(path, ns, 0, 2000, 10, go, ready[0], workers=2),  # rows 0..1999
        _start_writer(path, ns, 1000, 3000, 7, go, ready[1], workers=2),  # rows 1000..2999
    ]
    # The signal only once both have imported and wait for it: on a loaded machine a fixed pause
    # let one writer finish before the other had started (seen in CI).
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.01)
    go.touch()
    windows = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        lines = [line.split() for line in out.splitlines()]
        assert int(lines[-1][0]) == 2000 and len(lines) >= 200  # many small transactions
        windows.append((float(lines[0][1]), float(lines[-1][1])))
    (a0, a1), (b0, b1) = windows
    assert a0 < b1 and b0 < a1, f"writers did not overlap in time: {windows}"
    c = EmbeddingCache(path)
    assert len(c) == 3000
    _assert_rows(c, ns, range(3000))
    assert c.integrity_check() == "ok"
    c.close()


def test_sigkill_keeps_every_committed_row(tmp_path):
    path = tmp_path / "killed.sqlite"
    ns = cache_namespace(**NS_PARTS)
    proc = _start_writer(path, ns, 0, -1, 13)  # writes forever in 13-row transactions
    reported = 0
    try:
        deadline = time.monotonic() + 60
        while reported < 400:
            line = proc.stdout.readline()
            assert line, f"writer died: {proc.stderr.read()}"
            reported = int(line.split()[0])
            assert time.monotonic() < deadline, "writer too slow"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(str(path) + "-wal")  # killed with a live WAL: recovery is exercised

    c = EmbeddingCache(path)
    assert c.integrity_check() == "ok"
    stored = len(c)
    assert stored >= reported and stored % 13 == 0  # whole transactions only
    _assert_rows(c, ns, range(stored))
    c.close()


def test_cut_flags_round_trip_and_default_to_unknown(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    vecs = np.ones((3, 4), np.float32)
    cache.put_many("ns", ["a", "b", "c"], vecs, cut=[True, False, True])
    cache.put_many("ns", ["d"], vecs[:1])  # no flag given: unknown
    found, got, cut = cache.lookup("ns", ["c", "x", "b", "d", "a"], with_cut=True)
    assert found.tolist() == [True, False, True, True, True]
    assert got.shape == (4, 4) and cut.tolist() == [1, -1, 0, -1, 1]  # per text; -1 unknown
    assert len(cache.lookup("ns", ["a"])) == 2  # the plain form is unchanged
    cache.put_many("ns", ["g", "h"], vecs[:2], cut=[None, True])  # unknown for one row only
    assert cache.lookup("ns", ["g", "h"], with_cut=True)[2].tolist() == [-1, 1]
    with pytest.raises(ValueError, match="cut must have 2 entries"):
        cache.put_many("ns", ["e", "f"], vecs[:2], cut=[True])


def _file_in_version_1_format(path: Path, *, with_cut: bool, labels: bool = False) -> None:
    """A cache file as skmoe wrote it before the migrations: user_version 1, ``cut`` added by
    ALTER on open in some files and not in others, labels created on first describe."""
    from skmoe.cache import _text_hash

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 16384")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(
        "CREATE TABLE namespaces (id INTEGER PRIMARY KEY, namespace TEXT NOT NULL UNIQUE, "
        "dim INTEGER NOT NULL);"
        "CREATE TABLE embeddings (ns_id INTEGER NOT NULL, text_hash BLOB NOT NULL, "
        "vector BLOB NOT NULL, PRIMARY KEY (ns_id, text_hash));")
    if with_cut:
        conn.execute("ALTER TABLE embeddings ADD COLUMN cut INTEGER")
    if labels:
        conn.execute("CREATE TABLE namespace_labels (namespace TEXT PRIMARY KEY, "
                     "labels TEXT NOT NULL)")
        conn.execute("INSERT INTO namespace_labels VALUES ('ns', '{\"model\": \"m\"}')")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO namespaces (namespace, dim) VALUES ('ns', 2)")
    row = (1, _text_hash("old"), np.ones(2, "<f4").tobytes())
    if with_cut:
        conn.execute("INSERT INTO embeddings VALUES (?, ?, ?, 1)", row)
    else:
        conn.execute("INSERT INTO embeddings VALUES (?, ?, ?)", row)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("with_cut", [False, True])
@pytest.mark.parametrize("labels", [False, True])
def test_a_version_1_file_is_migrated_on_open(tmp_path, with_cut, labels):
    from skmoe._cache_db import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    _file_in_version_1_format(path, with_cut=with_cut, labels=labels)
    cache = EmbeddingCache(path)
    found, _, cut = cache.lookup("ns", ["old"], with_cut=True)  # opening migrates
    assert found.all() and cut.tolist() == [1 if with_cut else -1]
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [r[1] for r in raw.execute("PRAGMA table_info(embeddings)")]
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    assert columns.count("cut") == 1 and columns.count("crc") == 1
    assert "namespace_labels" in tables
    assert [v for v, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    cache.put_many("ns", ["new"], np.zeros((1, 2), np.float32), cut=[True])
    cache.describe("ns", model="m2")
    found, _, cut = EmbeddingCache(path).lookup("ns", ["old", "new"], with_cut=True)
    assert found.all() and cut.tolist() == [1 if with_cut else -1, 1]
    assert cache.labels() == {"ns": {"model": "m2"}}
    assert EmbeddingCache(path).check() == []


def test_a_new_file_gets_every_migration_once(tmp_path):
    from skmoe._cache_db import SCHEMA_VERSION

    cache = EmbeddingCache(tmp_path / "new.sqlite")
    cache.put_many("ns", ["a"], np.ones((1, 2), np.float32), cut=[False])
    cache.close()
    EmbeddingCache(cache.path).put_many("ns", ["b"], np.ones((1, 2), np.float32))  # reopen: no-op
    with sqlite3.connect(cache.path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    assert len(EmbeddingCache(cache.path)) == 2


def test_lookup_writes_into_out_and_handles_duplicates(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    vecs = np.arange(8, dtype=np.float32).reshape(2, 4)
    cache.put_many("ns", ["a", "b"], vecs)
    out = np.full((4, 4), -1.0, np.float32)
    found, got = cache.lookup("ns", ["b", "z", "a", "b"], out=out)
    assert got is out and found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(out[[0, 2, 3]], vecs[[1, 0, 1]])
    assert (out[1] == -1).all()  # a miss leaves its row alone
    np.testing.assert_array_equal(cache.lookup("ns", ["b", "z", "a", "b"])[1], vecs[[1, 0, 1]])
    with pytest.raises(ValueError, match=r"out has shape \(2, 4\), expected \(4, 4\)"):
        cache.lookup("ns", ["b", "z", "a", "b"], out=out[:2])


@pytest.mark.parametrize("with_cut", [False, True])
@pytest.mark.parametrize("labels", [False, True])
def test_the_layout_is_read_in_one_statement(tmp_path, with_cut, labels):
    """Version and tables come from one snapshot: one statement, whatever the file holds (read
    apart, a migration committed between two reads could pair an old version with new tables)."""
    from skmoe._cache_db import SCHEMA_VERSION, _layout, open_readonly

    path = tmp_path / "old.sqlite"
    _file_in_version_1_format(path, with_cut=with_cut, labels=labels)
    conn, layout = open_readonly(str(path))
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert _layout(conn, str(path), writable=False) == layout
    conn.close()
    # (SQLite traces the table-valued pragmas inside the statement as "-- PRAGMA ...")
    assert len([s for s in statements if not s.startswith("--")]) == 1, statements
    assert (layout.version, layout.has_cut, layout.has_labels, layout.has_crc) == (
        1, with_cut, labels, False)
    EmbeddingCache(path).lookup("ns", ["old"])  # opening for writing migrates
    conn, layout = open_readonly(str(path))
    conn.close()
    assert (layout.version, layout.has_cut, layout.has_labels, layout.has_crc) == (
        SCHEMA_VERSION, True, True, True)
