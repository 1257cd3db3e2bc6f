"""Process memory settings and measurements for the engine on CPU.

Two concerns: keeping freed activation blocks for reuse (:func:`reuse_freed_memory`) and handing
back the pages of memory-mapped weights that a conversion has replaced (:func:`release_file_pages`).

glibc hands every allocation above 128 KiB (adaptively up to 32 MiB) straight to ``mmap`` and
returns it with ``munmap`` on free, so each activation tensor of a forward pass (tens of MB) is
page-faulted in afresh. On the 2-core VMs this project is measured on, that made an elementwise op
on a [4096, 3072] fp32 tensor 6x slower (145 ms vs 24 ms, GELU 178 vs 50 ms). Raising the mmap and
trim thresholds keeps freed blocks in the heap for reuse; the peak RSS is unchanged (the same
blocks are reused), only memory is no longer handed back to the OS between batches.

The setting is process-wide, so it is opt-in: call :func:`reuse_freed_memory` (the CLI can offer
it as a flag), or set ``SKMOE_TUNE_MALLOC=1`` and every CPU :class:`~skmoe.engine.Engine` applies
it when constructed (:func:`reuse_freed_memory_if_asked`). Nothing changes the allocator otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import resource
import sys
from collections.abc import Iterable

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MADV_DONTNEED = 4
_DONE = False

#: Set ``SKMOE_TUNE_MALLOC=1`` to have CPU engines keep freed blocks for reuse.
OPT_IN_ENV = "SKMOE_TUNE_MALLOC"


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def reuse_freed_memory(threshold: int = 1 << 30) -> bool:
    """Ask glibc to keep freed blocks up to ``threshold`` bytes for reuse (once per process).

    Process-wide: glibc's ``mmap`` and trim thresholds for the whole process (measured: CPU
    elementwise ops on activation-sized tensors up to 6x faster on small VMs; memory is no longer
    handed back to the OS between batches). Returns whether the setting is in effect. A no-op off
    Linux/glibc.
    """
    global _DONE
    if _DONE:
        return True
    if not sys.platform.startswith("linux"):
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)  # musl and others have no mallopt
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
    _DONE = ok
    return ok


def reuse_freed_memory_if_asked() -> bool:
    """:func:`reuse_freed_memory` when ``SKMOE_TUNE_MALLOC`` is set (not ``0``); else nothing."""
    if os.environ.get(OPT_IN_ENV, "") in ("", "0"):
        return _DONE
    return reuse_freed_memory()


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


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` survives ``exec`` and so
    reports the parent's size in a freshly spawned child.
    """
    status = "/proc/self/status"
    if os.path.exists(status):
        with open(status) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
