"""Cache faults never cost the user's results (issue 19, item 2).

A damaged, read-only or full cache file, or a cache path that is a folder or /dev/null: one
CacheUnavailableWarning naming the file, the problem and the fix, then the work goes on without
that side of the cache. ``skmoe cache check`` reports a damaged file; ``skmoe cache clear`` removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from skmoe.cache import CacheUnavailableWarning, EmbeddingCache

DIM = 8
TEXTS = [f"text number {i}" for i in range(40)]


def vectors(n: int = len(TEXTS)) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)


def filled(path: Path, n: int = len(TEXTS)) -> EmbeddingCache:
    cache = EmbeddingCache(path)
    cache.put_many("ns", TEXTS[:n], vectors()[:n])
    cache.describe("ns", model="m")
    cache.close()
    return cache


def cache_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, CacheUnavailableWarning)]


def damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    else:  # pages overwritten with garbage, the header kept
        with open(path, "r+b") as fh:
            fh.seek(100)
            fh.write(os.urandom(size - 100))


@pytest.fixture
def damaged(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "emb.sqlite"
    big = [f"text {i}" for i in range(3000)]  # several pages: damage hits the tables' b-trees
    cache = EmbeddingCache(path)
    cache.put_many("ns", big, np.ones((len(big), DIM), np.float32))
    cache.vacuum()
    cache.close()
    damage(path, request.param)
    return path


@pytest.mark.parametrize("damaged", ["truncated", "overwritten"], indirect=True)
def test_damaged_file_one_warning_then_everything_misses_and_nothing_raises(damaged):
    cache = EmbeddingCache(damaged)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        found, got = cache.lookup("ns", TEXTS)
        cache.describe("ns", model="m")
        cache.put_many("ns", TEXTS, vectors())
        found2, _ = cache.lookup("ns", TEXTS)
        stats = cache.stats()
    messages = cache_warnings(record)
    assert len(messages) == 1, messages
    assert str(damaged) in messages[0] and "damaged" in messages[0]
    assert "skmoe cache clear" in messages[0]
    assert not found.any() and not found2.any() and len(got) == 0
    assert stats.misses == 2 * len(TEXTS)


@pytest.mark.parametrize("kind", ["folder", "devnull", "unwritable-parent"])
def test_unusable_path_warns_once_naming_it(tmp_path, kind):
    if kind == "folder":
        path = tmp_path / "a-folder"
        path.mkdir()
        expect = "folder"
    elif kind == "devnull":
        path = Path(os.devnull)
        expect = "not a regular file"
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "emb.sqlite"  # its parent is a file
        expect = "emb.sqlite"
    cache = EmbeddingCache(path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        found, _ = cache.lookup("ns", TEXTS)
        cache.put_many("ns", TEXTS, vectors())
        cache.describe("ns", model="m")
    messages = cache_warnings(record)
    assert len(messages) == 1, messages
    assert str(path) in messages[0] and expect in messages[0] and "Fix:" in messages[0]
    assert not found.any()
    assert kind != "devnull" or not Path(os.devnull + "-journal").exists()  # nothing created


def _limit_pages(monkeypatch: pytest.MonkeyPatch, pages: int) -> None:
    """A real SQLITE_FULL: SQLite refuses to grow the file past ``pages`` pages."""
    import skmoe._cache_file as cache_file

    real = cache_file.open_connection

    def limited(path: str, timeout: float):
        conn, layout = real(path, timeout)
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn, layout

    monkeypatch.setattr(cache_file, "open_connection", limited)


def test_full_disk_stops_writing_once_and_reads_go_on(tmp_path, monkeypatch):
    path = tmp_path / "emb.sqlite"
    filled(path, n=5)
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    _limit_pages(monkeypatch, pages)
    cache = EmbeddingCache(path)
    many = [f"new text {i}" for i in range(5000)]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cache.put_many("ns", many, np.ones((len(many), DIM), np.float32))
        cache.put_many("ns", many, np.ones((len(many), DIM), np.float32))
        found, got = cache.lookup("ns", TEXTS[:5])
    messages = cache_warnings(record)
    assert len(messages) == 1, messages
    assert str(path) in messages[0] and "full" in messages[0] and "free space" in messages[0]
    assert found.all()
    np.testing.assert_array_equal(got, vectors()[:5])  # reads are unaffected


def _fill_to_the_limit(path: Path) -> int:
    """Fill the file's free space under a page limit; return that limit (the "disk" is full)."""
    conn = sqlite3.connect(path)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for size in (4096, 512, 64, 8):
        with contextlib.suppress(sqlite3.OperationalError):
            for i in range(10_000):
                conn.execute("INSERT INTO namespaces (namespace, dim) VALUES (?, 1)",
                             (f"pad-{size}-{i}-" + "x" * size,))
                conn.commit()
    conn.close()
    return pages


def test_full_disk_from_the_start_still_gives_results(tmp_path, monkeypatch, fast_moe):
    """'every later run fails before computing anything': describe() wrote first and raised."""
    from skmoe import MoEEmbeddingTransformer

    path = tmp_path / "emb.sqlite"
    filled(path, n=1)
    expected = MoEEmbeddingTransformer(str(fast_moe), device="cpu").fit([]).transform(TEXTS)
    _limit_pages(monkeypatch, _fill_to_the_limit(path))
    est = MoEEmbeddingTransformer(str(fast_moe), device="cpu", cache=EmbeddingCache(path))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = est.fit([]).transform(TEXTS)
        again = est.transform(TEXTS)
    messages = cache_warnings(record)
    assert len(messages) == 1 and "disk is full" in messages[0], messages
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(again, expected)


@contextlib.contextmanager
def _mount_tmpfs(size: str):
    """A small tmpfs (root with mount permission only); yields its folder or None."""
    folder = Path("/tmp") / f"skmoe-tmpfs-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    mounted = False
    try:
        if os.geteuid() == 0 and shutil.which("mount"):
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                      str(folder)], capture_output=True).returncode == 0
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        folder.rmdir()


def test_full_tmpfs_when_one_can_be_mounted():
    with _mount_tmpfs("1m") as folder:
        if folder is None:
            pytest.skip("mounting a tmpfs needs root and mount permission (the max_page_count "
                        "test above covers SQLITE_FULL everywhere)")
        cache = EmbeddingCache(folder / "emb.sqlite")
        many = [f"text {i}" for i in range(2000)]  # ~2000 x 3 kB > 1 MB
        with pytest.warns(CacheUnavailableWarning, match="full"):
            cache.put_many("ns", many, np.ones((len(many), 768), np.float32))
        found, _ = cache.lookup("ns", many[:10])
        cache.close()
        assert found.sum() in (0, 10)  # committed chunks are whole


@contextlib.contextmanager
def _read_only(folder: Path):
    """Make ``folder`` read-only for this process: permissions, or a read-only bind mount as
    root (who ignores permissions). Yields False when neither is possible."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        for p in folder.iterdir():
            p.chmod(0o444)
        folder.chmod(0o555)
        try:
            yield True
        finally:
            folder.chmod(mode)
        return
    ok = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)],
                        capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_read_only_location_reads_everything_and_warns_only_when_writing(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "emb.sqlite"
    filled(path)
    assert sorted(os.listdir(folder)) == ["emb.sqlite"]  # no -wal/-shm left: the hard case
    with _read_only(folder) as ok:
        if not ok:
            pytest.skip("cannot make a folder read-only here (root without mount permission)")
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        cache = EmbeddingCache(path)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            found, got = cache.lookup("ns", TEXTS)
            assert found.all()
            np.testing.assert_array_equal(got, vectors())
            assert cache.stats().entries == len(TEXTS) and cache.labels() == {"ns": {"model": "m"}}
        assert cache_warnings(record) == []  # everything cached: nothing to say
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            cache.describe("ns", model="m2")
            cache.put_many("ns", ["new"], np.ones((1, DIM), np.float32))
            found, _ = cache.lookup("ns", TEXTS + ["new"])
        messages = cache_warnings(record)
        assert len(messages) == 1, messages
        assert str(path) in messages[0] and "cannot be written" in messages[0]
        assert "writable" in messages[0]
        assert found[:-1].all() and not found[-1]  # reads continue after the write fault
        cache.close()


# -- the CLI on a damaged file ------------------------------------------------------------------


@pytest.mark.parametrize("damaged", ["truncated", "overwritten"], indirect=True)
def test_cli_check_reports_and_clear_removes_a_damaged_file(damaged, capsys):
    from skmoe.cli import main

    assert main(["cache", "check", str(damaged)]) == 1
    out = capsys.readouterr().out
    assert str(damaged) in out and "damaged" in out and "skmoe cache clear" in out
    assert main(["cache", "stats", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert str(damaged) in err and "skmoe cache clear" in err and "Traceback" not in err
    assert main(["cache", "clear", str(damaged)]) == 0
    assert "removed the damaged cache file" in capsys.readouterr().out
    assert not damaged.exists() and not Path(str(damaged) + "-wal").exists()


def test_cli_check_on_a_sound_file_and_on_a_damaged_row(tmp_path, capsys):
    from skmoe.cli import main

    path = tmp_path / "emb.sqlite"
    filled(path)
    assert main(["cache", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE embeddings SET vector = ? WHERE rowid = 1",
                    (np.full(DIM, np.nan, "<f4").tobytes(),))
    raw.close()
    assert main(["cache", "check", str(path)]) == 1
    assert "1 damaged vector" in capsys.readouterr().out
    with sqlite3.connect(path) as raw:  # finite values, but not the bytes that were stored
        raw.execute("UPDATE embeddings SET vector = ? WHERE rowid = 2",
                    (np.full(DIM, 3.0, "<f4").tobytes(),))
    raw.close()
    assert main(["cache", "check", str(path)]) == 1
    assert "2 damaged vector(s) (wrong size, not finite or not matching its checksum" in (
        capsys.readouterr().out)
    assert main(["cache", "clear", str(path)]) == 0  # a readable file is emptied, not removed
    assert path.exists() and len(EmbeddingCache(path)) == 0


@pytest.mark.parametrize("damaged", ["truncated"], indirect=True)
def test_transform_through_a_damaged_cache_gives_the_same_vectors(damaged, fast_moe):
    from skmoe import MoEEmbeddingTransformer

    expected = MoEEmbeddingTransformer(str(fast_moe), device="cpu").fit([]).transform(TEXTS)
    est = MoEEmbeddingTransformer(str(fast_moe), device="cpu", cache=EmbeddingCache(damaged))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = est.fit([]).transform(TEXTS)
        stats = est.cache_stats()
    messages = cache_warnings(record)
    assert len(messages) == 1 and str(damaged) in messages[0], messages
    np.testing.assert_array_equal(got, expected)
    assert stats.misses == len(TEXTS) and stats.entries == 0


def test_an_old_file_in_a_read_only_location_is_read_at_its_version(tmp_path):
    from test_cache import _file_in_version_1_format

    folder = tmp_path / "ro-old"
    folder.mkdir()
    path = folder / "old.sqlite"
    _file_in_version_1_format(path, with_cut=False)
    with _read_only(folder) as ok:
        if not ok:
            pytest.skip("cannot make a folder read-only here (root without mount permission)")
        cache = EmbeddingCache(path)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            found, got, cut = cache.lookup("ns", ["old"], with_cut=True)
        assert cache_warnings(record) == []
        assert found.all() and cut.tolist() == [-1] and (got == 1).all()
        with pytest.warns(CacheUnavailableWarning, match="cannot be written"):
            cache.put_many("ns", ["new"], np.ones((1, 2), np.float32))
        cache.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1  # untouched
    raw.close()


def test_cli_clear_never_removes_a_sound_sqlite_file_of_someone_else(tmp_path, capsys):
    from skmoe.cli import main

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE mine (x)")
    raw.close()
    assert main(["cache", "clear", str(other)]) == 1
    err = capsys.readouterr().err
    assert "not a skmoe cache" in err and "left as it is" in err and "Traceback" not in err
    assert other.exists()
    with sqlite3.connect(other) as raw:
        assert raw.execute("SELECT name FROM sqlite_master").fetchall() == [("mine",)]
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    raw.close()
