"""Handing back the resident pages of memory-mapped weights (Linux ``madvise``).

In the encoder layer because the loaders need it too: the finite scan of a checkpoint
(:func:`~skmoe.encoder.loading.read_safetensors`) reads every float weight once, and without
handing those pages back a checkpoint would stay wholly resident even when its weights are
about to be converted (bfloat16, int8, int4). :mod:`skmoe.engine.memory` re-exports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
from collections.abc import Iterable

import torch

_MADV_DONTNEED = 4


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _clean_file_mappings() -> list[tuple[int, int]]:
    """``(start, end)`` of this process's private file mappings none of whose pages was written.

    From ``/proc/self/smaps``: a written page of a private mapping becomes an anonymous copy
    (``Anonymous`` > 0); in a mapping without one, every page still equals the file's bytes.
    """
    regions: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:  # a mapping's header line
                start, end = (int(x, 16) for x in head[0].split("-"))
                file_backed = head[4] != "0" and head[1].endswith("p")
                current = (start, end) if file_backed else None
                if current:
                    regions.append(current)
            elif head[0] == "Anonymous:" and current and head[1] != "0":
                regions.remove(current)
                current = None
    return regions


def release_file_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Drop the resident pages of CPU tensors that are views of a memory-mapped weights file.

    safetensors maps the checkpoint file, so every weight that was read stays resident (and in
    RSS) for as long as *any* tensor of that file lives, e.g. the embeddings. After int8
    conversion the fp32 originals are garbage, but their 1 GB of pages would stay. ``madvise
    (MADV_DONTNEED)`` on a private, never-written file mapping only unmaps the pages: a later read
    faults them in again from the file, unchanged, so this is safe even if someone still holds
    such a tensor. Tensors in anonymous memory, or in a mapping with written pages, are left
    alone. Linux only (elsewhere a no-op). Returns the number of bytes released.
    """
    if not sys.platform.startswith("linux") or not os.path.exists("/proc/self/smaps"):
        return 0
    spans = []
    for t in tensors:
        if t.device.type != "cpu" or t.layout != torch.strided or t.is_mkldnn:
            continue
        if t.is_contiguous():  # a slice of a weight: its own bytes only
            spans.append((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()))
        else:
            storage = t.untyped_storage()
            spans.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
    libc = _libc() if spans else None
    if libc is None:
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    regions = _clean_file_mappings()
    page, released = mmap.PAGESIZE, 0
    for lo, hi in spans:
        if not any(start <= lo and hi <= end for start, end in regions):
            continue
        first, last = -(-lo // page) * page, hi // page * page  # whole pages inside the tensor
        if last > first and libc.madvise(first, last - first, _MADV_DONTNEED) == 0:
            released += last - first
    return released


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``); a no-op elsewhere.

    Converting weights frees many temporaries of a few MB each (unpacked codes, fp32 slices).
    glibc serves them from its heap once its adaptive mmap threshold has risen, and keeps the
    freed pages: measured while loading the full-size int4 folder, 615 MB of RSS instead of 237
    MB. Called after each converted module, it keeps the peak near the live weights. It changes
    no allocator setting (unlike :func:`skmoe.engine.memory.reuse_freed_memory`).
    """
    libc = _libc() if sys.platform.startswith("linux") else None
    trim = getattr(libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False
