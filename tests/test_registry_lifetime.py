"""What the process-wide registry keeps, and for how long, over a long session.

A notebook tries one model or precision after another and one cache file per experiment: the
registry kept every encoder (2.3 GB after float32, int8 and int4 of e5-small, with every
estimator deleted) and 3 file descriptors per cache file (EMFILE from the ~339th under
``ulimit -n 1024``). It keeps the most recently used encoders and open caches only, without
losing what it is for: clones used one after another load the model once.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from skmoe import registry
from skmoe.estimator import MoEEmbeddingTransformer, WeightsChangedError

LABELLED = [(f"{word} number {i}", label) for i in range(10)
            for word, label in (("cats and dogs", 0), ("stocks and bonds", 1))]


@pytest.fixture
def limits():
    """Restore the registry's limits after the test."""
    before = registry.set_limits()
    yield
    registry.set_limits(**before)


def _loads() -> int:
    return sum(registry.LOAD_COUNTS.values())


def _copies(fast_moe: Path, tmp_path: Path, n: int) -> list[str]:
    return [str(shutil.copytree(fast_moe, tmp_path / f"model{i}")) for i in range(n)]


# -- encoders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [2, 1])  # the default, and the least that serves this
def test_cross_validation_loads_the_model_once(fast_moe, tmp_path, limits, keep):
    """Clones created and dropped one after another: the point of the registry."""
    registry.set_limits(encoders=keep)
    (folder,) = _copies(fast_moe, tmp_path, 1)
    texts, labels = zip(*LABELLED, strict=True)
    pipe = make_pipeline(MoEEmbeddingTransformer(folder, prompt="", verbose=0),
                         LogisticRegression())
    before = _loads()
    scores = cross_val_score(pipe, list(texts), list(labels), cv=5)
    assert len(scores) == 5 and _loads() - before == 1
    registry.clear(folder)


def test_encoders_nothing_uses_are_let_go_beyond_the_most_recent(fast_moe, tmp_path, limits):
    registry.set_limits(encoders=2)
    folders = _copies(fast_moe, tmp_path, 3)
    refs = []
    for folder in folders:  # a notebook trying one model after another
        est = MoEEmbeddingTransformer(folder, prompt="", verbose=0, center=False)
        est.fit_transform(["a text"])
        refs.append(weakref.ref(est.get_encoder()))
        del est
    gc.collect()
    assert [ref() is not None for ref in refs] == [False, True, True]
    names = {key[0] for key in registry.loaded()}
    assert str(Path(folders[0]).resolve()) not in names
    # the two most recent are still there: using them again loads nothing
    before = _loads()
    for folder in folders[1:]:
        MoEEmbeddingTransformer(folder, prompt="", verbose=0).fit_transform(["a text"])
    assert _loads() == before
    for folder in folders:
        registry.clear(folder)


def test_an_encoder_held_elsewhere_stays_shared(fast_moe, tmp_path, limits):
    registry.set_limits(encoders=1)
    first, second = _copies(fast_moe, tmp_path, 2)
    mine = registry.get_encoder(first)  # held by the caller
    registry.get_encoder(second)  # pushes `first` out of what the registry keeps
    before = _loads()
    assert registry.get_encoder(first) is mine and _loads() == before  # shared, not reloaded
    registry.clear(first)
    registry.clear(second)


def test_letting_go_gives_the_memory_back(fast_moe, tmp_path, limits, monkeypatch):
    """Freed weights and conversion temporaries stay in RSS until the C heap is trimmed
    (measured: 2.3 GB -> 1.3 GB by freeing alone, 0.5 GB after the trim)."""
    import skmoe.encoder.pages as pages

    trims = []
    monkeypatch.setattr(pages, "trim_heap", lambda: trims.append(1) or True)
    first, second = _copies(fast_moe, tmp_path, 2)
    registry.set_limits(encoders=1)
    ref = weakref.ref(registry.get_encoder(first))
    registry.get_encoder(second)  # `first` is let go
    assert ref() is None and len(trims) == 1
    ref = weakref.ref(registry.get_encoder(second))
    registry.clear()
    assert ref() is None and len(trims) == 2


def test_set_limits_checks_its_values(limits):
    with pytest.raises(ValueError, match="encoders must be an integer >= 0"):
        registry.set_limits(encoders=-1)
    with pytest.raises(ValueError, match="open_caches must be an integer >= 0"):
        registry.set_limits(open_caches=1.5)
    assert registry.set_limits(encoders=3) == {"encoders": 2, "open_caches": 8}
    assert registry.set_limits()["encoders"] == 3


# -- weight files changed under a loaded encoder ---------------------------------------------------
def _new_weights(fast_moe: Path, tmp_path: Path) -> Path:
    """Other random weights, same layout (so the same file size), and their own output."""
    from _moe_factory import make_random_moe

    other = Path(shutil.copytree(fast_moe, tmp_path / "other"))
    make_random_moe(other, seed=7, vocab_size=30528)
    return other


@pytest.mark.parametrize("cache", [False, True])
def test_weights_written_over_in_place_are_loaded_again(fast_moe, tmp_path, cache):
    (folder,) = _copies(fast_moe, tmp_path, 1)
    other = _new_weights(fast_moe, tmp_path)
    assert os.path.getsize(other / "model.safetensors") == os.path.getsize(
        Path(folder) / "model.safetensors")
    texts = [text for text, _ in LABELLED[:6]]
    kw = dict(prompt="", verbose=0, center=False,
              cache=str(tmp_path / "c.sqlite") if cache else None)
    fitted = MoEEmbeddingTransformer(folder, **kw).fit(texts)
    old = fitted.transform(texts)
    expected = MoEEmbeddingTransformer(str(other), **kw).fit_transform(texts)
    # a fine-tune saved over the folder: same inode, the loaded weights are a map of this file
    shutil.copyfile(other / "model.safetensors", Path(folder) / "model.safetensors")

    before = _loads()
    new = MoEEmbeddingTransformer(folder, **kw).fit_transform(texts)  # the cell re-run
    np.testing.assert_allclose(new, expected, atol=1e-5)
    assert not np.allclose(new, old)
    assert _loads() - before == (0 if cache else 1)  # with a cache: the vectors of those bytes
    with pytest.raises(WeightsChangedError):  # fitted on the old weights: no silent mix
        fitted.transform(texts)
    registry.clear(folder)
    registry.clear(str(other))


def test_a_smaller_file_written_over_in_place_is_not_a_crash(fast_moe, tmp_path):
    """The next call on the same estimator read weights past the new end of the mapped file:
    SIGBUS, a dead kernel. It now loads the file again, which says what is wrong with it."""
    (folder,) = _copies(fast_moe, tmp_path, 1)
    code = f"""
import os
from skmoe.estimator import MoEEmbeddingTransformer
est = MoEEmbeddingTransformer({folder!r}, prompt="", verbose=0, center=False)
est.fit_transform(["a first text"])
weights = os.path.join({folder!r}, "model.safetensors")
with open(weights, "r+b") as fh:
    fh.truncate(os.path.getsize(weights) // 2)
try:
    est.transform(["a text never seen before", "another new one"])
except Exception as exc:
    print("refused:", type(exc).__name__)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "refused:" in proc.stdout


def test_unchanged_files_are_not_loaded_again(fast_moe, tmp_path):
    (folder,) = _copies(fast_moe, tmp_path, 1)
    encoder = registry.get_encoder(folder)
    os.utime(Path(folder) / "config.json")  # not a weight file
    before = _loads()
    assert registry.get_encoder(folder) is encoder and _loads() == before
    registry.clear(folder)


# -- cache handles -----------------------------------------------------------------------------
def _open_fds(folder: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder))
        except OSError:
            pass
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc")
def test_idle_cache_handles_keep_no_files_open(fast_moe, tmp_path, limits):
    registry.set_limits(open_caches=2)
    caches = tmp_path / "caches"
    first = None
    for i in range(6):  # one cache file per experiment
        est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0, center=False,
                                      cache=str(caches / f"exp{i}.sqlite"))
        est.fit_transform(["a text", "another"])
        first = first or est
        assert _open_fds(caches) <= 2 * 3  # the 2 most recent keep their 3 files each
    shutil.rmtree(caches / "exp0.sqlite", ignore_errors=True)
    # the first one's handle is the same object (counts kept), and works again
    assert clone(first)._open_cache() is first._open_cache()
    stats = first.cache_stats()
    assert (stats.entries, stats.misses) == (2, 2)
    first.transform(["a text"])
    assert first.cache_stats().hits == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc")
def test_deleted_cache_folders_free_their_disk_space(fast_moe, tmp_path):
    """Files of caches no longer used were held open (space not reclaimed after rm)."""
    caches = tmp_path / "caches"
    for i in range(12):  # more than the 8 kept open
        MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0, center=False,
                                cache=str(caches / f"exp{i}.sqlite")).fit_transform(["x"])
    assert _open_fds(caches) <= 8 * 3
