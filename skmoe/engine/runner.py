"""Run many texts through a :class:`~skmoe.encoder.SentenceEncoder` efficiently.

dedupe -> prompt -> tokenize -> token-length batches -> forward -> pool (fp32) -> input order.
Outputs are full-width, un-normalised, float32 numpy rows: post-processing (Matryoshka,
normalisation, output dtype) belongs to the estimator so that every variant shares cache entries.

The road from texts to vectors (de-duplication, cache, chunking, progress, streaming to a file)
is :mod:`skmoe.embedding`; :meth:`Engine.iter_embed_chunks` is its entry point here (the next chunk tokenized in a worker
thread while the current one runs; batches pipelined one deep).
:meth:`Engine.iter_embed` and :meth:`Engine.embed_to` are deprecated in its favour.
"""

from __future__ import annotations

import logging
import unicodedata
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .._out_of_memory import is_out_of_memory
from .._stack import external_stacklevel
from ..encoder import SentenceEncoder
from ..encoder.checkpoint import check_finite_output
from ..encoder.tokenization import tokenize
from ._deprecated_streaming import DeprecatedStreaming
from .batching import Batch, TokenRows, pack, plan_batches, plan_text_batches, split_batch
from .memory import reuse_freed_memory_if_asked
from .precision import QUANTIZED, precision_of
from .prefetch import prefetched
from .windows import (
    DEFAULT_CHUNK_OVERLAP,
    Layout,
    TokenGroup,
    WindowPool,
    check_long_text,
    check_positions,
    check_room_for_text,
    iter_window_groups,
    position_limit,
)

logger = logging.getLogger(__name__)

# Defaults per device: rows per batch and padded tokens per batch. The token-wise work runs on
# real tokens only, so the budget mainly sizes the matmuls: on CPU a few thousand tokens already
# fill the GEMM kernels; on GPU large batches keep the tensor cores busy.
DEFAULT_BATCH_SIZE = {"cpu": 128, "cuda": 4096}
DEFAULT_MAX_TOKENS = {"cpu": 8192, "cuda": 131072}
# Dense (transformers) backbones compute every padded token: cap the padded share of a batch.
# The MoE model computes only real tokens (packed), so its batches are cut by size alone.
MAX_PADDING_DENSE = 0.05


# Special tokens a tokenizer may add around a text (<s> ... </s>, [CLS] ... [SEP]), with room.
_SPECIAL_TOKENS_MARGIN = 8


def _utf8_size(text: str) -> int:
    """UTF-8 bytes of ``text`` or of its NFKC form, whichever is larger (an upper bound on the
    tokens of any tokenizer whose tokens cover at least one byte of the normalized text)."""
    size = len(text.encode("utf-8"))
    if not unicodedata.is_normalized("NFKC", text):  # quick check; normal text passes
        size = max(size, len(unicodedata.normalize("NFKC", text).encode("utf-8")))
    return size


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's maximum length and were cut."""


@dataclass
class EngineStats:
    """Counters of what the engine did (for benchmarks and tests)."""

    texts: int = 0
    forward_calls: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # texts per forward call
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    oom_retries: int = 0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class Engine(DeprecatedStreaming):
    """Batching, device placement and OOM back-off around one encoder.

    Parameters
    ----------
    encoder : SentenceEncoder
        Already in its precision mode (see :func:`skmoe.engine.precision.apply_precision`).
    batch_size : int, optional
        Maximum rows per forward pass (default per device: 128 on CPU, 4096 on GPU).
    max_tokens_per_batch : int, optional
        Maximum padded tokens (rows x longest row) per forward pass (default 8192 on CPU,
        131072 on GPU). After a CUDA out-of-memory error the engine halves the failing batch
        and lowers this budget for the rest of the run.
    progress : callable, optional
        Called with the number of texts finished after each batch.
    max_length : int, optional
        Token limit per text (default: the encoder's own limit); at most the model's positions
        (:func:`~skmoe.engine.windows.position_limit`).
    """

    encoder: SentenceEncoder
    batch_size: int | None = None
    max_tokens_per_batch: int | None = None
    progress: Callable[[int], None] | None = None
    max_length: int | None = None
    stats: EngineStats = field(default_factory=EngineStats)

    def __post_init__(self) -> None:
        self._token_cap: int | None = None  # lowered after an out-of-memory error
        self._roomy: set[tuple[str, int, int]] = set()  # (prompt, limit, overlap) with room
        if self.encoder.device.type == "cpu":
            reuse_freed_memory_if_asked()  # process-wide malloc tuning: only if SKMOE_TUNE_MALLOC

    @property
    def limit(self) -> int:
        """The token limit in effect: ``max_length``, else the encoder's own limit."""
        return check_positions(self.max_length or self.encoder.max_length,
                               position_limit(self.encoder), self.encoder.source.name)

    def _defaults(self) -> tuple[int, int]:
        kind = "cuda" if self.encoder.device.type == "cuda" else "cpu"
        bs = self.batch_size or DEFAULT_BATCH_SIZE[kind]
        mt = self.max_tokens_per_batch or DEFAULT_MAX_TOKENS[kind]
        return bs, mt

    def _exact_lengths(self) -> bool:
        """Equal-length batches for int8/int4 dense backbones.

        Their attention runs on the padded batch, so a row's fp32 attention output depends
        (at 1e-7) on its batch-mates; int8 rounding amplifies that to 1e-2. Without padding every
        op left is row-local or exact, and a text's vector is the same in any batch. The MoE
        model needs no such care: its CPU attention runs per row length already.
        """
        return not self.encoder.is_moe and precision_of(self.encoder) in QUANTIZED

    # -- texts in, vectors out -------------------------------------------------------------
    def embed(self, texts: Sequence[str], prompt: str = "") -> np.ndarray:
        """Pooled full-width float32 embeddings ``[n, H]`` of ``prompt + text`` in input order.

        Duplicate texts are encoded once.
        """
        if len(texts) == 0:
            return np.empty((0, self.encoder.embedding_dim), dtype=np.float32)
        unique, inverse = np.unique(np.asarray(list(texts), dtype=object), return_inverse=True)
        ids, _ = self._tokenize([prompt + t for t in unique.tolist()])
        out = self.embed_ids(ids)
        return out[inverse.reshape(-1)]

    def iter_embed_chunks(
        self, chunks: Iterable[Sequence[str]], prompt: str = "", *,
        long_text: str = "truncate", chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        prefetch: bool = True, warn: bool = True,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(chunk number, positions in that chunk, vectors, truncated flags of those
        positions)`` forward pass by forward pass, over consecutive chunks of texts.

        With ``prefetch`` the next group of token rows (the next chunk's, or in chunk mode the
        next group of windows) is tokenized in a worker thread while the current one runs
        (:func:`~skmoe.engine.prefetch.prefetched`); truncation warnings are still given here,
        in the caller's thread, when a group's first batch is run.
        """
        self._check_settings(prompt, long_text, chunk_overlap)
        groups = self._chunk_groups(chunks, prompt, long_text, int(chunk_overlap))
        current, cut = -1, np.zeros(0, dtype=bool)
        for number, chunk, group in prefetched(groups) if prefetch else groups:
            if number != current:
                current, cut = number, np.zeros(len(chunk), dtype=bool)
            cut[group.cut] = True
            self._warn_cut([prompt + chunk[i] for i in group.cut], warn=warn)
            for done, vectors in self._embed_group(group):
                yield number, done, vectors, cut[done]

    def _chunk_groups(self, chunks: Iterable[Sequence[str]], prompt: str, long_text: str,
                      chunk_overlap: int) -> Iterator[tuple[int, Sequence[str], TokenGroup]]:
        """``(chunk number, chunk, token group)`` for every group of every chunk (no warnings:
        this may run in a worker thread)."""
        for number, chunk in enumerate(chunks):
            for group in self._groups(chunk, prompt, long_text, chunk_overlap):
                yield number, chunk, group

    def _embed_group(self, group: TokenGroup) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions of finished texts, their vectors)`` for one group's token rows."""
        if group.single:
            for rows, vectors in self.iter_batches(group.ids):
                yield group.owner[rows], vectors
            return
        pool = WindowPool(group.owner, group.ids.lengths, self.encoder.embedding_dim)
        for rows, vectors in self.iter_batches(group.ids, owner=group.owner):
            done, pooled = pool.add(rows, vectors)
            if len(done):
                yield done, pooled

    def iter_windows(self, texts: Sequence[str], prompt: str = "", *,
                     long_text: str = "truncate",
                     chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> Iterator[TokenGroup]:
        """The token rows the engine runs for ``prompt + text``, in groups of whole texts.

        ``"truncate"``: one group, one row per text, cut to the limit (with a
        :class:`TruncationWarning`). ``"chunk"``: rows are windows of the limit, groups of
        about :data:`~skmoe.engine.windows.GROUP_TOKENS` tokens (memory stays flat however
        many long texts there are). Token states and routing statistics read these rows too.
        """
        self._check_settings(prompt, long_text, chunk_overlap)
        for group in self._groups(texts, prompt, long_text, int(chunk_overlap)):
            self._warn_cut([prompt + texts[i] for i in group.cut])
            yield group

    def _groups(self, texts: Sequence[str], prompt: str, long_text: str,
                chunk_overlap: int) -> Iterator[TokenGroup]:
        """:meth:`iter_windows` without the warnings."""
        if not len(texts):
            return
        if long_text == "truncate":
            ids, truncated = self._token_ids([prompt + t for t in texts])
            yield TokenGroup(TokenRows(ids), np.arange(len(texts)), truncated)
            return
        self._check_tokenizer()
        yield from iter_window_groups(self.encoder.tokenizer, texts, prompt, self.limit,
                                      chunk_overlap)

    def warn_if_truncated(self, texts: Sequence[str], prompt: str = "",
                          cut: Sequence[int] | np.ndarray | None = None) -> int:
        """Warn, as embedding them would, about texts longer than the token limit; return how
        many. For texts whose vectors come from elsewhere (the estimator's cache hits).

        ``cut`` gives, per text, what is known already: 1 cut, 0 not cut, -1 unknown (the
        default for all). Only unknown texts whose UTF-8 size could exceed the limit are
        tokenized: every token of the tokenizers in use (sentencepiece, WordPiece, byte-level
        BPE) covers at least one byte of the text as the tokenizer normalizes it, which NFKC can
        make longer (U+FDFA: 3 bytes, 33 after NFKC), so the larger of the two sizes counts.
        """
        flags = self.truncated(texts, prompt, cut)
        self._warn_cut([prompt + texts[i] for i in np.flatnonzero(flags)])
        return int(flags.sum())

    def truncated(self, texts: Sequence[str], prompt: str = "",
                  cut: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Which of ``texts`` are longer than the token limit (bool per text), without a
        warning; ``cut`` as in :meth:`warn_if_truncated` (only unknown, possibly long texts
        are tokenized)."""
        known = np.full(len(texts), -1) if cut is None else np.asarray(cut)
        flags = known > 0
        budget = self.limit - _SPECIAL_TOKENS_MARGIN - _utf8_size(prompt)
        unknown = [i for i, (t, c) in enumerate(zip(texts, known, strict=True))
                   if c < 0 and _utf8_size(t) > budget]
        if unknown:
            cut_rows = self._token_ids([prompt + texts[i] for i in unknown])[1]
            flags[[unknown[j] for j in cut_rows]] = True
        return flags

    def _tokenize(self, texts: list[str]) -> tuple[TokenRows, list[int]]:
        """Token rows of ``texts`` and the positions of those that were cut (with a warning)."""
        ids, truncated = self._token_ids(texts)
        self._warn_cut([texts[i] for i in truncated])
        return TokenRows(ids), truncated

    def _token_ids(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Ids cut to the limit (which may pass the encoder's own, up to its positions)."""
        self._check_tokenizer()
        return tokenize(self.encoder.tokenizer, texts, self.limit)

    def _check_settings(self, prompt: str, long_text: str, chunk_overlap: int) -> None:
        """Before any row runs: the long-text mode, and room for text after the prompt."""
        check_long_text(long_text, chunk_overlap, self.limit)
        # windows repeat the overlap: checked here too, not at the first long text (5,000
        # texts, 50 s, were embedded and lost before a long one raised)
        self._check_room(prompt, chunk_overlap if long_text == "chunk" else 0)

    def _check_room(self, prompt: str, overlap: int = 0) -> None:
        """:func:`check_room_for_text` once per prompt, limit and overlap (it tokenizes the
        prompt)."""
        key = (prompt, self.limit, overlap)
        if key not in self._roomy and self.encoder.tokenizer is not None:
            check_room_for_text(Layout.of(self.encoder.tokenizer, prompt), self.limit, overlap)
            self._roomy.add(key)

    def _check_tokenizer(self) -> None:
        if self.encoder.tokenizer is None:
            raise RuntimeError(f"{self.encoder.source.path} ships no tokenizer files; pass "
                               "tokenizer=PATH to load_encoder")

    def _warn_cut(self, cut_texts: list[str], *, warn: bool = True) -> None:
        """Count the cut texts in :attr:`stats`; warn (``warn``) naming the first."""
        if not cut_texts:
            return
        self.stats.truncated += len(cut_texts)
        if not warn:
            return
        warnings.warn(
            f"{len(cut_texts)} text(s) exceed the maximum length "
            f"({self.limit} tokens) and were truncated; first: "
            f"{cut_texts[0][:60]!r}",
            TruncationWarning,
            stacklevel=external_stacklevel(),
        )

    # -- ids in, vectors out ---------------------------------------------------------------
    def embed_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled float32 embeddings for already tokenized rows, in input order."""
        dim = self.encoder.embedding_dim
        out = np.empty((len(ids), dim), dtype=np.float32)
        for rows, vectors in self.iter_batches(ids):
            out[rows] = vectors
        return out

    def iter_batches(self, ids: Sequence[Sequence[int]], *, pipelined: bool = True,
                     owner: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row indices, pooled vectors)`` batch by batch (nothing kept on the device).

        ``pipelined``: batch ``k + 1`` is launched before the vectors of batch ``k`` are read
        back, so on an accelerator the host waits on a batch's copy (the one sync per batch)
        while the next batch already runs. On the CPU every batch is done when launched.
        Callers that read what a forward pass leaves behind (routing records) when its batch
        is yielded pass ``pipelined=False``. ``owner``: the text of each row, for windows (see
        :meth:`plan`).
        """
        ids = TokenRows(ids)
        lengths = ids.lengths
        pending = deque(self.plan(lengths, owner))
        in_flight: deque[tuple[Batch, _Launched]] = deque()
        while pending:
            batch = pending.popleft()
            if self._token_cap is not None and batch.padded_tokens > self._token_cap:
                pending.extendleft(reversed(split_batch(batch, lengths, self._token_cap)))
                batch = pending.popleft()
            try:
                launched = self._launch(ids, batch)
            except BaseException as error:
                if is_out_of_memory(error) and len(batch.rows) > 1:
                    self._back_off(batch)
                    half = len(batch.rows) // 2
                    halves = [batch.rows[:half], batch.rows[half:]]
                    pending.extendleft(reversed([Batch(r, int(lengths[r].max()))
                                                 for r in halves]))
                    continue
                # an interrupt, a failure, an OOM on one row: hand over what is done first
                while in_flight:
                    yield self._finish(*in_flight.popleft())
                cuda_or_python = isinstance(error, MemoryError | torch.cuda.OutOfMemoryError)
                if is_out_of_memory(error) and not cuda_or_python:  # torch's RuntimeError
                    raise MemoryError(
                        f"out of memory on {self.encoder.device.type} embedding one text of "
                        f"{batch.max_len} tokens ({str(error).splitlines()[0][:200]}); lower "
                        "max_length, or free memory") from error
                raise
            if in_flight:
                yield self._finish(*in_flight.popleft())
            in_flight.append((batch, launched))
            if not pipelined:
                yield self._finish(*in_flight.popleft())
        while in_flight:
            yield self._finish(*in_flight.popleft())

    def plan(self, lengths: np.ndarray, owner: np.ndarray | None = None) -> list[Batch]:
        """This engine's batches for rows of these token lengths (device defaults, padding
        rules of the backbone and precision). With ``owner`` (each row's text: the windows of
        a :class:`~skmoe.engine.windows.TokenGroup`), batches that complete texts all through
        the group (:func:`~skmoe.engine.batching.plan_text_batches`)."""
        bs, mt = self._defaults()
        exact = self._exact_lengths()
        max_padding = None if self.encoder.is_moe or exact else MAX_PADDING_DENSE
        if owner is not None:
            return plan_text_batches(lengths, owner, bs, mt, exact=exact,
                                     max_padding=max_padding)
        return plan_batches(lengths, bs, mt, exact=exact, max_padding=max_padding)

    def _back_off(self, batch: Batch) -> None:
        """After an out-of-memory error: free the cache, halve the budget for what follows."""
        self.stats.oom_retries += 1
        self._token_cap = max(1, batch.padded_tokens // 2)
        logger.warning(
            "out of memory on %d rows x %d tokens; retrying as two halves, budget now %d tokens",
            len(batch.rows), batch.max_len, self._token_cap,
        )
        if self.encoder.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _launch(self, ids: TokenRows, batch: Batch) -> _Launched:
        """Start one forward pass on packed tokens: ids and ``cu_seqlens`` are built on the host
        from the known lengths and copied once (pinned, non-blocking on CUDA); the pooled
        vectors start their copy back into pinned host memory. Nothing here waits for the
        device."""
        input_ids, cu_seqlens, max_seqlen = pack(ids, batch)
        device = self.encoder.device
        if device.type == "cuda":
            input_ids = input_ids.pin_memory().to(device, non_blocking=True)
            cu_seqlens = cu_seqlens.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            input_ids, cu_seqlens = input_ids.to(device), cu_seqlens.to(device)
        hidden = self.encoder.forward_packed(input_ids, cu_seqlens, max_seqlen)
        pooled = self.encoder.pool_packed(hidden, cu_seqlens, max_seqlen).float()
        del hidden  # the next batch must not find this one's activations still alive
        if device.type != "cuda":
            return _Launched(pooled.cpu(), None, len(input_ids))
        host = torch.empty(pooled.shape, dtype=pooled.dtype, pin_memory=True)
        host.copy_(pooled, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return _Launched(host, done, len(input_ids))

    def _finish(self, batch: Batch, launched: _Launched) -> tuple[np.ndarray, np.ndarray]:
        """Wait for a launched batch's vectors (the one sync per batch), check them, count."""
        if launched.done is not None:
            launched.done.synchronize()
        vectors = launched.host.numpy()
        # on the host copy: no extra sync; batches finished before stay in the cache
        check_finite_output(launched.host, self.encoder.source.name)
        self.stats.forward_calls += 1
        self.stats.real_tokens += launched.tokens
        self.stats.padded_tokens += batch.padded_tokens
        self.stats.batch_sizes.append(len(batch.rows))
        self.stats.texts += len(batch.rows)
        if self.progress is not None:
            self.progress(len(batch.rows))
        return batch.rows, vectors


@dataclass
class _Launched:
    """A batch whose pooled vectors are on their way to ``host``; ``done`` is the CUDA event
    recorded after the copy (None where the copy was synchronous)."""

    host: torch.Tensor
    done: torch.cuda.Event | None
    tokens: int
