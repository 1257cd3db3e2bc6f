"""Token states of the frozen encoder, once per text per process (for learned pooling).

The one place that turns texts into per-token hidden states: the token rows
:meth:`skmoe.engine.Engine.iter_windows` gives (prompt, token limit and ``long_text`` mode as
the embedding road applies them), batches from the engine's planner, and the encoder's
``forward(input_ids, attention_mask)``. When the shared texts -> vectors path can return token
states, only :func:`_compute` changes.

With ``long_text="chunk"`` a text longer than the limit is run as windows (each with the prompt
and special tokens) and its states are **the windows' states concatenated, overlap tokens and
each window's prompt and special tokens kept**: the mean over them is then the token-weighted
mean of the windows' means, which is exactly how the embedding road pools a chunked text.

Each text gives ``(states, mean)``: its ``[L, H]`` last hidden states in float16 (compact: 2 bytes
a value) and their mean over the ``L`` tokens computed in float32 from the float32 states, so
that mean pooling reproduced from these entries is exact, not rounded to float16.

An in-process memo keyed by the model's identity (fingerprint, device, precision), the prompt, the
token limit and the text keeps every state computed, up to :data:`MEMO_MAX_BYTES` (oldest first
out): clones fitted by ``GridSearchCV`` or ``cross_val_score`` reuse them. A text enters it as
soon as its last window has run (the windows planned as the embedding road plans them, texts
completing batch after batch), so an interrupted call keeps what it computed.

Whether a persistent (on-disk) token-state cache pays, in numbers: a token state costs
``2 H`` bytes in float16 (1.5 KB for the 768-d MoE model, 768 B for e5-small), so a
40-token sentence costs 61 KB (MoE; 31 KB e5-small) where its pooled float32 vector in the
embedding cache costs 3 KB (1.5 KB): 20x more disk and I/O per text. Reading 61 KB from a local
SSD (~1 GB/s) takes ~60 us, while computing the sentence takes ~40 ms per CPU core with
e5-small (measured here: ~50 texts/s on 2 cores) and several times that with the MoE model, so
reading would be ~1000x faster than recomputing - but a million texts take 61 GB (MoE), and
learned pooling trains on labelled sets of thousands of texts, which take a minute or two to
recompute. It pays only for repeated fits on the same large corpus in separate processes; the
memo covers the common case (one process, many fits: grid search, cross-validation), so no
persistent cache is built.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .embedding import progress, token_limit
from .encoder import SentenceEncoder
from .encoder.pages import trim_heap
from .engine import Engine
from .engine.batching import collate
from .engine.precision import precision_of
from .engine.windows import DEFAULT_CHUNK_OVERLAP

#: Bytes the memo keeps (float16 states, float32 means, texts and objects); oldest out first.
MEMO_MAX_BYTES = 2 * 1024**3
#: Bytes of an entry's objects besides its buffers and text (key tuple, dict node, tensor and
#: array headers, allocator rounding): measured 750-1,080 B an entry (CPython 3.11, torch 2).
_ENTRY_OVERHEAD = 900
#: What this process computed: ``forward_calls`` and ``texts`` (tests count these).
STATS: Counter = Counter()

_LOCK = threading.Lock()
_MEMO: OrderedDict[tuple, tuple[torch.Tensor, np.ndarray]] = OrderedDict()
_MEMO_BYTES = 0


def model_key(encoder: SentenceEncoder, prompt: str, max_length: int,
              long_text: str = "truncate", chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> tuple:
    """What token states depend on besides the text."""
    mode = (long_text, int(chunk_overlap)) if long_text == "chunk" else (long_text,)
    return (encoder.source.fingerprint, str(encoder.device), precision_of(encoder), prompt,
            int(max_length), *mode)


def token_states(
    encoder: SentenceEncoder,
    texts: Sequence[str],
    prompt: str = "",
    max_length: int | None = None,
    *,
    long_text: str = "truncate",
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    batch_size: int | None = None,
    max_tokens_per_batch: int | None = None,
    verbose: int = 1,
) -> list[tuple[torch.Tensor, np.ndarray]]:
    """``(float16 states [L, H], float32 mean [H])`` of ``prompt + text`` for every text, in order.

    Texts are computed once: duplicates and texts memoised by an earlier call are not run again.
    Each text enters the memo as soon as it is done, so an interrupted call (KeyboardInterrupt)
    keeps what it computed for the next one.
    ``long_text="chunk"``: the states of a long text's windows, concatenated (module docstring).
    ``verbose``: a progress bar as the transformer's (1: after 2 s, 2: at once, 0: none).
    """
    limit = token_limit(encoder, max_length)
    prefix = model_key(encoder, prompt, limit, long_text, chunk_overlap)
    unique = list(dict.fromkeys(texts))
    with _LOCK:
        found = {t: _MEMO[(*prefix, t)] for t in unique if (*prefix, t) in _MEMO}
        for t in found:
            _MEMO.move_to_end((*prefix, t))
    todo = [t for t in unique if t not in found]
    if todo:
        engine = Engine(encoder, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch,
                        max_length=limit)
        with progress(len(todo), verbose, "token states") as tick:
            for done in _compute(engine, todo, prompt, long_text, chunk_overlap):
                finished = {todo[i]: entry for i, entry in done}
                found.update(finished)
                _remember(prefix, finished)
                if tick is not None:
                    tick(len(done))
    return [found[t] for t in texts]


def _remember(prefix: tuple, entries: dict[str, tuple[torch.Tensor, np.ndarray]]) -> None:
    """Put finished texts in the memo; drop the oldest past :data:`MEMO_MAX_BYTES`."""
    global _MEMO_BYTES
    with _LOCK:
        for text, entry in entries.items():
            key = (*prefix, text)
            if key not in _MEMO:
                _MEMO[key] = entry
                _MEMO_BYTES += _nbytes(key, entry)
        while _MEMO_BYTES > MEMO_MAX_BYTES and _MEMO:
            _MEMO_BYTES -= _nbytes(*_MEMO.popitem(last=False))


def clear_memo() -> None:
    """Forget every memoised token state and hand the freed heap pages back to the OS."""
    global _MEMO_BYTES
    with _LOCK:
        _MEMO.clear()
        _MEMO_BYTES = 0
    trim_heap()  # glibc keeps freed pages otherwise: RSS did not move on clearing


def _nbytes(key: tuple, entry: tuple[torch.Tensor, np.ndarray]) -> int:
    """What one memo entry occupies: the whole buffers its arrays keep alive (a view keeps
    its base's), the text in its key and :data:`_ENTRY_OVERHEAD` for the objects."""
    states, mean = entry
    base = mean if mean.base is None else mean.base
    return (states.untyped_storage().nbytes() + getattr(base, "nbytes", mean.nbytes)
            + sys.getsizeof(key[-1]) + _ENTRY_OVERHEAD)


def tokens(encoder: SentenceEncoder, texts: Sequence[str], prompt: str = "",
           max_length: int | None = None, *, long_text: str = "truncate",
           chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[list[str]]:
    """The tokens (as the tokenizer spells them) whose states :func:`token_states` gives."""
    engine = Engine(encoder, max_length=token_limit(encoder, max_length))
    out: list[list[str]] = [[] for _ in texts]
    for group in engine.iter_windows(texts, prompt, long_text=long_text,
                                     chunk_overlap=chunk_overlap):
        for row, owner in zip(group.ids, group.owner, strict=True):
            out[owner] += encoder.tokenizer.convert_ids_to_tokens(row.tolist())
    return out


@torch.inference_mode()
def _compute(engine: Engine, texts: list[str], prompt: str, long_text: str,
             chunk_overlap: int) -> Iterator[list[tuple[int, tuple[torch.Tensor, np.ndarray]]]]:
    """Token rows and batches from the engine, the frozen backbone's states per window, the
    windows of a text joined; yields ``(position in texts, entry)`` of the texts each batch
    completes (windows planned so that texts complete all through a group)."""
    encoder = engine.encoder
    for group in engine.iter_windows(texts, prompt, long_text=long_text,
                                     chunk_overlap=chunk_overlap):
        rows, lengths = group.ids, group.ids.lengths
        owner = None if group.single else group.owner
        # a text's windows are consecutive rows: first row and count of each window's text
        _, first, count = np.unique(group.owner, return_index=True, return_counts=True)
        slot = np.repeat(np.arange(len(first)), count)
        left = count.copy()
        windows: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
        for batch in engine.plan(lengths, owner):
            input_ids, mask = collate(rows, batch, encoder.pad_token_id)
            input_ids, mask = input_ids.to(encoder.device), mask.to(encoder.device)
            hidden = encoder(input_ids, mask).float()
            m = mask.to(hidden.dtype).unsqueeze(-1)
            means = ((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).cpu().numpy()
            half = hidden.to(torch.float16).cpu()
            del hidden
            STATS["forward_calls"] += 1
            STATS["texts"] += len(batch.rows)
            done = []
            for j, r in enumerate(batch.rows):
                windows[r] = (half[j, : int(lengths[r])].clone(), means[j].astype(np.float32))
                s = slot[r]
                left[s] -= 1
                if left[s] == 0:
                    f, n = first[s], count[s]
                    parts = [windows.pop(i) for i in range(f, f + n)]
                    entry = parts[0] if n == 1 else _join(parts, lengths[f : f + n])
                    done.append((int(group.owner[f]), entry))
            yield done


def _join(windows: list[tuple[torch.Tensor, np.ndarray]], lengths: np.ndarray
          ) -> tuple[torch.Tensor, np.ndarray]:
    """One text's windows: states concatenated, mean weighted by each window's tokens."""
    weights = lengths.astype(np.float64)
    mean = (np.stack([w[1] for w in windows]).astype(np.float64) * weights[:, None]).sum(0)
    return torch.cat([w[0] for w in windows]), (mean / weights.sum()).astype(np.float32)
