"""Subprocess worker for tests/test_cache.py: writes deterministic rows into an EmbeddingCache.

Usage: python writer.py PATH NAMESPACE START STOP BATCH [GO_FILE [READY_FILE [WORKERS]]]

Writes texts ``row-{i}`` for i in [START, STOP) (STOP = -1: forever) in transactions of BATCH rows,
printing the number of rows committed so far and the wall time after each commit (flushed). If GO_FILE is given, waits
until it exists first, so two workers start writing at the same moment; READY_FILE is created once
the imports are done, so the test can give the signal only when every worker is waiting for it.
With WORKERS, each worker, once its first transaction is committed, waits until all WORKERS have
committed theirs: then their writing overlaps in time however the start goes (a worker done in
45 ms while the other still waited on SQLite's busy handler was seen in CI).
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
import time

import numpy as np

DIM = 24


def row_text(i: int) -> str:
    return f"row-{i}"


def row_vector(i: int, dim: int = DIM) -> np.ndarray:
    """The vector stored for row ``i``: random float32 bits seeded by ``i``."""
    return np.random.default_rng(i).standard_normal(dim).astype(np.float32)


def load_cache_module():
    """Import skmoe/cache.py without skmoe/__init__.py: the cache needs only stdlib + numpy (and
    its sibling modules), while ``import skmoe`` pulls in torch (~5 s per process here)."""
    import importlib
    import types
    from pathlib import Path

    package = types.ModuleType("skmoe_cache_worker")
    package.__path__ = [str(Path(__file__).resolve().parents[2] / "skmoe")]
    sys.modules[package.__name__] = package
    return importlib.import_module("skmoe_cache_worker.cache")


def main(argv: list[str]) -> None:
    EmbeddingCache = load_cache_module().EmbeddingCache
    path, namespace, start, stop, batch = argv[:5]
    start, stop, batch = int(start), int(stop), int(batch)
    if len(argv) > 6:
        open(argv[6], "w").close()
    if len(argv) > 5:
        while not os.path.exists(argv[5]):
            time.sleep(0.001)
    cache = EmbeddingCache(path)
    indices = itertools.count(start) if stop < 0 else iter(range(start, stop))
    committed = 0
    workers = int(argv[7]) if len(argv) > 7 else 1
    while True:
        chunk = list(itertools.islice(indices, batch))
        if not chunk:
            break
        cache.put_many(
            namespace, [row_text(i) for i in chunk], np.stack([row_vector(i) for i in chunk])
        )
        committed += len(chunk)
        print(committed, time.time(), flush=True)
        if committed == len(chunk) and workers > 1:  # after the first transaction
            open(f"{argv[5]}.first-{start}", "w").close()
            while len(glob.glob(f"{glob.escape(argv[5])}.first-*")) < workers:
                time.sleep(0.001)
    cache.close()


if __name__ == "__main__":
    main(sys.argv[1:])
