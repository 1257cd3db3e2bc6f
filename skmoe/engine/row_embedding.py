"""The int8 word-embedding table of the int4 mode: int8 rows with one fp32 scale per row.

``forward`` gathers the rows of the ids and dequantises only those; a pre-quantized folder's
rows can be read straight from its file (:class:`FileRows`) instead of a memory mapping.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

import torch
from torch import nn

from .int8 import _blank
from .memory import release_file_pages


class FileRows:
    """The rows of an int8 ``[V, D]`` table stored at ``offset`` in ``path``, read with ``pread``.

    Why not the memory-mapped tensor: gathering a few thousand scattered rows from a mapping
    makes the kernel map the cached pages around each one too ("fault-around", 64 kB a fault),
    which put 177 MB of the 192 MB table in RSS for 64 texts (measured, full-size int4 folder).
    Reading each needed row (``D`` bytes) costs a system call, a few milliseconds per batch. The
    file stays open, so the rows are those of the file that was loaded and checked.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, shape: tuple[int, int]) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self.fd)
        self.offset, (self.rows, self.width) = offset, shape

    def gather(self, ids: torch.Tensor) -> torch.Tensor:
        """int8 ``[len(ids), D]``: row ``ids[i]`` of the table in row ``i``."""
        if ids.numel() == 0:
            return torch.empty(0, self.width, dtype=torch.int8)
        unique, inverse = torch.unique(ids, return_inverse=True)
        first, last = int(unique[0]), int(unique[-1])
        if first < 0 or last >= self.rows:
            raise IndexError(f"index {last if last >= self.rows else first} is out of range "
                             f"for the embedding table of {self.rows} rows")
        width, base = self.width, self.offset
        data = b"".join(os.pread(self.fd, width, base + r * width) for r in unique.tolist())
        if len(data) != len(unique) * width:
            raise OSError("the model file was truncated after loading; load the model again")
        return torch.frombuffer(bytearray(data), dtype=torch.int8).view(-1, width)[inverse]


class Int8RowEmbedding(nn.Module):
    """Drop-in for a token ``nn.Embedding``: int8 rows, one fp32 scale per row; ``forward``
    gathers the rows of ``ids`` and dequantises only those.

    Portable tensors: ``qweight`` int8 [V, D] and ``scales`` float32 [V, 1]."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self._build(self.portable(embedding), embedding.padding_idx)

    @staticmethod
    def portable(embedding: nn.Embedding) -> dict[str, torch.Tensor]:
        w = embedding.weight.detach()
        q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
        scale = torch.empty(w.shape[0], 1, device=w.device)
        for start in range(0, len(w), 16384):  # in slices: no fp32 temporary of the whole table
            rows = w[start : start + 16384].float()
            s = rows.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
            q[start : start + 16384] = torch.round(rows / s).clamp_(-127, 127).to(torch.int8)
            scale[start : start + 16384] = s
            if w.is_contiguous() and not w.is_meta:  # the slice's mapped pages, once read
                release_file_pages([w[start : start + 16384]])
        return {"qweight": q, "scales": scale}

    @classmethod
    def from_portable(cls, tensors: dict[str, torch.Tensor], padding_idx: int | None = None,
                      rows_file: FileRows | None = None) -> Int8RowEmbedding:
        """The table from its portable tensors; with ``rows_file`` (the same rows in a file),
        ``forward`` reads the rows it needs from the file instead of the mapped ``qweight``."""
        obj = _blank(cls)
        obj._build(tensors, padding_idx)
        obj.rows_file = rows_file
        return obj

    def _build(self, t: dict[str, torch.Tensor], padding_idx: int | None) -> None:
        self.num_embeddings, self.embedding_dim = t["qweight"].shape
        self.padding_idx = padding_idx
        self.rows_file: FileRows | None = None
        self.register_buffer("q", t["qweight"], persistent=False)
        self.register_buffer("scale", t["scales"].float(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        q = self.q.index_select(0, flat) if self.rows_file is None else self.rows_file.gather(flat)
        rows = q.float().mul_(self.scale.index_select(0, flat))
        return rows.view(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"


def word_embeddings(backbone: nn.Module) -> tuple[nn.Embedding, Callable[[nn.Module], None]] | None:
    """The backbone's token-embedding table and its setter (``get_input_embeddings`` /
    ``set_input_embeddings`` of the backbone, or of the transformers model it wraps), or None."""
    for owner in (backbone, getattr(backbone, "model", None)):
        get = getattr(owner, "get_input_embeddings", None)
        put = getattr(owner, "set_input_embeddings", None)
        if callable(get) and callable(put):
            return get(), put
    return None
