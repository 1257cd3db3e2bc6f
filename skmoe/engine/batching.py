"""Batch planning: sort by token length, cut batches by row count and by a padded-token budget."""

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


def plan_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> list[Batch]:
    """Group rows of similar token length.

    Rows are sorted by length (longest first, so the first batch shows the peak memory); a batch
    closes when it has ``batch_size`` rows or when adding a row would make
    ``rows * longest_row`` exceed ``max_tokens``. A single row longer than the budget still gets
    a batch of its own.
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
        batches.append(Batch(order[start:stop], longest))
        start = stop
    return batches


def collate(
    ids: Sequence[Sequence[int]], batch: Batch, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` for one batch."""
    B, S = len(batch.rows), batch.max_len
    input_ids = torch.full((B, S), pad_id, dtype=torch.long)
    mask = torch.zeros((B, S), dtype=torch.long)
    for j, r in enumerate(batch.rows):
        row = ids[r]
        input_ids[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[j, : len(row)] = 1
    return input_ids, mask


def padding_fraction(batches: Sequence[Batch], lengths: Sequence[int]) -> float:
    padded = sum(b.padded_tokens for b in batches)
    return 1.0 - float(np.sum(lengths)) / padded if padded else 0.0
