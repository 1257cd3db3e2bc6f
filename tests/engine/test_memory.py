"""Memory stays flat while streaming many texts to disk (cheap version of the benchmark's
2k-vs-20k measurement, which is in benchmarks/memory_flat.py and benchmarks/RESULTS.md), and the
pages of replaced memory-mapped weights are handed back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _engine_helpers import load_benchmark

from skmoe.engine import memory
from skmoe.engine.memory import release_file_pages


def load_bench():
    return load_benchmark("memory_flat")


@pytest.mark.slow
def test_peak_rss_flat_from_250_to_1250_texts(random_moe_xlmr_path, sib200_dir):
    # Five times the chunks (the repo's SIB-200 sample holds 1,408 distinct interleaved texts).
    small, large = load_bench().measure(random_moe_xlmr_path, [250, 1250], sib200_dir,
                                        chunk_size=250, threads=1)
    assert large["computed"] == 5 * small["computed"]  # really five times the work
    assert large["npy_bytes"] == 5 * small["npy_bytes"] - 4 * 128  # one header per file
    assert large["peak_rss_mb"] <= 1.10 * small["peak_rss_mb"], (small, large)


# -- handing back the pages of memory-mapped weights ----------------------------------------------

linux_only = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")


def mapped_rss(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:
                inside = len(head) >= 6 and head[5] == str(path)
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


@pytest.fixture
def mapped_tensor(tmp_path):
    """A 2 MB tensor read through safetensors' memory map, every page touched, and its values."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(512, 1024)}, str(path))
    with safe_open(str(path), framework="pt") as fh:
        t = fh.get_tensor("w")
    return path, t, t.clone()


@linux_only
def test_release_file_pages_unmaps_pages_and_keeps_values(mapped_tensor):
    path, t, values = mapped_tensor
    before = mapped_rss(path)
    assert before >= t.nbytes // 2  # the clone read every page
    released = release_file_pages([t])
    assert released >= t.nbytes - 2 * 4096
    assert mapped_rss(path) <= before - released + 8192
    assert torch.equal(t, values)  # read back from the file, unchanged


@linux_only
def test_release_file_pages_leaves_anonymous_memory_alone():
    t = torch.randn(512, 1024)
    values = t.clone()
    assert release_file_pages([t]) == 0
    assert torch.equal(t, values)


@linux_only
def test_release_file_pages_leaves_a_written_mapping_alone(mapped_tensor):
    _, t, _ = mapped_tensor
    t[100, 100] = 42.0  # a private copy of that page now differs from the file
    assert release_file_pages([t]) == 0
    assert t[100, 100] == 42.0


def test_malloc_tuning_is_opt_in(monkeypatch, random_moe_xlmr_path):
    """Constructing an Engine leaves the process's allocator alone unless SKMOE_TUNE_MALLOC asks."""
    from skmoe.encoder import load_encoder
    from skmoe.engine import Engine

    calls = []
    monkeypatch.setattr(memory, "reuse_freed_memory", lambda *a: calls.append(a) or True)
    monkeypatch.setattr(memory, "_DONE", False)
    enc = load_encoder(random_moe_xlmr_path, device="cpu")
    monkeypatch.delenv(memory.OPT_IN_ENV, raising=False)
    Engine(enc)
    for no in ("0", "false", "No", "off", ""):  # "false" / "no" / "off" turned it on
        monkeypatch.setenv(memory.OPT_IN_ENV, no)
        Engine(enc)
    monkeypatch.setenv(memory.OPT_IN_ENV, "maybe")
    with pytest.warns(UserWarning, match="neither yes .* nor no .*: left off"):
        Engine(enc)
    assert calls == []
    for yes in ("1", "true", "ON"):
        monkeypatch.setenv(memory.OPT_IN_ENV, yes)
        Engine(enc)
    assert len(calls) == 3
