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

#: Batches of full-length windows that the texts of one batch of last windows may need
#: (:func:`plan_text_batches`): about the most work an interrupted run loses.
BODY_BATCHES_IN_FLIGHT = 4


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
    return _cut(lengths, order, batch_size, max_tokens, exact, max_padding)


def _cut(lengths: np.ndarray, order: np.ndarray, batch_size: int, max_tokens: int | None,
         exact: bool, max_padding: float | None, work: np.ndarray | None = None,
         max_work: int = 0) -> list[Batch]:
    """:func:`plan_batches` over rows already sorted longest first (``order``); with ``work``
    (per row), a batch also closes before its rows' work would pass ``max_work`` (>= 1 row)."""
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
        if work is not None:
            spent = np.cumsum(work[order[start:stop]])
            stop = start + max(1, int(np.searchsorted(spent, max_work, side="right")))
        batches.append(Batch(order[start:stop], longest))
        start = stop
    return batches


def plan_text_batches(
    lengths: Sequence[int] | np.ndarray,
    owner: Sequence[int] | np.ndarray,
    batch_size: int,
    max_tokens: int | None = None,
    exact: bool = False,
    max_padding: float | None = None,
) -> list[Batch]:
    """Batches for the windows of texts that finish texts all through the run, not at its end.

    ``owner`` gives each row's text; a text's rows are consecutive and all but its last are of
    one full length (windows as :func:`~skmoe.engine.windows.split_row` cuts them). Sorting
    every window longest first (:func:`plan_batches`) ran all full windows first and every
    text's shorter last window at the end, so no text was whole (cached, counted) until then.

    Here the *last* rows (one per text; the only row of a short text) are planned as
    :func:`plan_batches` plans rows, and a batch of them also closes before its texts hold
    more than :data:`BODY_BATCHES_IN_FLIGHT` batches of full rows. The full rows follow the
    order of those batches, in full batches; each batch of last rows comes once the full rows
    of its texts are queued. One with fewer rows than a full batch rides in the open full
    batches (while the padding allows; not with ``exact``): a pass of its own would cost more;
    a larger one runs on its own. So texts complete batch after batch, the work spent on
    unfinished texts stays within a few batches, and padding and the number of forward passes
    stay about those of :func:`plan_batches` (full rows have no padding). The first batch is a
    full one (the peak memory shows first). Rows of another shape: :func:`plan_batches`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    owner = np.asarray(owner)
    last = np.ones(len(owner), dtype=bool)
    last[:-1] = owner[1:] != owner[:-1]
    body = np.flatnonzero(~last)
    full = int(lengths[body[0]]) if len(body) else 0
    if not len(body) or np.any(lengths[body] != full):
        return plan_batches(lengths, batch_size, max_tokens, exact, max_padding)
    tails = np.flatnonzero(last)
    text = np.cumsum(last) - last  # each row's text, counted from 0
    per = min(batch_size, max(1, max_tokens // full)) if max_tokens is not None else batch_size
    needs = np.bincount(text[body], minlength=len(tails))  # full rows of each text
    order = np.argsort(-lengths[tails], kind="stable")
    last_batches = _cut(lengths[tails], order, batch_size, max_tokens, exact, max_padding,
                        work=needs, max_work=BODY_BATCHES_IN_FLIGHT * per)
    rank = np.empty(len(tails), dtype=np.int64)  # the batch of last rows of each text
    for k, batch in enumerate(last_batches):
        rank[batch.rows] = k
    body = body[np.argsort(rank[text[body]], kind="stable")]
    ready = np.cumsum(np.bincount(rank[text[body]], minlength=len(last_batches)))
    ready[0] = max(ready[0], min(per, len(body)))  # a full batch first
    batches: list[Batch] = []
    open_rows: list[np.ndarray] = []  # the open full batch: its full rows, last rows riding
    held = gap = queued = 0  # its rows, its padded positions; full rows queued so far

    def close() -> None:
        nonlocal held, gap
        rows = np.concatenate(open_rows)
        rows = rows[np.argsort(-lengths[rows], kind="stable")]
        batches.append(Batch(rows, int(lengths[rows[0]])))
        open_rows.clear()
        held = gap = 0

    for k, batch in enumerate(last_batches):
        while queued < ready[k]:
            take = body[queued : queued + min(per - held, int(ready[k]) - queued)]
            open_rows.append(take)
            held, queued = held + len(take), queued + len(take)
            if held == per:
                close()
        rows = tails[batch.rows]  # longest first
        if exact or len(rows) >= per:  # a batch of its own costs no more than riding
            batches.append(Batch(rows, batch.max_len))
            continue
        while len(rows):  # ride in the open batch(es) while the padding allows
            piece = rows[: per - held]
            pad = int(np.sum(full - lengths[piece]))
            rows_then = min(per, held + len(piece) + len(body) - queued)  # once it is full
            if max_padding is not None and gap + pad > max_padding * rows_then * full:
                batches.append(Batch(rows, int(lengths[rows[0]])))
                break
            open_rows.append(piece)
            held, gap, rows = held + len(piece), gap + pad, rows[len(piece) :]
            if held == per:
                close()
    if held:
        close()
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
