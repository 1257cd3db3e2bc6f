"""Run many texts through a :class:`~skmoe.encoder.SentenceEncoder` efficiently.

dedupe -> prompt -> tokenize -> token-length batches -> forward -> pool (fp32) -> input order.
Outputs are full-width, un-normalised, float32 numpy rows: post-processing (Matryoshka,
normalisation, output dtype) belongs to the estimator so that every variant shares cache entries.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..encoder import SentenceEncoder
from .batching import Batch, collate, plan_batches

logger = logging.getLogger(__name__)

# Defaults per device: rows per batch and padded tokens per batch.
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 1024}
DEFAULT_MAX_TOKENS = {"cpu": 8192, "cuda": 131072}


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's maximum length and were cut."""


@dataclass
class EngineStats:
    """Counters of what the engine did (for benchmarks and tests)."""

    texts: int = 0
    forward_calls: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    oom_retries: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class Engine:
    """Batching, device placement and OOM back-off around one encoder.

    Parameters
    ----------
    encoder : SentenceEncoder
    batch_size : int, optional
        Maximum rows per forward pass (default per device: 64 on CPU, 1024 on GPU).
    max_tokens_per_batch : int, optional
        Maximum padded tokens (rows x longest row) per forward pass (default 8192 on CPU,
        131072 on GPU).
    progress : callable, optional
        Called with the number of texts finished after each batch.
    max_length : int, optional
        Token limit per text (default: the encoder's own limit).
    """

    encoder: SentenceEncoder
    batch_size: int | None = None
    max_tokens_per_batch: int | None = None
    progress: Callable[[int], None] | None = None
    max_length: int | None = None
    stats: EngineStats = field(default_factory=EngineStats)

    def _defaults(self) -> tuple[int, int]:
        kind = "cuda" if self.encoder.device.type == "cuda" else "cpu"
        bs = self.batch_size or DEFAULT_BATCH_SIZE[kind]
        mt = self.max_tokens_per_batch or DEFAULT_MAX_TOKENS[kind]
        return bs, mt

    def embed(self, texts: Sequence[str], prompt: str = "") -> np.ndarray:
        """Pooled full-width float32 embeddings ``[n, H]`` of ``prompt + text`` in input order.

        Duplicate texts are encoded once.
        """
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        unique_list = [prompt + t for t in unique.tolist()]
        ids, truncated = self.encoder.tokenize(unique_list, self.max_length)
        if truncated:
            self.stats.truncated += len(truncated)
            warnings.warn(
                f"{len(truncated)} text(s) exceed the maximum length "
                f"({self.max_length or self.encoder.max_length} tokens) and were truncated; first: "
                f"{unique_list[truncated[0]][:60]!r}",
                TruncationWarning,
                stacklevel=3,
            )
        out = self.embed_ids(ids)
        return out[inverse.reshape(-1)]

    def embed_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled float32 embeddings for already tokenized rows, in input order."""
        dim = self.encoder.embedding_dim
        out = np.empty((len(ids), dim), dtype=np.float32)
        for rows, vectors in self.iter_batches(ids):
            out[rows] = vectors
        return out

    def iter_batches(self, ids: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row indices, pooled vectors)`` batch by batch (nothing kept on the device)."""
        bs, mt = self._defaults()
        lengths = [len(r) for r in ids]
        pending = list(plan_batches(lengths, bs, mt))
        while pending:
            batch = pending.pop(0)
            try:
                vectors = self._forward(ids, batch)
            except torch.OutOfMemoryError:
                if len(batch.rows) == 1:
                    raise
                self.stats.oom_retries += 1
                half = len(batch.rows) // 2
                logger.warning("out of memory on %d rows; retrying as two halves", len(batch.rows))
                if self.encoder.device.type == "cuda":
                    torch.cuda.empty_cache()
                pending[:0] = [Batch(batch.rows[:half], batch.max_len),
                               Batch(batch.rows[half:], int(max(lengths[r] for r in batch.rows[half:])))]
                continue
            self.stats.texts += len(batch.rows)
            if self.progress is not None:
                self.progress(len(batch.rows))
            yield batch.rows, vectors

    @torch.inference_mode()
    def _forward(self, ids: Sequence[Sequence[int]], batch: Batch) -> np.ndarray:
        input_ids, mask = collate(ids, batch, self.encoder.pad_token_id)
        device = self.encoder.device
        if device.type == "cuda":
            input_ids = input_ids.pin_memory().to(device, non_blocking=True)
            mask = mask.pin_memory().to(device, non_blocking=True)
        hidden = self.encoder(input_ids, mask)
        pooled = self.encoder.pool(hidden, mask)
        self.stats.forward_calls += 1
        self.stats.real_tokens += int(mask.sum())
        self.stats.padded_tokens += batch.padded_tokens
        self.stats.batch_sizes.append(len(batch.rows))
        return pooled.float().cpu().numpy()
