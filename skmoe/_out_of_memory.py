"""Whether an error is the machine running out of memory: one predicate for the engine (which
halves its batches on it) and the command line (which calls it the machine's limit, exit 1, not
a bug). A leaf module: it imports nothing, torch included, so that the command line can classify
an error without importing torch."""

from __future__ import annotations

import sys


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure: ``MemoryError``; torch's ``OutOfMemoryError`` (CUDA's; a
    ``RuntimeError``, without the words below); or a ``RuntimeError`` of torch's CPU allocator
    ("DefaultCPUAllocator: can't allocate memory") or of mapping a file ("unable to mmap ...:
    Cannot allocate memory")."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")  # an error of torch's class means torch is imported
    if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "allocate memory" in str(error).lower()
