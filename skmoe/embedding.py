"""Texts -> full-width vectors: the one road every caller takes.

The estimator, ``skmoe embed``, the MTEB adapter and the benchmarks build an :class:`Embedder`
and call it; it owns, once each:

- **de-duplication**: each distinct text of a call is looked up and computed once;
- **the cache**: lookup by namespace (:func:`skmoe.cache.embedding_namespace`) and text, writes
  batch by batch as the engine finishes them, so an interruption keeps all finished batches;
- **truncation warnings for cache hits**, as a run would give them (from the stored ``cut``
  flag; texts are tokenized only when the flag is unknown and the text could be too long);
- **chunking** the misses into engine calls (``CHUNK_SIZE`` texts tokenized and planned at once,
  on accelerators the first one at most ``FIRST_CHUNK``;
  the engine tokenizes the next chunk in a worker thread while the current one runs);
- **the token limit** (:func:`token_limit`: up to the model's positions, one warning above the
  length it was trained at) and **long texts** (``long_text="truncate"`` or ``"chunk"``: the
  engine embeds windows and pools them, :mod:`skmoe.engine.windows`);
- **progress**: a ``tqdm.auto`` bar (notebook-aware) over the input rows;
- **destinations**: an in-memory array, a caller's array (e.g. an ``open_memmap``), or a file
  (``.npy`` written through a memory map, Parquet row groups), written atomically.

The prompt arrives resolved (a string): :func:`resolve_prompt` is the one place a prompt name
becomes a string. The model is loaded only on the first miss: a fully cached call never loads
(nor hashes) the weights. The engine (``Engine.iter_embed_chunks``) keeps tokenisation, batch
planning and the forward.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from ._stack import external_stacklevel
from .cache import EmbeddingCache, embedding_namespace
from .embedding_files import EmbeddingWriter, output_format
from .encoder import SentenceEncoder
from .encoder.loading import ModelSource
from .engine import Engine
from .engine.runner import _SPECIAL_TOKENS_MARGIN, TruncationWarning, _utf8_size
from .engine.windows import (
    DEFAULT_CHUNK_OVERLAP,
    LONG_TEXT_MODES,
    check_long_text,
    check_positions,
    position_limit,
)
from .validation import check_int, check_prompt

__all__ = ["CHUNK_SIZE", "DEFAULT_CHUNK_OVERLAP", "LONG_TEXT_MODES", "PROGRESS_DELAY", "Embedder",
           "EmbeddingWriter", "LongerThanTrainedWarning", "ModelCard", "check_long_text",
           "check_token_limit",
           "resolve_prompt", "token_limit"]

#: With ``verbose=1`` the bar appears only once a call has run this many seconds.
PROGRESS_DELAY = 2.0
#: Missing texts tokenized and planned together per engine call (bounds the memory of token ids).
CHUNK_SIZE = 16384
#: On an accelerator the first chunk is at most this many texts: nothing overlaps its
#: tokenization, so a small one gets the device started sooner while the next (full) chunk is
#: tokenized in the worker thread. Not on a CPU, where the tokenizer's threads compete with the
#: forward's for the same cores (a tiny model on 2 cores: 1,859 vs 2,119 texts/s, small vs full
#: first chunk; real models: tokenizing is ~0.1% of the time, nothing to gain).
FIRST_CHUNK = 1024
#: Rows per chunk a stream hands on (:meth:`Embedder.iter_embed`, :meth:`Embedder.embed_to`, the
#: estimator's ``embed_to``, ``skmoe embed``): what an interrupted run without a cache loses at
#: most, and the rows transformed and written at once.
STREAM_CHUNK = 1024


def chunk_bounds(n: int, size: int, device_type: str) -> list[int]:
    """Boundaries ``[0, ..., n]`` of the chunks of ``n`` texts: ``size`` each, the first at most
    :data:`FIRST_CHUNK` off the CPU."""
    first = size if device_type == "cpu" else min(size, FIRST_CHUNK)
    return [0, *range(first, n, size), n] if n else [0]


def resolve_prompt(model: Any, prompt_name: str | None = None, prompt: str | None = None,
                   *, settings_of: Any = None) -> str:
    """The prompt string: ``prompt`` wins; else ``prompt_name`` looked up in the model's table.

    ``model`` is a :class:`~skmoe.encoder.SentenceEncoder`; ``settings_of``, an estimator
    whose own ``prompt_name``/``prompt`` apply when both arguments are None (routing statistics
    and adapters follow the estimator they are given unless told otherwise).
    """
    if prompt_name is None and prompt is None and settings_of is not None:
        params = settings_of.get_params(deep=False)
        prompt_name, prompt = params.get("prompt_name"), params.get("prompt")
    check_prompt(prompt)
    return model.resolve_prompt(prompt_name, prompt)


@dataclass(frozen=True)
class ModelCard:
    """What the road needs to know about a model, without its weights.

    Read off a loaded encoder (:meth:`of`) and kept by fingerprint
    (:func:`skmoe.encoder.fingerprint.remember_card`), so a later process whose texts are all
    cached never loads the model. Duck-types the encoder where the road reads it.
    """

    source: ModelSource
    embedding_dim: int
    max_length: int
    recipe: str
    prompts: dict[str, str]
    default_prompt_name: str | None
    has_tokenizer: bool
    is_moe: bool
    max_positions: int

    # The encoder's own rule, applied to the recorded table (one implementation of it).
    resolve_prompt = SentenceEncoder.resolve_prompt

    @classmethod
    def of(cls, model: SentenceEncoder | ModelCard) -> ModelCard:
        if isinstance(model, ModelCard):
            return model
        return cls(model.source, int(model.embedding_dim), int(model.max_length), model.recipe,
                   dict(model.prompts), model.default_prompt_name, model.tokenizer is not None,
                   bool(model.is_moe), position_limit(model))

    def facts(self) -> dict[str, Any]:
        """Everything but the source, JSON-able."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "source"}

    @classmethod
    def from_facts(cls, source: ModelSource, facts: Mapping[str, Any]) -> ModelCard:
        return cls(source, **{name: facts[name] for name in cls.__dataclass_fields__
                              if name != "source"})


def check_token_limit(model: SentenceEncoder | ModelCard, max_length: int) -> int:
    """``max_length`` as an int, refused (``ValueError`` naming the limit) beyond the model's
    positions."""
    card = ModelCard.of(model)
    return check_positions(max_length, card.max_positions, card.source.name)


class LongerThanTrainedWarning(UserWarning):
    """``max_length`` is above the length the model was trained at (within its positions)."""


def token_limit(model: SentenceEncoder | ModelCard, max_length: int | None) -> int:
    """The token limit in effect for ``max_length`` (None: the model's own limit).

    Above the model's own limit (the length it was trained at: 512 for nomic-embed-text-v2-moe
    and multilingual-e5) a limit is allowed up to the model's positions (2,048 for the MoE
    model) with one :class:`LongerThanTrainedWarning`; beyond its positions it is a
    ``ValueError`` naming them.
    """
    card = ModelCard.of(model)
    if max_length is None:
        return card.max_length
    limit = check_token_limit(card, max_length)
    if limit > card.max_length:
        warnings.warn(
            f"max_length={limit} is above the {card.max_length} tokens model "
            f"{card.source.name!r} was trained at (it has positions up to "
            f"{card.max_positions}); vectors of texts longer than {card.max_length} tokens may "
            f"be worse. long_text='chunk' with max_length={card.max_length} keeps every window "
            "within the trained length.", LongerThanTrainedWarning,
            stacklevel=external_stacklevel())
    return limit


@dataclass
class Embedder:
    """Full-width, un-normalised float32 vectors of texts, through the cache, in input order.

    Parameters
    ----------
    load : callable
        Returns the :class:`~skmoe.encoder.SentenceEncoder`; called on the first miss only.
    dim : int
        Width of the model's vectors (known without loading it).
    prompt : str
        The resolved prefix.
    max_length : int
        The token limit in effect.
    cache : EmbeddingCache, optional
    namespace : str, optional
        The cache namespace (required with a cache); ``labels`` describe it.
    batch_size, max_tokens_per_batch : int, optional
        Passed to the engine.
    verbose : int
        0: no progress bar; 1: a bar once a call runs longer than :data:`PROGRESS_DELAY`
        seconds; 2: a bar from the start.
    long_text : {"truncate", "chunk"}
        Texts longer than ``max_length``: cut (with a warning), or embedded as windows of
        ``max_length`` tokens (prompt and special tokens included) that overlap by
        ``chunk_overlap`` tokens, whose mean-pooled vectors are averaged weighted by their
        tokens (before any normalisation). Texts that fit give the same vectors in both modes.
    chunk_overlap : int
        Tokens shared by consecutive windows (chunk mode).
    """

    load: Callable[[], SentenceEncoder]
    dim: int
    prompt: str
    max_length: int
    cache: EmbeddingCache | None = None
    namespace: str | None = None
    labels: Mapping[str, Any] | None = None
    legacy_namespace: str | None = None  # rows of the same vectors under an older recipe
    batch_size: int | None = None
    max_tokens_per_batch: int | None = None
    verbose: int = 0
    chunk_size: int | None = None  # default: CHUNK_SIZE
    long_text: str = "truncate"
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    _engine: Engine | None = field(default=None, init=False, repr=False)
    _described: bool = field(default=False, init=False, repr=False)

    @classmethod
    def configure(cls, model: SentenceEncoder | ModelCard, prompt: str, *,
                  load: Callable[[], SentenceEncoder], max_length: int | None = None,
                  long_text: str = "truncate", chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
                  cache: EmbeddingCache | None = None, precision: str = "float32",
                  device_type: str = "cpu", name: str | None = None, **kwargs: Any) -> Embedder:
        """The embedder for these settings: token limit (:func:`token_limit`), long-text mode
        (checked), and its cache namespace (:func:`skmoe.cache.embedding_namespace`).

        ``model`` is the loaded encoder or its :class:`ModelCard`; ``load`` returns the encoder
        (called on the first miss only).
        """
        limit = token_limit(model, max_length)
        check_long_text(long_text, chunk_overlap, limit)
        parts = dict(  # cheap: the fingerprint is known
            model_fingerprint=model.source.fingerprint, revision=model.source.revision,
            prompt=prompt, max_length=limit, pooling=model.recipe, precision=precision,
            device_type=device_type, model=name or model.source.name, long_text=long_text,
            chunk_overlap=chunk_overlap)
        namespace, labels = embedding_namespace(**parts)
        legacy, _ = embedding_namespace(**parts, with_revision=True)
        return cls(load, dim=model.embedding_dim, prompt=prompt, max_length=limit, cache=cache,
                   namespace=namespace, labels=labels, legacy_namespace=legacy,
                   long_text=long_text, chunk_overlap=int(chunk_overlap), **kwargs)

    @classmethod
    def for_encoder(cls, encoder: SentenceEncoder, prompt: str, *, max_length: int | None = None,
                    cache: EmbeddingCache | None = None, model: str | None = None,
                    **kwargs: Any) -> Embedder:
        """An embedder around a loaded encoder, its namespace computed from the encoder."""
        from .engine.precision import precision_label

        return cls.configure(encoder, prompt, load=lambda: encoder, max_length=max_length,
                             cache=cache, precision=precision_label(encoder),
                             device_type=encoder.device.type, name=model, **kwargs)

    # -- public --------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine (loads the model on first use)."""
        if self._engine is None:
            self._engine = Engine(self.load(), batch_size=self.batch_size,
                                  max_tokens_per_batch=self.max_tokens_per_batch,
                                  max_length=self.max_length)
        return self._engine

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors ``[len(texts), dim]`` in input order."""
        with progress(len(texts), self.verbose) as tick:
            return self._embed(texts, tick)

    def iter_embed(self, texts: Sequence[str], chunk_size: int = STREAM_CHUNK
                   ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, vectors)`` for consecutive chunks of ``texts``, in input order; one
        progress bar for the whole stream. ``chunk_size`` is checked at the call, not at the
        first chunk (``embed_to`` relies on it before it makes any file)."""
        check_int("chunk_size", chunk_size, 1)
        return self._stream(texts, chunk_size)

    def _stream(self, texts: Sequence[str], chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
        cuts: list[tuple[int, str]] = []  # one TruncationWarning for the stream, at its end
        with progress(len(texts), self.verbose) as tick:
            for start in range(0, len(texts), chunk_size):
                yield start, self._embed(texts[start : start + chunk_size], tick, start, cuts)
        self._warn_truncated(cuts)

    def embed_to(self, out: str | os.PathLike[str] | np.ndarray, texts: Sequence[str], *,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 fmt: str | None = None, chunk_size: int = STREAM_CHUNK,
                 metadata: dict[str, Any] | None = None,
                 columns: dict[str, Sequence[Any]] | None = None) -> Any:
        """Stream the vectors of ``texts`` (through ``transform``, e.g. truncation and
        normalisation, if given) into ``out``; return ``out``.

        ``out`` is a writable array of the right shape (e.g. ``np.lib.format.open_memmap``) or
        a path: ``.npy`` (or ``fmt="npy"``) or ``.parquet`` (``fmt="parquet"``: columns
        ``text`` and ``embedding``, after any ``columns``: one value per text, e.g. ids),
        written to ``OUT.<host>.<pid>.<random>.partial`` and renamed when complete.
        """
        stream = self.iter_embed(texts, chunk_size)  # checks chunk_size: before any file
        if isinstance(out, np.ndarray):
            if out.ndim != 2 or out.shape[0] != len(texts):  # before any text is embedded
                raise ValueError(f"out has shape {out.shape}, expected {len(texts)} rows "
                                 "(one per text) and one column per feature")
            for start, vectors in stream:
                vectors = transform(vectors) if transform is not None else vectors
                if out.shape[1:] != vectors.shape[1:]:  # the width is known once computed
                    raise ValueError(f"out has shape {out.shape}, expected "
                                     f"{(len(texts), *vectors.shape[1:])}")
                out[start : start + len(vectors)] = vectors
            return out
        path = Path(out)
        fmt = output_format(path, fmt, option="fmt=")
        if path.is_dir():  # checked before any text is embedded: nothing computed is lost
            raise IsADirectoryError(f"out is a folder, not a file: {path}")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"the folder of out does not exist: {path.parent}")
        if not len(texts):  # no chunk to stream: an empty file of the right width
            stream = iter([(0, self._embed(texts, None))])
        with EmbeddingWriter(path, fmt, len(texts), metadata, columns) as writer:
            for start, vectors in stream:
                vectors = transform(vectors) if transform is not None else vectors
                writer.write(start, texts[start : start + len(vectors)], vectors)
        return out

    # -- the work ------------------------------------------------------------------------------
    def _embed(self, texts: Sequence[str], tick: _Tick | None, first_row: int = 0,
               cuts: list[tuple[int, str]] | None = None) -> np.ndarray:
        """Vectors of ``texts`` in order; one :class:`TruncationWarning` names the rows cut
        (numbered from ``first_row``: where this chunk starts in a stream), or, with ``cuts``,
        they are added there for the stream's one warning (one per 1,024-row chunk before)."""
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        unique: dict[str, int] = {}
        slots = np.fromiter((unique.setdefault(t, len(unique)) for t in texts), np.int64, len(texts))
        todo = list(unique)
        rows_per_text = np.bincount(slots, minlength=len(todo)) if len(todo) < len(texts) else None
        vectors = np.empty((len(todo), self.dim), dtype=np.float32)
        cut_todo = np.zeros(len(todo), dtype=bool)
        missing = np.arange(len(todo))
        if self.cache is not None:
            if self.namespace is None:
                raise ValueError("an Embedder with a cache needs its namespace")
            found, _, cut = self.cache.lookup(self.namespace, todo, with_cut=True, out=vectors)
            if self.legacy_namespace and not found.all():
                self._from_legacy(todo, found, cut, vectors)
            if found.any():
                hits = np.flatnonzero(found)
                if self.long_text == "truncate":  # windows cut nothing
                    cut_todo[hits] = self._cut_hits([todo[i] for i in hits], cut[hits])
                if tick is not None:
                    tick(int(rows_per_text[hits].sum()) if rows_per_text is not None else len(hits))
            missing = np.flatnonzero(~found)
        if len(missing):
            self._compute(todo, missing, vectors, cut_todo, rows_per_text, tick)
        cut = [(first_row + int(i), texts[i]) for i in np.flatnonzero(cut_todo[slots])]
        if cuts is None:
            self._warn_truncated(cut)
        else:
            cuts += cut
        # without duplicates the rows are in input order already: no copy of a large result
        return vectors if len(todo) == len(texts) else vectors[slots]

    def _from_legacy(self, todo: list[str], found: np.ndarray, cut: np.ndarray,
                     vectors: np.ndarray) -> None:
        """Fill, in place, what the namespace lacks from rows written under the recipe that
        keyed on the revision too (before 2026-12-05), and copy them to the namespace."""
        cache, missing = self.cache, np.flatnonzero(~found)
        texts = [todo[i] for i in missing]
        old = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        hit, _, old_cut = cache.lookup(self.legacy_namespace, texts, with_cut=True, out=old,
                                       count=False)
        if not hit.any():
            return
        rows = missing[hit]
        vectors[rows], cut[rows], found[rows] = old[hit], old_cut[hit], True
        cache.recount(len(rows))
        self._describe()
        cache.put_many(self.namespace, [texts[j] for j in np.flatnonzero(hit)], old[hit],
                       cut=[None if c < 0 else c > 0 for c in old_cut[hit]])  # unknown stays so

    def _compute(self, todo: list[str], missing: np.ndarray, vectors: np.ndarray,
                 cut_todo: np.ndarray, rows_per_text: np.ndarray | None,
                 tick: _Tick | None) -> None:
        """Run the engine on ``todo[missing]``, chunk by chunk, writing the cache per batch
        and marking the texts cut in ``cut_todo``."""
        loads = self._engine is None
        engine, cache = self.engine, self.cache
        if loads and tick is not None:
            tick.resume()
        if cache is not None:
            self._describe()
        size = self.chunk_size or CHUNK_SIZE
        bounds = chunk_bounds(len(missing), size, engine.encoder.device.type)
        # chunks are built lazily: the engine tokenizes the next one in a worker thread
        chunks = ([todo[i] for i in missing[a:b]] for a, b in pairwise(bounds))
        # one chunk of one group (truncating) has nothing to prepare ahead: no worker thread
        # (it cost about 1.4 ms of a small call's 7 ms, a service's every request)
        ahead = len(bounds) > 2 or self.long_text != "truncate"
        for number, done, batch_vectors, cut in engine.iter_embed_chunks(
                chunks, self.prompt, long_text=self.long_text, chunk_overlap=self.chunk_overlap,
                prefetch=ahead, warn=False):
            rows = missing[bounds[number] : bounds[number + 1]][done]
            vectors[rows] = batch_vectors
            cut_todo[rows] = cut
            if cache is not None:
                cache.put_many(self.namespace, [todo[i] for i in rows], batch_vectors, cut=cut)
            if tick is not None:
                tick(int(rows_per_text[rows].sum()) if rows_per_text is not None else len(done))

    def _describe(self) -> None:
        """Record, once, what `skmoe cache stats` shows for the namespace (model, prompt...)."""
        if not self._described:
            self.cache.describe(self.namespace, **dict(self.labels or {}))
            self._described = True

    def _cut_hits(self, texts: list[str], cut: np.ndarray) -> np.ndarray:
        """Which cached texts were cut when computed (bool per text). ``cut``: 1 cut, 0 not,
        -1 unknown (rows from before the flag was stored); only unknown texts that could be
        too long need the tokenizer (and so the model)."""
        cut = np.asarray(cut)
        budget = self.max_length - _SPECIAL_TOKENS_MARGIN - _utf8_size(self.prompt)
        if any(_utf8_size(texts[i]) > budget for i in np.flatnonzero(cut < 0)):
            return self.engine.truncated(texts, self.prompt, cut=cut)
        return cut > 0

    def _warn_truncated(self, cut: list[tuple[int, str]]) -> None:
        """One warning for the ``(input row, text)`` pairs that were cut, cached or computed,
        naming those not yet named in this process (:data:`_REPORTED_CUTS`): a grid search's
        every fit and transform, and its every rerun from the cache, warned again about the
        same texts (25 warnings for a 2 x 2 grid with 3 folds)."""
        if not cut:
            return
        keys = [hash((self.max_length, self.prompt, text)) for _, text in cut]
        new = [pair for pair, key in zip(cut, keys, strict=True) if key not in _REPORTED_CUTS]
        earlier = len(keys) - len(new)
        if not new:
            return
        shown = ", ".join(str(row) for row, _ in new[:5])
        if len(new) > 5:
            shown += f", ... ({len(new)} in all)"
        also = f"; {earlier} more were cut, as warned before" if earlier else ""
        warnings.warn(
            f"{len(new)} text(s) exceed the maximum length ({self.max_length} tokens) and were "
            f"truncated (row{'s' if len(new) > 1 else ''} {shown}, counted from 0){also}; "
            f"first: {(self.prompt + new[0][1])[:60]!r}",
            TruncationWarning,
            stacklevel=external_stacklevel(),
        )
        # named once warned: a filter that turns the warning into an error raised it before
        # this line, and the next call raises again (it was marked first, then silent)
        if len(_REPORTED_CUTS) + len(keys) > _REPORTED_CUTS_MAX:
            _REPORTED_CUTS.clear()
        _REPORTED_CUTS.update(keys)


#: ``hash((max_length, prompt, text))`` of the cut texts a :class:`TruncationWarning` of this
#: process has named: each is named once (forgotten all at once past ``_REPORTED_CUTS_MAX``)
_REPORTED_CUTS: set[int] = set()
_REPORTED_CUTS_MAX = 200_000


class progress:  # noqa: N801 - used like a function: ``with progress(n, verbose) as tick``
    """A ``tqdm.auto`` bar over ``total`` rows (rate and ETA), or nothing.

    ``verbose`` 0: nothing; 1: the bar appears only once the call has run
    :data:`PROGRESS_DELAY` seconds (short calls stay quiet); 2 or more: from the start.
    """

    def __init__(self, total: int, verbose: int, desc: str = "embedding") -> None:
        self.total, self.verbose, self.bar, self.desc = total, int(verbose or 0), None, desc

    def __enter__(self) -> _Tick | None:
        if self.verbose <= 0 or self.total == 0:
            return None
        from tqdm.auto import tqdm

        delay = PROGRESS_DELAY if self.verbose == 1 else 0.0
        self.bar = tqdm(total=self.total, unit="text", desc=self.desc, smoothing=0.1,
                        delay=delay)
        return _Tick(self.bar)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


class _Tick:
    """``tick(n)``: ``n`` more rows done; ``tick.resume()``: the time since the last update was
    not the rows' (loading the model), so the rate and ETA leave it out (a first call showed a
    5.5-minute ETA for a 15-second job)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def resume(self) -> None:
        self.bar.unpause()

