"""The process's limits are not the cache file's faults.

A full disk or a file-size limit makes SQLite say "disk I/O error" (ENOSPC/EFBIG on the WAL or
its index); that was called damage, with reads stopped and the advice to delete a sound file.
Running out of file descriptors makes SQLite say "unable to open database file"; that was
called a permission problem and stopped the cache for the rest of the process. Each case runs
in a child process under a real ``setrlimit``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from skmoe._cache_db import diagnose
from skmoe.cache import EmbeddingCache

TEXTS = [f"text number {i}" for i in range(40)]

_FILE_SIZE = textwrap.dedent("""
    import json, resource, sys, warnings
    import numpy as np
    from skmoe.cache import CacheUnavailableWarning, EmbeddingCache
    path, limit = sys.argv[1], int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ
    cache = EmbeddingCache(path)
    many = [f"new text {i}" for i in range(3000)]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cache.put_many("other", many, np.ones((len(many), 64), np.float32))
        found, got = cache.lookup("ns", [f"text number {i}" for i in range(40)])
    print(json.dumps({"hits": int(found.sum()), "sum": float(got.sum()), "warnings": [
        str(w.message) for w in record if issubclass(w.category, CacheUnavailableWarning)]}))
""")


def _run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def sound_cache(tmp_path: Path) -> Path:
    path = tmp_path / "emb.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many("ns", TEXTS, np.ones((len(TEXTS), 8), np.float32))
    cache.close()
    return path


@pytest.mark.parametrize("where", ["writing", "opening"])
def test_a_file_size_limit_stops_writing_only_and_never_calls_the_file_damaged(sound_cache,
                                                                               where):
    """At the file's size every write fails; under the shared-memory index's 32 KiB even the
    read-write open does: either way the 40 rows are still served, one warning says what
    happened, and nothing advises deleting the file."""
    size = sound_cache.stat().st_size
    out = _run(_FILE_SIZE, str(sound_cache), str(size if where == "writing" else 16384))
    assert out["hits"] == len(TEXTS) and out["sum"] == len(TEXTS) * 8
    assert len(out["warnings"]) == 1, out["warnings"]
    message = out["warnings"][0]
    assert "size limit" in message and "skmoe cache check" in message
    assert "damaged" not in message and "delete" not in message
    assert EmbeddingCache(sound_cache).lookup("ns", TEXTS)[0].all()  # and it is sound


_DESCRIPTORS = textwrap.dedent("""
    import json, os, resource, sys, warnings
    import numpy as np
    from skmoe.cache import CacheUnavailableWarning, EmbeddingCache
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    cache = EmbeddingCache(sys.argv[1])
    texts = [f"row {i}" for i in range(10)]
    held = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        while True:  # use up every descriptor
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        cache.put_many("ns", texts[:5], np.ones((5, 4), np.float32))  # goes without the cache
        for fd in held:
            os.close(fd)
        cache.put_many("ns", texts[5:], np.ones((5, 4), np.float32))  # tried again: stored
        found, _ = cache.lookup("ns", texts)
    print(json.dumps({"found": found.tolist(), "warnings": [
        str(w.message) for w in record if issubclass(w.category, CacheUnavailableWarning)]}))
""")


def test_running_out_of_descriptors_skips_the_cache_for_that_call_only(tmp_path):
    out = _run(_DESCRIPTORS, str(tmp_path / "emb.sqlite"))
    assert out["found"] == [False] * 5 + [True] * 5  # the later call was cached
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "file descriptors" in out["warnings"][0] and "ulimit -n" in out["warnings"][0]
    assert "writable" not in out["warnings"][0]


def test_a_read_only_cache_names_the_side_files_in_its_fix(sound_cache):
    """SQLite gives the -wal and -shm files the database's mode: after ``chmod 0444`` and back,
    a 0444 -shm still stopped every write, and the fix named only the file and its folder."""
    import sqlite3

    found = diagnose(sqlite3.OperationalError("attempt to write a readonly database"),
                     str(sound_cache))
    assert "-shm" in found.fix and not found.unusable and not found.damaged
