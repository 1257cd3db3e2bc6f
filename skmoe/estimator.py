"""``MoEEmbeddingTransformer``: the scikit-learn face of the encoder.

texts -> validate -> cache lookup -> misses through the engine (chunked, written to the cache as
they finish) -> input order -> Matryoshka truncation -> L2 normalisation -> output dtype.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .encoder import DEFAULT_MODEL, SentenceEncoder
from .engine import Engine
from .postprocessing import (
    CALIBRATED_DTYPES,
    OUTPUT_DTYPES,
    calibration_ranges,
    output_width,
    quantize,
    truncate_and_normalize,
)
from .registry import get_cache, get_encoder
from .validation import validate_texts

# Texts tokenized and planned together when encoding misses (bounds the memory of token ids).
# Results reach the cache batch by batch, so an interrupted run keeps all finished batches.
CHUNK_SIZE = 16384


# What fit's recorded output (width, int8/uint8 ranges) depends on besides the prompt.
_OUTPUT_PARAMS = ("truncate_dim", "normalize", "output_dtype")


class WeightsChangedError(RuntimeError):
    """The weights found at load time differ from those the estimator was fitted with."""


class MoEEmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Sentence embeddings from nomic-embed-text-v2-moe (or any supported encoder) as features.

    Parameters
    ----------
    model : str or path, default="nomic-ai/nomic-embed-text-v2-moe"
        Hugging Face hub id or local folder (``config.json`` + safetensors).
    revision : str, optional
        Hub branch, tag or commit; the resolved commit is recorded in ``model_revision_``.
    prompt_name : str or None, default="classification"
        Key of the model's prompt table (case-insensitive; ``document`` = ``passage``).
    prompt : str, optional
        A raw prefix; wins over ``prompt_name``. Dense models such as e5 take ``"query: "``.
    max_length : int, default=512
        Token limit per text (capped at the model's own limit); longer texts are truncated
        with a warning.
    truncate_dim : int, optional
        Matryoshka dimension: keep the first ``truncate_dim`` features (before normalising).
    normalize : {"rms", "l2"} or bool, default="rms"
        Row normalisation after truncation. ``"rms"``: unit length times ``sqrt(d)`` (unit
        root-mean-square per feature), so ``LogisticRegression()`` with its default ``C=1`` does
        not underfit; directions, cosine similarities, neighbours and k-means partitions are
        those of ``"l2"``. ``"l2"`` or ``True``: unit length (as sentence-transformers gives;
        better for ``LinearSVC()`` and ``RidgeClassifier()`` at their defaults, see the
        evaluation results). ``False``: raw pooled vectors.
    batch_size : int, optional
        Maximum texts per forward pass (default per device).
    max_tokens_per_batch : int, optional
        Maximum padded tokens per forward pass (default per device).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
    dtype : str, optional
        Compute precision: ``"float32"`` (CPU default), ``"bfloat16"`` (GPU default),
        ``"float16"``, ``"int8"`` (CPU, per-row activation scales).
    output_dtype : {"float32", "float16", "int8", "uint8", "binary", "ubinary"}, default="float32"
        int8/uint8 ranges are learned in ``fit`` (never on the transform batch).
    cache : str or EmbeddingCache, optional
        SQLite file (or cache object) of full-width vectors keyed by model, prompt and text.
    verbose : int, default=0
        1 shows a progress bar with rate and ETA.
    local_files_only : bool, default=False
        Never download; use a local folder or the Hugging Face cache.

    Attributes
    ----------
    embedding_dim_ : int
        Width of the model's pooled vectors.
    n_features_out_ : int
        Width of ``transform``'s output.
    model_revision_ : str
        Resolved hub commit (``"local"`` for folders).
    model_fingerprint_ : str
        Digest of config and weights, checked again when a pickled estimator loads the model.
    prompt_ : str
        The prefix string applied to every text.
    quantization_ranges_ : ndarray of shape (2, n_features)
        Only for int8/uint8 output.
    output_params_ : dict
        ``truncate_dim``, ``normalize`` and ``output_dtype`` as fitted: changing the prompt, the
        output width or (for int8/uint8 output) the vectors the ranges were learned on after
        fit makes ``transform`` ask for a refit.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        prompt_name: str | None = "classification",
        prompt: str | None = None,
        max_length: int = 512,
        truncate_dim: int | None = None,
        normalize: bool | str = "rms",
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        output_dtype: str = "float32",
        cache: Any = None,
        verbose: int = 0,
        local_files_only: bool = False,
    ) -> None:
        self.model = model
        self.revision = revision
        self.prompt_name = prompt_name
        self.prompt = prompt
        self.max_length = max_length
        self.truncate_dim = truncate_dim
        self.normalize = normalize
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.device = device
        self.dtype = dtype
        self.output_dtype = output_dtype
        self.cache = cache
        self.verbose = verbose
        self.local_files_only = local_files_only

    # -- model access (never stored on self) ---------------------------------------------------
    def get_encoder(self) -> SentenceEncoder:
        """The shared loaded encoder for these parameters (loads it on first use)."""
        encoder = get_encoder(
            self.model, revision=self.revision, device=self.device, precision=self.dtype,
            local_files_only=self.local_files_only,
        )
        fitted = getattr(self, "model_fingerprint_", None)
        if fitted is None:
            return encoder
        if fitted != encoder.source.fingerprint:
            raise WeightsChangedError(
                f"The weights of {self.model!r} (fingerprint {encoder.source.fingerprint}, revision "
                f"{encoder.source.revision}) differ from those this estimator was fitted with "
                f"({fitted}, revision {self.model_revision_}). Pin revision= or refit."
            )
        if encoder.source.revision != self.model_revision_:
            # Same weights under another name (e.g. the hub branch moved to a commit that changed
            # only the README): results are unchanged, but say so.
            warnings.warn(
                f"{self.model!r} resolved to revision {encoder.source.revision}, fitted with "
                f"{self.model_revision_}; the weights are identical (fingerprint {fitted}).",
                UserWarning,
                stacklevel=3,
            )
        return encoder

    def _check_params(self, encoder: SentenceEncoder) -> None:
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        _check_int("truncate_dim", self.truncate_dim, 1, encoder.embedding_dim, optional=True)
        _check_int("max_length", self.max_length, 2)
        _check_int("batch_size", self.batch_size, 1, optional=True)
        _check_int("max_tokens_per_batch", self.max_tokens_per_batch, 1, optional=True)
        if encoder.tokenizer is None:
            raise ValueError(
                f"Model {self.model!r} has no tokenizer files in {encoder.source.path} (tokenizer.json, "
                "or tokenizer_config.json with a sentencepiece model); copy the model's tokenizer "
                "files into that folder."
            )

    def _prompt(self, encoder: SentenceEncoder) -> str:
        return encoder.resolve_prompt(self.prompt_name, self.prompt)

    def _effective_max_length(self, encoder: SentenceEncoder) -> int:
        return min(int(self.max_length), encoder.max_length)

    # -- sklearn API ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> MoEEmbeddingTransformer:
        """Record the model's identity and output width; learn int8/uint8 ranges if asked.

        Parameters
        ----------
        X : list of str, pandas Series or one-column DataFrame
        y : ignored

        Returns
        -------
        self
        """
        self._fit(validate_texts(X))
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X).transform(X)``, running the model once (int8/uint8 ranges included).

        Parameters
        ----------
        X : list of str, pandas Series or one-column DataFrame
        y : ignored

        Returns
        -------
        ndarray of shape (n_texts, n_features_out_)
        """
        texts = validate_texts(X)
        encoder, floats = self._fit(texts)
        if floats is None:
            floats = self._embed_float(texts, encoder, self.prompt_)
        return self._output(floats)

    def _fit(self, texts: list[str]) -> tuple[SentenceEncoder, np.ndarray | None]:
        """Fit on validated texts; return the encoder and, when fitting needed them, the
        texts' float embeddings (for ``fit_transform``)."""
        for attr in ("model_fingerprint_", "model_revision_"):  # refit may change the model
            self.__dict__.pop(attr, None)
        encoder = self.get_encoder()
        self._check_params(encoder)
        self.prompt_ = self._prompt(encoder)
        self.embedding_dim_ = encoder.embedding_dim
        dim = int(self.truncate_dim or self.embedding_dim_)
        self.n_features_out_ = output_width(dim, self.output_dtype)
        self.model_revision_ = encoder.source.revision
        self.model_fingerprint_ = encoder.source.fingerprint
        self.output_params_ = {k: getattr(self, k) for k in _OUTPUT_PARAMS}
        self.__dict__.pop("quantization_ranges_", None)
        if self.output_dtype not in CALIBRATED_DTYPES:
            return encoder, None
        floats = self._embed_float(texts, encoder, self.prompt_)
        self.quantization_ranges_ = calibration_ranges(floats)
        return encoder, floats

    def transform(self, X: Any) -> np.ndarray:
        """Embed ``X``: float32 C-contiguous ``[n, n_features_out_]`` (or the output dtype)."""
        check_is_fitted(self)
        texts = validate_texts(X)
        encoder = self.get_encoder()
        self._check_params(encoder)
        changed = self._changed_since_fit(encoder)
        if changed:
            raise ValueError(f"{'; '.join(changed)}; call fit again.")
        return self._output(self._embed_float(texts, encoder, self.prompt_))

    def _changed_since_fit(self, encoder: SentenceEncoder) -> list[str]:
        """The parameters whose change since fit invalidates what fit recorded: the prompt, the
        output width (truncate_dim, output_dtype) and, for int8/uint8 output, the vectors the
        ranges were learned on (normalize too)."""
        prompt = self._prompt(encoder)
        changed = [] if prompt == self.prompt_ else [
            f"prompt_name/prompt changed after fit (fitted with {self.prompt_!r}, now {prompt!r})"]
        fitted = getattr(self, "output_params_", {})  # absent in estimators pickled before
        for name, then in fitted.items():
            matters = name != "normalize" or fitted["output_dtype"] in CALIBRATED_DTYPES
            if matters and getattr(self, name) != then:
                changed.append(f"{name} changed after fit (fitted with {then!r}, now "
                               f"{getattr(self, name)!r})")
        return changed

    def _output(self, floats: np.ndarray) -> np.ndarray:
        ranges = getattr(self, "quantization_ranges_", None)
        return np.ascontiguousarray(quantize(floats, self.output_dtype, ranges))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``embedding_0 ... embedding_{d-1}`` (known after fit, without running the model)."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"embedding_{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        tags.non_deterministic = False
        return tags

    # -- similarity ----------------------------------------------------------------------------
    def similarity(self, a: Any, b: Any = None) -> np.ndarray:
        """Cosine similarity matrix ``[len(a), len(b)]`` (``b`` defaults to ``a``)."""
        from .similarity import cosine_matrix

        ea = self.embed(a)
        return cosine_matrix(ea, ea if b is None else self.embed(b))

    def similarity_pairwise(self, a: Any, b: Any) -> np.ndarray:
        """Row-aligned cosine similarity ``[n]`` of ``a[i]`` and ``b[i]``."""
        from .similarity import cosine_rows

        return cosine_rows(self.embed(a), self.embed(b))

    def embed(self, X: Any) -> np.ndarray:
        """Float32 embeddings (truncated and normalised as configured), fitting nothing.

        Follows the current parameters (prompt included), fitted or not; ``output_dtype`` does
        not apply.
        """
        texts = validate_texts(X)
        encoder = self.get_encoder()
        self._check_params(encoder)
        return self._embed_float(texts, encoder, self._prompt(encoder))

    # -- the work ------------------------------------------------------------------------------
    def _embed_float(self, texts: list[str], encoder: SentenceEncoder, prompt: str) -> np.ndarray:
        full = self.embed_full(texts, encoder, prompt)
        return truncate_and_normalize(full, self.truncate_dim, self.normalize)

    def _namespace_parts(self, encoder: SentenceEncoder, prompt: str) -> dict[str, Any]:
        """What the cached vectors depend on besides the text (model, prompt, length, precision)."""
        from .engine.precision import precision_of

        return {
            "model_fingerprint": encoder.source.fingerprint,
            "revision": encoder.source.revision,
            "prompt": prompt,
            "max_length": self._effective_max_length(encoder),
            "pooling": encoder.pooling,
            # The mode the encoder runs in (canonical: dtype=None and "float32" on CPU share).
            "precision": precision_of(encoder),
        }

    def cache_namespace(self, encoder: SentenceEncoder, prompt: str) -> str:
        """The cache namespace: a fingerprint of :meth:`_namespace_parts`."""
        from .cache import cache_namespace

        return cache_namespace(**self._namespace_parts(encoder, prompt))

    def _namespace_labels(self, encoder: SentenceEncoder, prompt: str) -> dict[str, Any]:
        """The namespace's parts as ``skmoe cache stats`` shows them, with the model's name."""
        parts = self._namespace_parts(encoder, prompt)
        return {**parts, "model": str(self.model),
                "model_fingerprint": parts["model_fingerprint"][:12]}

    def embed_full(
        self, texts: list[str], encoder: SentenceEncoder | None = None, prompt: str | None = None
    ) -> np.ndarray:
        """Full-width, un-normalised float32 pooled vectors, through the cache when one is set."""
        encoder = encoder or self.get_encoder()
        if prompt is None:
            prompt = self._prompt(encoder)
        if not texts:
            return np.empty((0, encoder.embedding_dim), dtype=np.float32)
        unique: dict[str, int] = {}
        slots = np.fromiter((unique.setdefault(t, len(unique)) for t in texts), np.int64, len(texts))
        todo = list(unique)
        vectors = np.empty((len(todo), encoder.embedding_dim), dtype=np.float32)
        missing = np.arange(len(todo))
        cache = self._open_cache()
        namespace = self.cache_namespace(encoder, prompt) if cache is not None else None
        if cache is not None:
            found, _, cut = cache.lookup(namespace, todo, with_cut=True, out=vectors)
            if found.any():
                # A cached text was cut when it was computed: say so again, as a run would.
                hits = np.flatnonzero(found)
                Engine(encoder, max_length=self._effective_max_length(encoder)).warn_if_truncated(
                    [todo[i] for i in hits], prompt, cut=cut[hits])
            missing = np.flatnonzero(~found)
        if len(missing):
            if cache is not None:  # what `skmoe cache stats` shows for this namespace
                cache.describe(namespace, **self._namespace_labels(encoder, prompt))
            with self._progress(len(missing)) as tick:
                engine = Engine(
                    encoder, batch_size=self.batch_size,
                    max_tokens_per_batch=self.max_tokens_per_batch, progress=tick,
                    max_length=self._effective_max_length(encoder),
                )
                for start in range(0, len(missing), CHUNK_SIZE):
                    rows = missing[start : start + CHUNK_SIZE]
                    chunk = [todo[i] for i in rows]
                    cut = np.zeros(len(chunk), dtype=bool)
                    for done, batch_vectors in engine.iter_embed_batches(chunk, prompt,
                                                                         cut_out=cut):
                        vectors[rows[done]] = batch_vectors
                        if cache is not None:
                            cache.put_many(namespace, [chunk[i] for i in done], batch_vectors,
                                           cut=cut[done])
        # without duplicates the rows are in input order already: no copy of a large result
        return vectors if len(todo) == len(texts) else vectors[slots]

    def _open_cache(self) -> Any:
        return get_cache(self.cache)

    def cache_stats(self) -> Any:
        """Entries, bytes, and this process's hits and misses of the cache (None without one)."""
        cache = self._open_cache()
        return None if cache is None else cache.stats()

    def _progress(self, total: int) -> Any:
        return _Progress(total, enabled=bool(self.verbose))


def _check_int(name: str, value: Any, low: int, high: int | None = None,
               optional: bool = False) -> None:
    """An integer parameter (numpy integers too; not bool, not float) within ``[low, high]``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an int{' or None' if optional else ''}, got {value!r} "
            f"({type(value).__name__})"
        )
    if value < low or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


class _Progress:
    """A tqdm bar (rate and ETA) when enabled, a no-op otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.bar = total, enabled, None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, unit="text", desc="embedding", smoothing=0.1)
        return self.bar.update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
