"""The engine's first streaming API (``embed_to``, ``iter_embed``, ``iter_embed_batches``),
deprecated since the road (:mod:`skmoe.embedding`) owns texts -> vectors: kept working, with a
:class:`DeprecationWarning` naming the replacement, for code written against round 1.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._partial_files import apply_umask, make_partial
from .._stack import external_stacklevel
from .windows import DEFAULT_CHUNK_OVERLAP

DEFAULT_CHUNK_SIZE = 4096


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}, which also de-duplicates, caches, shows "
                  "progress and writes Parquet", DeprecationWarning, stacklevel=external_stacklevel())


class DeprecatedStreaming:
    """The deprecated methods of :class:`~skmoe.engine.Engine` (which provides ``embed``,
    ``iter_embed_chunks`` and ``encoder``)."""

    encoder: Any

    def iter_embed_batches(
        self, texts: Sequence[str], prompt: str = "", *, cut_out: np.ndarray | None = None,
        long_text: str = "truncate", chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(positions in texts, vectors)`` forward pass by forward pass.

        For callers that keep each result as soon as it exists (the estimator writes every
        batch to its cache). Texts are not deduplicated: pass unique texts. ``cut_out``, a bool
        array of ``len(texts)``, is filled with which texts were truncated before the first
        batch is yielded (the cache stores it, so that a hit can warn without tokenizing).

        ``long_text="chunk"``: a text longer than the limit is embedded as windows
        (:mod:`skmoe.engine.windows`) whose mean-pooled vectors are averaged, weighted by their
        tokens; its vector is yielded once its last window is done. Windows of all texts batch
        together; texts that fit give exactly the vectors of ``"truncate"``.

        .. deprecated:: use :meth:`skmoe.embedding.Embedder.iter_embed` (cache, progress), or
           :meth:`iter_embed_chunks` for the engine alone.
        """
        _deprecated("Engine.iter_embed_batches", "skmoe.embedding.Embedder.iter_embed")
        if cut_out is not None:
            cut_out[:] = False
        for _, done, vectors, cut in self.iter_embed_chunks(
                [texts], prompt, long_text=long_text, chunk_overlap=chunk_overlap,
                prefetch=False):
            if cut_out is not None:
                cut_out[done] = cut
            yield done, vectors

    def iter_embed(
        self, texts: Sequence[str], prompt: str = "", chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, vectors)`` for consecutive chunks of ``texts``, in input order.

        Only one chunk's ids and vectors are held at a time; batches are planned within a chunk.

        .. deprecated:: use :meth:`skmoe.embedding.Embedder.iter_embed` (cache, progress).
        """
        _deprecated("Engine.iter_embed", "skmoe.embedding.Embedder.iter_embed")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        yield from self._iter_chunks(texts, prompt, chunk_size)

    def _iter_chunks(self, texts: Sequence[str], prompt: str, chunk_size: int
                     ) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(texts), chunk_size):
            yield start, self.embed(texts[start : start + chunk_size], prompt)

    def embed_to(
        self,
        out: str | os.PathLike[str] | np.ndarray,
        texts: Sequence[str],
        prompt: str = "",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> str | os.PathLike[str] | np.ndarray:
        """Stream the embeddings of ``texts`` into ``out`` chunk by chunk; return ``out``.

        ``out`` is a path (a float32 ``.npy`` file of shape ``[n, H]`` is written with plain
        sequential writes, so finished rows do not stay resident) or a writable array of that
        shape (e.g. an ``np.lib.format.open_memmap``).

        .. deprecated:: use :meth:`skmoe.embedding.Embedder.embed_to` or
           ``MoEEmbeddingTransformer.embed_to`` (cache, progress, Parquet, atomic files).
        """
        _deprecated("Engine.embed_to", "skmoe.embedding.Embedder.embed_to")
        n, dim = len(texts), self.encoder.embedding_dim
        if isinstance(out, np.ndarray):
            if out.shape != (n, dim):
                raise ValueError(f"out has shape {out.shape}, expected {(n, dim)}")
            for start, vectors in self._iter_chunks(texts, prompt, chunk_size):
                out[start : start + len(vectors)] = vectors
            return out
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                  "fortran_order": False, "shape": (n, dim)}
        tmp = make_partial(Path(out))  # renamed when whole: a failure leaves no cut file
        try:
            with open(tmp, "wb") as fh:
                np.lib.format.write_array_header_2_0(fh, header)
                for _, vectors in self._iter_chunks(texts, prompt, chunk_size):
                    fh.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            apply_umask(tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out
