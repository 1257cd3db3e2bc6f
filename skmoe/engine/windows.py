"""Texts longer than the token limit as windows: the engine's ``long_text="chunk"`` mode.

A text whose tokens (prompt and special tokens included) fit in ``max_length`` is one window,
with exactly the ids truncation would give it. A longer text is tokenized in full and its body
(the tokens after the special tokens and the prompt, before the closing special tokens) is split
into consecutive pieces; every window is ``specials + prompt + piece + closing specials``, at most
``max_length`` tokens, and consecutive pieces share ``overlap`` tokens. The first window is the
text as truncation would cut it.

Windows are produced in groups of about :data:`GROUP_TOKENS` tokens, so a corpus of long
documents is never tokenized all at once: the engine plans and runs one group's windows, pools
each text's windows, and moves on. Within a group the batches are planned so that texts
complete batch after batch (:func:`~skmoe.engine.batching.plan_text_batches`), and
:class:`WindowPool` hands each text over as soon as its last window has run: the cache and the
progress bar see texts all through a group, not only at its end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encoder.tokenization import encode_ids
from .batching import TokenRows

#: The ways to handle texts longer than ``max_length``.
LONG_TEXT_MODES = ("truncate", "chunk")
#: Tokens shared by consecutive windows of a long text (``chunk_overlap``'s default).
DEFAULT_CHUNK_OVERLAP = 64
#: Window tokens per group (16 MB of int32 ids): bounds what chunk mode holds at once.
GROUP_TOKENS = 1 << 22
#: Texts per tokenizer call in chunk mode (each is tokenized in full, so a call's ids can be
#: large: fewer texts than the truncating path's ``tokenization.TOKENIZE_SLICE``).
WINDOW_TEXTS_PER_CALL = 32


def check_long_text(long_text: Any, chunk_overlap: Any, max_length: int | None = None) -> None:
    """Refuse an unknown ``long_text`` mode or a ``chunk_overlap`` below 0 (or, in chunk mode,
    not below ``max_length``)."""
    if not isinstance(long_text, str) or long_text not in LONG_TEXT_MODES:
        raise ValueError(f"long_text must be one of {LONG_TEXT_MODES}, got {long_text!r}")
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, (int, np.integer)):
        raise TypeError(f"chunk_overlap must be an int (tokens), got {chunk_overlap!r} "
                        f"({type(chunk_overlap).__name__})")
    if long_text != "chunk":
        max_length = None  # the overlap matters only for windows
    if chunk_overlap < 0 or (max_length is not None and chunk_overlap >= max_length):
        upper = f", below max_length ({max_length})" if max_length is not None else ""
        raise ValueError(f"chunk_overlap must be >= 0{upper}, got {chunk_overlap!r}")


def check_positions(max_length: int, positions: int, model: str) -> int:
    """``max_length`` as an int, refused (``ValueError`` naming the limit) beyond the model's
    ``positions``."""
    limit = int(max_length)
    if limit > positions:
        raise ValueError(
            f"max_length={limit} is beyond the {positions} positions of model {model!r}; use at "
            f"most {positions} (long_text='chunk' embeds longer texts as windows)")
    return limit


def position_limit(encoder: Any) -> int:
    """The most tokens ``encoder`` has positions for: ``n_positions`` of the MoE model (2,048);
    ``max_position_embeddings`` of a dense model, less the offset RoBERTa-style position ids
    start at (``padding_idx + 1``: 514 -> 512 for XLM-R)."""
    if encoder.is_moe:
        return int(encoder.moe_config.n_positions)
    model = getattr(encoder.backbone, "model", None)
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if positions is None:
        return int(encoder.max_length)
    pad = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    return int(positions) - (int(pad) + 1 if pad is not None else 0)


@dataclass(frozen=True)
class Layout:
    """What starts and ends every window: ``head`` special tokens, the prompt's ids, ``tail``
    special tokens."""

    head: int
    tail: int
    prompt_ids: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: Any, prompt: str) -> Layout:
        with_specials = tokenizer("x", add_special_tokens=True)["input_ids"]
        bare = tokenizer("x", add_special_tokens=False)["input_ids"]
        head = next((i for i in range(len(with_specials) - len(bare) + 1)
                     if with_specials[i : i + len(bare)] == bare), 0)
        tail = len(with_specials) - head - len(bare)
        stripped = prompt.strip()
        ids = tokenizer(stripped, add_special_tokens=False)["input_ids"] if stripped else []
        return cls(head, tail, tuple(ids))


class NoRoomForTextError(ValueError):
    """A token limit that the prompt and the special tokens fill on their own: a setting the
    model cannot be used with (the command line's exit 1, "cannot use MODEL with these
    options")."""


def check_room_for_text(layout: Layout, max_length: int, overlap: int = 0) -> None:
    """Refuse a token limit that leaves no new text token in a row: the prompt and the special
    tokens fill it on their own (every text would become the same row, hence the same vector),
    or, for windows, with the ``overlap`` repeated from the previous window."""
    specials = layout.head + layout.tail
    capacity = max_length - len(layout.prompt_ids) - specials  # text tokens a row holds
    if capacity - overlap >= 1:
        return
    if overlap:
        raise NoRoomForTextError(
            f"chunk_overlap={overlap} leaves no room for new tokens: a window of max_length="
            f"{max_length} holds {capacity} text tokens after the prompt "
            f"({len(layout.prompt_ids)} tokens) and {specials} special tokens; lower "
            "chunk_overlap or raise max_length")
    raise NoRoomForTextError(
        f"max_length={max_length} leaves no room for text: the prompt takes "
        f"{len(layout.prompt_ids)} tokens and the special tokens {specials}; raise max_length "
        f"above {max_length - capacity}")


def split_row(row: Sequence[int], layout: Layout, max_length: int, overlap: int
              ) -> list[np.ndarray]:
    """The windows of one tokenized text (``prompt + text`` with special tokens).

    A row that fits is returned as it is. Otherwise the first window is the row cut to
    ``max_length`` (closing specials kept), and each further window repeats the row's leading
    specials and the prompt's ids before the next piece of the body, ``overlap`` tokens back.
    """
    row = np.asarray(row, dtype=np.int32)
    if len(row) <= max_length:
        return [row]
    head, tail = layout.head, layout.tail
    prompt = np.asarray(layout.prompt_ids, dtype=np.int32)
    # The body starts after the prompt when the prompt tokenizes the same at the start of the
    # text (it does for the models in use); otherwise after the specials (the prompt's joint
    # tokens then belong to the first window's body only).
    starts_with_prompt = np.array_equal(row[head : head + len(prompt)], prompt)
    body = row[head + (len(prompt) if starts_with_prompt else 0) : len(row) - tail]
    lead = np.concatenate([row[:head], prompt])
    end = row[len(row) - tail :]
    check_room_for_text(layout, max_length, overlap)
    capacity = max_length - len(lead) - tail
    first = max_length - tail - (len(row) - len(body) - tail)  # body tokens in window 0
    windows = [np.concatenate([row[: max_length - tail], end])]
    stop = first
    while stop < len(body):
        start = stop - overlap
        stop = min(start + capacity, len(body))
        windows.append(np.concatenate([lead, body[start:stop], end]))
    return windows


@dataclass(frozen=True)
class TokenGroup:
    """Windows of consecutive texts: ``ids`` one row per window, ``owner`` the position (in the
    caller's texts) of each window's text, ``cut`` the positions of truncated texts."""

    ids: TokenRows
    owner: np.ndarray
    cut: list[int]

    @property
    def single(self) -> bool:
        """Every text is one window."""
        return len(self.owner) < 2 or bool(np.all(np.diff(self.owner) > 0))


def iter_window_groups(tokenizer: Any, texts: Sequence[str], prompt: str, max_length: int,
                       overlap: int, group_tokens: int | None = None) -> Iterator[TokenGroup]:
    """Yield :class:`TokenGroup` s covering ``texts`` in order, each about ``group_tokens``
    window tokens (whole texts: a text's windows are never split across groups)."""
    group_tokens = group_tokens or GROUP_TOKENS
    layout = Layout.of(tokenizer, prompt)
    rows: list[np.ndarray] = []
    owner: list[int] = []
    tokens = 0
    for start in range(0, len(texts), WINDOW_TEXTS_PER_CALL):
        batch = [prompt + t for t in texts[start : start + WINDOW_TEXTS_PER_CALL]]
        full = encode_ids(tokenizer, batch, None)  # whole texts: windows are cut from them
        for i, row in enumerate(full):
            pieces = split_row(row, layout, max_length, overlap)
            rows += pieces
            owner += [start + i] * len(pieces)
            tokens += sum(len(p) for p in pieces)
        if tokens >= group_tokens:
            yield TokenGroup(TokenRows(rows), np.asarray(owner, dtype=np.int64), [])
            rows, owner, tokens = [], [], 0
    if rows:
        yield TokenGroup(TokenRows(rows), np.asarray(owner, dtype=np.int64), [])


class WindowPool:
    """Token-weighted mean of each text's window vectors, emitted as soon as a text is whole.

    A text of one window gets its window's vector as it is (bit for bit what truncation gives);
    only texts of several windows are summed, in float64.
    """

    def __init__(self, owner: np.ndarray, lengths: np.ndarray, dim: int) -> None:
        self.owner, self.lengths = owner, lengths.astype(np.float64)
        texts, slot = np.unique(owner, return_inverse=True)
        counts = np.bincount(slot, minlength=len(texts))
        multi = np.flatnonzero(counts > 1)
        self.multi = np.full(len(texts), -1, dtype=np.int64)  # text slot -> row of sums
        self.multi[multi] = np.arange(len(multi))
        self.window_multi = self.multi[slot]  # per window: its text's row of sums, or -1
        self.texts = texts[multi]
        self.left = counts[multi]
        self.sums = np.zeros((len(multi), dim))
        self.weights = np.zeros(len(multi))

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Take the vectors of windows ``rows``; return ``(positions of texts now complete,
        their vectors)``."""
        m = self.window_multi[rows]
        alone = m < 0
        if alone.all():
            return self.owner[rows], vectors
        part, weight = m[~alone], self.lengths[rows[~alone]]
        np.add.at(self.sums, part, vectors[~alone].astype(np.float64) * weight[:, None])
        np.add.at(self.weights, part, weight)
        np.subtract.at(self.left, part, 1)
        done = np.unique(part)
        done = done[self.left[done] == 0]
        pooled = (self.sums[done] / self.weights[done, None]).astype(np.float32)
        return (np.concatenate([self.owner[rows[alone]], self.texts[done]]),
                np.concatenate([vectors[alone], pooled]))
