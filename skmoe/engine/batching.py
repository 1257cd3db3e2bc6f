"""Batch planning: sort by token length, cut batches by row count and by a padded-token budget;
packing a batch's tokens back to back (:func:`pack`) for the model.

Token ids are kept compactly (:class:`TokenRows`: one flat int32 array plus offsets) so that
holding the ids of many thousands of texts costs 4 bytes a token, not a Python int each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Batch:
    """Rows of one forward pass (indices into the caller's list), longest first."""

    rows: np.ndarray
    max_len: int

    @property
    def padded_tokens(self) -> int:
        return len(self.rows) * self.max_len


class TokenRows(Sequence):
    """Token-id rows of different lengths in one flat ``int32`` array.

    Behaves like a read-only sequence of 1-d arrays; ``lengths`` gives every row's length.
    """

    def __init__(self, rows: Sequence[Sequence[int]]) -> None:
        if isinstance(rows, TokenRows):
            self.flat, self.offsets = rows.flat, rows.offsets
            return
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        self.offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.flat = np.empty(int(self.offsets[-1]), dtype=np.int32)
        for i, r in enumerate(rows):
            self.flat[self.offsets[i] : self.offsets[i + 1]] = r

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self.flat[self.offsets[i] : self.offsets[i + 1]]


def plan_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    max_tokens: int | None = None,
    exact: bool = False,
    max_padding: float | None = None,
) -> list[Batch]:
    """Group rows of similar token length.

    Rows are sorted by length (longest first, so the first batch shows the peak memory); a batch
    closes when it has ``batch_size`` rows or when adding a row would make
    ``rows * longest_row`` exceed ``max_tokens``. A single row longer than the budget still gets
    a batch of its own. Sorting by *token* length (not characters) keeps padding to a few percent
    even across scripts whose characters-per-token differ fourfold. ``exact=True`` also closes a
    batch where the length changes: no padding at all. ``max_padding`` closes a batch before its
    padded share of tokens would pass that fraction (for backbones that compute padded tokens).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[Batch] = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        stop = start + batch_size
        if max_tokens is not None:
            stop = min(stop, start + max(1, max_tokens // max(longest, 1)))
        stop = min(stop, n)
        if exact:
            same = lengths[order[start:stop]] == longest
            stop = start + int(np.argmin(same)) if not same.all() else stop
        elif max_padding is not None:
            # rows are sorted longest first, so the padding share only grows as rows are added
            real = np.cumsum(lengths[order[start:stop]])
            share = 1.0 - real / (np.arange(1, len(real) + 1) * max(longest, 1))
            stop = start + max(1, int(np.searchsorted(share, max_padding, side="right")))
        batches.append(Batch(order[start:stop], longest))
        start = stop
    return batches


def split_batch(batch: Batch, lengths: np.ndarray, max_tokens: int) -> list[Batch]:
    """Cut ``batch`` into consecutive pieces of at most ``max_tokens`` padded tokens (>= 1 row)."""
    per = max(1, max_tokens // max(batch.max_len, 1))
    if per >= len(batch.rows):
        return [batch]
    pieces = []
    for i in range(0, len(batch.rows), per):
        rows = batch.rows[i : i + per]
        pieces.append(Batch(rows, int(lengths[rows].max())))
    return pieces


def collate(
    ids: Sequence[Sequence[int]], batch: Batch, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` (int64) for one batch."""
    B, S = len(batch.rows), batch.max_len
    if isinstance(ids, TokenRows):
        starts = ids.offsets[batch.rows]
        lens = ids.offsets[batch.rows + 1] - starts
        mask = np.arange(S)[None, :] < lens[:, None]
        where = np.minimum(starts[:, None] + np.arange(S)[None, :], max(len(ids.flat) - 1, 0))
        tokens = np.where(mask, ids.flat[where] if len(ids.flat) else pad_id, pad_id)
        return torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    input_ids = torch.full((B, S), pad_id, dtype=torch.long)
    mask_t = torch.zeros((B, S), dtype=torch.long)
    for j, r in enumerate(batch.rows):
        row = ids[r]
        input_ids[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask_t[j, : len(row)] = 1
    return input_ids, mask_t


def pack(ids: TokenRows, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The batch's tokens back to back: ``(input_ids [T] int64, cu_seqlens [B+1] int32,
    max_seqlen)``, built on the host from the lengths :class:`TokenRows` already holds."""
    starts = ids.offsets[batch.rows]
    lengths = ids.offsets[batch.rows + 1] - starts
    cu = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    # position t of the packed batch is token (t - cu[b]) of row b: gather in one vectorized step
    within = np.arange(cu[-1], dtype=np.int64) - np.repeat(cu[:-1], lengths)
    flat = ids.flat[np.repeat(starts, lengths) + within].astype(np.int64)
    return torch.from_numpy(flat), torch.from_numpy(cu.astype(np.int32)), int(batch.max_len)


def padding_fraction(batches: Sequence[Batch], lengths: Sequence[int]) -> float:
    padded = sum(b.padded_tokens for b in batches)
    return 1.0 - float(np.sum(lengths)) / padded if padded else 0.0
