"""``MoEEmbeddingTransformer``: the scikit-learn face of the encoder.

texts -> validate -> :class:`skmoe.embedding.Embedder` (cache lookup, misses through the engine
written to the cache as they finish, input order) -> Matryoshka truncation -> L2 normalisation ->
output dtype. The estimator decides the settings (prompt, token limit, namespace parts) and
whether the model must be loaded: a fitted estimator whose texts are all cached never loads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._encoder_params import EncoderParams, WeightsChangedError
from ._similarity_methods import SimilarityMixin
from ._text_features import TextFeaturesMixin
from .embedding import (
    CHUNK_SIZE,
    STREAM_CHUNK,
    Embedder,
    ModelCard,
    check_long_text,
    check_token_limit,
    resolve_prompt,
)
from .embedding_files import output_format
from .encoder import SentenceEncoder
from .encoder.fingerprint import known_card, remember_card
from .encoder.loading import resolve_model_path, safetensors_files
from .encoder.tokenization import folder_prompts, prompt_from_table
from .postprocessing import (
    CALIBRATED_DTYPES,
    DEFAULT_CENTER,
    DEFAULT_NORMALIZE,
    MIN_CENTER_ROWS,
    OUTPUT_DTYPES,
    calibration_ranges,
    fit_center,
    normalize_mode,
    output_width,
    quantize,
    truncate_and_normalize,
)
from .registry import get_cache, get_encoder, loaded, model_source, registry_key
from .validation import (
    check_aligned,
    check_bool,
    check_int,
    check_prompt,
    check_verbose,
    validate_texts,
)

__all__ = ["CHUNK_SIZE", "MoEEmbeddingTransformer", "WeightsChangedError"]


# What fit's recorded output (width, centre, int8/uint8 ranges) depends on besides the prompt.
_OUTPUT_PARAMS = ("truncate_dim", "normalize", "center", "output_dtype")


@dataclass(eq=False, repr=False, kw_only=True)
class MoEEmbeddingTransformer(EncoderParams, SimilarityMixin, TextFeaturesMixin, TransformerMixin,
                              BaseEstimator):
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
    max_length : int, optional
        Token limit per text, prompt and special tokens included; default the model's own
        (512 for nomic-embed-text-v2-moe and multilingual-e5). Up to the model's positions
        (2,048 for the MoE model) with a warning above its own limit; beyond, an error.
    long_text : {"truncate", "chunk"}, default="truncate"
        Texts longer than ``max_length``: ``"truncate"`` cuts them (with a warning);
        ``"chunk"`` embeds windows of ``max_length`` tokens (each with the prompt and special
        tokens) overlapping by ``chunk_overlap`` tokens and averages their mean-pooled
        vectors, weighted by their tokens, before truncation and normalisation. Texts that
        fit give the same vectors either way; the cache keeps the modes apart.
    chunk_overlap : int, default=64
        Tokens shared by consecutive windows (``"chunk"``); in ``[0, max_length)``.
    truncate_dim : int, optional
        Matryoshka dimension: keep the first ``truncate_dim`` features (before normalising).
    normalize : float, {"l2", "rms"} or bool, default=1.25
        Row normalisation after truncation (and centring); every mode keeps directions, so
        cosine similarities, neighbours and k-means partitions do not depend on it. A number:
        rows of that L2 length; the default 1.25 is the scale at which
        ``LogisticRegression()``, ``LinearSVC()`` and ``RidgeClassifier()`` all do well with
        their default regularisation on centred rows (with ``center=False``, 2.0 is; measured:
        docs/evaluation-results.md). ``"l2"`` or ``True``: unit length (as
        sentence-transformers gives; dot product = cosine). ``"rms"``: unit length times
        ``sqrt(d)``. ``False``: raw pooled vectors (centred unit vectors with ``center``).
    center : bool, default=True
        Learn in ``fit`` the mean direction of the training texts (the mean of their unit
        vectors, after truncation) and subtract it in ``transform`` before ``normalize``
        rescales the rows. Every text of a model carries a common offset; removing it spreads
        the classes apart, so ``LogisticRegression()`` with its default ``C`` no longer
        underfits languages whose vectors sit close together (measured on SIB-200:
        docs/evaluation-results.md), and k-means, UMAP, nearest neighbours and STS cosines
        gain a little.
        ``fit`` then embeds its texts (``fit_transform`` runs the model once); fitted on fewer
        than 2 texts (``fit([])``) it learns no centre and ``transform`` gives the model's own
        directions; below 16 it warns (texts centred on their own mean are pushed apart).
        :meth:`embed`, :meth:`similarity` and :meth:`search` never centre: they
        give the model's cosine geometry.
    batch_size : int, optional
        Maximum texts per forward pass (default per device).
    max_tokens_per_batch : int, optional
        Maximum padded tokens per forward pass (default per device).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
    dtype : str, optional
        Compute precision: ``"float32"`` (CPU default), ``"bfloat16"`` (GPU default),
        ``"float16"``, ``"int8"`` (CPU, per-row activation scales), ``"int4"`` (CPU, group-wise
        int4 weights, int8 word embeddings; smallest memory), ``"int8wo"`` / ``"fp8"`` (CUDA
        only, through the optional ``torchao``; on an H200, eagerly, 0.75x / 0.70x bf16's speed:
        docs/performance.md). A pre-quantized folder (``skmoe quantize``) runs in its own
        precision.
    compile : bool, default=False
        Run the MoE encoder's layers under ``torch.compile`` (GPUs only: +10% texts/s on an
        H200, about 13 s to compile on first use; refused on CPU and for dense encoders).
        Vectors differ from eager ones in the last bits, as they do between batch
        compositions on a GPU; the cache does not tell them apart.
    output_dtype : {"float32", "float16", "int8", "uint8", "binary", "ubinary"}, default="float32"
        int8/uint8 ranges are learned in ``fit`` (never on the transform batch).
    cache : str or EmbeddingCache, optional
        SQLite file (or cache object) of full-width vectors keyed by model, prompt and text.
    verbose : int, default=1
        Progress (a ``tqdm.auto`` bar with rate and ETA, notebook-aware): 1 shows it only once
        a call has run for 2 seconds (``skmoe.embedding.PROGRESS_DELAY``), so short calls and
        fully cached ones stay quiet; 2 shows it from the start; 0 (or False) never.
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
    model_name_ : str
        The ``model`` parameter fit loaded; a transform after ``set_params(model=...)`` to
        other files names both.
    model_fingerprint_ : str
        Digest of the weights, tokenizer files and parsed configs
        (:func:`skmoe.encoder.loading.weights_fingerprint`), checked again before any vector is
        served or computed; a mismatch raises :class:`WeightsChangedError` naming what changed.
    prompt_ : str
        The prefix string applied to every text.
    center_ : ndarray of shape (n_features,) or None
        The mean unit vector of the fit texts (``center=True``, at least 2 texts), else None.
    quantization_ranges_ : ndarray of shape (2, n_features)
        Only for int8/uint8 output.
    output_params_ : dict
        ``truncate_dim``, ``normalize``, ``center`` and ``output_dtype`` as fitted: changing
        the prompt, the output width, ``center`` or (for int8/uint8 output) the vectors the
        ranges were learned on after fit makes ``transform`` ask for a refit.
    """

    _feature_prefix = "embedding"

    # model, revision, prompt_name, prompt, max_length, long_text, chunk_overlap: EncoderParams
    truncate_dim: int | None = None
    normalize: bool | str | float = DEFAULT_NORMALIZE
    center: bool = DEFAULT_CENTER
    batch_size: int | None = None
    max_tokens_per_batch: int | None = None
    device: str | None = None
    dtype: str | None = None
    compile: bool = False
    output_dtype: str = "float32"
    cache: Any = None
    verbose: int = 1
    local_files_only: bool = False

    # -- model access (never stored on self) ---------------------------------------------------
    def get_encoder(self) -> SentenceEncoder:
        """The shared loaded encoder for these parameters (loads it on first use)."""
        encoder = get_encoder(
            self.model, revision=self.revision, device=self.device, precision=self.dtype,
            local_files_only=self.local_files_only, compile=self.compile,
        )
        self._check_source(encoder.source)
        remember_card(encoder.source.fingerprint, ModelCard.of(encoder).facts())
        return encoder

    def precision_label(self) -> str:
        """The precision of this transformer's vectors as its cache namespace names it
        (``"float32"``, ``"int8/rtn-sym-w8"``, a pre-quantized folder's own), without loading."""
        return registry_key(self.model, self.revision, self.device, self.dtype)[3]

    def model_card(self) -> ModelCard:
        """What the road knows about the model (source and fingerprint, width, token limit,
        pooling, prompt table), without loading its weights when a cache is set and a process
        recorded these exact files' card; otherwise read off the loaded encoder."""
        return ModelCard.of(self._model())

    def _model(self) -> SentenceEncoder | ModelCard:
        """The loaded encoder, or, when a cache may spare loading it, its card.

        The card (width, token limit, pooling, prompt table) is what a process that loaded
        these exact files recorded (:func:`skmoe.encoder.fingerprint.known_card`); the files are
        fingerprinted from the per-file memo, so this reads no weights on a warm run. Without a
        cache every text runs the model, so it is loaded at once.
        """
        if self._open_cache() is not None:
            source = model_source(self.model, revision=self.revision,
                                  local_files_only=self.local_files_only)
            self._check_source(source)  # refuse changed files before loading anything
            facts = known_card(source.fingerprint)
            if facts is not None:
                try:
                    return ModelCard.from_facts(source, facts)
                except (KeyError, TypeError):  # a card kept by another skmoe version: load
                    pass
        self._check_prompt_before_loading()
        return self.get_encoder()

    def _check_prompt_before_loading(self) -> None:
        """The prompt, resolved against the model folder's own table before its weights load
        (an unknown prompt name surfaced after loading them: 8.9 s for e5-small). Anything
        else that goes wrong here is left to the load, which says it better."""
        key = registry_key(self.model, self.revision, self.device, self.dtype)
        if any(k[: len(key)] == key for k in loaded()):
            return
        check_prompt(self.prompt)
        try:
            folder, _ = resolve_model_path(self.model, self.revision, self.local_files_only)
            safetensors_files(folder)  # no weights here: not a model folder
            if not (folder / "config.json").is_file():
                return  # an empty table would blame the prompt for a missing config
            prompts, default = folder_prompts(folder)
        except Exception:  # noqa: BLE001 - the load reports missing or broken files
            return
        prompt_from_table(prompts, default, str(self.model), self.prompt_name, self.prompt)

    def _check_params(self, model: SentenceEncoder | ModelCard) -> None:
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        normalize_mode(self.normalize)  # refused before any text is embedded, not after
        check_int("truncate_dim", self.truncate_dim, 1, model.embedding_dim, optional=True)
        check_int("max_length", self.max_length, 2, optional=True)
        if self.max_length is not None:
            check_token_limit(model, self.max_length)
        check_long_text(self.long_text, self.chunk_overlap, self.max_length)
        check_bool("center", self.center)
        check_verbose(self.verbose)
        check_int("batch_size", self.batch_size, 1, optional=True)
        check_int("max_tokens_per_batch", self.max_tokens_per_batch, 1, optional=True)
        if not ModelCard.of(model).has_tokenizer:
            raise ValueError(
                f"Model {self.model!r} has no tokenizer files in {model.source.path} (tokenizer.json, "
                "or tokenizer_config.json with a sentencepiece model); copy the model's tokenizer "
                "files into that folder."
            )

    def _prompt(self, model: SentenceEncoder | ModelCard) -> str:
        return resolve_prompt(model, self.prompt_name, self.prompt)

    # -- sklearn API ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> MoEEmbeddingTransformer:
        """Record the model's identity and output width; learn the centre (``center=True``)
        and int8/uint8 ranges if asked.

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

        ``X`` and ``y`` as in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_texts, n_features_out_)
        """
        if fit_params:  # fit takes none: refused here too, not dropped
            raise TypeError(f"fit_transform() got unexpected keyword argument(s) "
                            f"{', '.join(sorted(fit_params))}")
        texts = validate_texts(X)
        model, floats = self._fit(texts)
        if floats is None:
            floats = self._transform_floats(texts, model)
        return self._output(floats)

    def _fit(self, texts: list[str]) -> tuple[SentenceEncoder | ModelCard, np.ndarray | None]:
        """Fit on validated texts; return the model (encoder or card) and, when fitting needed
        them, the texts' float embeddings (for ``fit_transform``).

        Atomic: everything is computed into locals and replaces the fitted state in one step at
        the end, so a fit that raises (a refused parameter, an interrupt while loading or
        embedding) leaves the previous fit (or no fit) exactly as it was."""
        with self._fitting():  # a refit may change the model: not checked against the last fit
            model = self._model()
            self._check_params(model)
            self.__dict__["_fit_source"] = model.source  # a model loaded below: these files
            prompt = self._prompt(model)
            dim = int(self.truncate_dim or model.embedding_dim)
            fitted: dict[str, Any] = {
                "prompt_": prompt, "embedding_dim_": model.embedding_dim,
                "n_features_out_": output_width(dim, self.output_dtype),
                "model_name_": str(self.model), "model_revision_": model.source.revision,
                "model_fingerprint_": model.source.fingerprint,
                "output_params_": {k: getattr(self, k) for k in _OUTPUT_PARAMS}, "center_": None,
            }
            calibrated = self.output_dtype in CALIBRATED_DTYPES
            distinct = len(set(texts))  # copies of one text teach no direction
            centred = bool(self.center) and distinct >= MIN_CENTER_ROWS
            floats = None
            if calibrated or centred:
                full = self._embedder(model, prompt).embed(texts)
                if centred:
                    fitted["center_"] = fit_center(full, self.truncate_dim, distinct)
                floats = truncate_and_normalize(full, self.truncate_dim, self.normalize,
                                                fitted["center_"])
                if calibrated:
                    fitted["quantization_ranges_"] = calibration_ranges(floats)
        # One assignment: an interrupt lands before it (the old state) or after (the new one).
        kept = {k: v for k, v in vars(self).items() if k != "quantization_ranges_"}
        self.__dict__ = {**kept, **fitted}
        return model, floats

    def transform(self, X: Any) -> np.ndarray:
        """Embed ``X``: float32 C-contiguous ``[n, n_features_out_]`` (or the output dtype).

        When every text is in the cache, the model is neither loaded nor hashed (its files'
        digests are memoised); it loads on the first text that must be computed.
        """
        texts, model = self._as_fitted(X)
        return self._output(self._transform_floats(texts, model))

    def _as_fitted(self, X: Any) -> tuple[list[str], SentenceEncoder | ModelCard]:
        """The validated texts and the model (encoder or card) for a fitted estimator whose
        parameters still give what fit recorded; otherwise an error that asks for a refit."""
        check_is_fitted(self)
        texts = validate_texts(X)
        model = self._model()
        self._check_params(model)
        changed = self._changed_since_fit(model)
        if changed:
            raise ValueError(f"{'; '.join(changed)}; call fit again.")
        return texts, model

    def _changed_since_fit(self, model: SentenceEncoder | ModelCard) -> list[str]:
        """The parameters whose change since fit invalidates what fit recorded: the prompt, the
        output width (truncate_dim, output_dtype) and, for int8/uint8 output, the vectors the
        ranges were learned on (normalize too)."""
        prompt = self._prompt(model)
        changed = [] if prompt == self.prompt_ else [
            f"prompt_name/prompt changed after fit (fitted with {self.prompt_!r}, now {prompt!r})"]
        fitted = getattr(self, "output_params_", {})  # absent in estimators pickled before
        for name, then in fitted.items():
            now = getattr(self, name)
            if name == "normalize":
                matters = fitted["output_dtype"] in CALIBRATED_DTYPES
            elif name == "output_dtype":  # float32 <-> float16, binary <-> ubinary: nothing fitted
                dim = int(fitted["truncate_dim"] or self.embedding_dim_)
                matters = (then in CALIBRATED_DTYPES or now in CALIBRATED_DTYPES
                           or output_width(dim, then) != output_width(dim, now))
            else:
                matters = True
            if matters and now != then:
                changed.append(f"{name} changed after fit (fitted with {then!r}, now {now!r})")
        return changed

    def _output(self, floats: np.ndarray) -> np.ndarray:
        ranges = getattr(self, "quantization_ranges_", None)
        return np.ascontiguousarray(quantize(floats, self.output_dtype, ranges))

    def embed_to(self, X: Any, out: str | os.PathLike[str] | np.ndarray, *,
                 format: str | None = None, chunk_size: int = STREAM_CHUNK, ids: Any = None,
                 id_name: str = "id") -> Any:
        """Stream ``transform(X)`` into ``out`` chunk by chunk; return ``out``.

        ``out``: a writable array ``[n, n_features_out_]`` (e.g. ``np.lib.format.open_memmap``)
        or a path, ``.npy`` or ``.parquet`` (or ``format=``), written to
        ``OUT.<host>.<pid>.<random>.partial`` and renamed when complete, so an interrupted run
        leaves no file that looks complete.
        Memory stays flat however many texts there are; ``skmoe embed`` runs this. A Parquet
        file records where its vectors come from (model, revision, fingerprint, prompt and the
        output settings) as JSON under its schema metadata's ``skmoe`` key, and with ``ids``
        (one per text) a first column ``id_name`` for joining the vectors back; pandas ``X``
        and ``ids`` whose indexes hold the same labels in another order are refused (by
        position they would pair ids with other rows' vectors).
        """
        check_aligned(X=X, ids=ids)
        if ids is not None and isinstance(out, np.ndarray):  # they were dropped without a word
            raise ValueError("ids are written beside the vectors in a Parquet file; an array "
                             "holds the vectors only: pass a .parquet path, or no ids")
        texts, model = self._as_fitted(X)
        provenance = {"model": str(self.model), "revision": self.model_revision_,
                      "fingerprint": self.model_fingerprint_, "prompt": self.prompt_,
                      "centred": self.center_ is not None,
                      **{k: getattr(self, k) for k in ("max_length", "long_text",
                                                       "chunk_overlap", "dtype", *_OUTPUT_PARAMS)}}
        columns = None if ids is None else {id_name: ids}
        if not isinstance(out, np.ndarray):  # named as this method names it
            output_format(Path(out), format)
        return self._embedder(model, self.prompt_).embed_to(
            out, texts, fmt=format, chunk_size=chunk_size, metadata=provenance, columns=columns,
            transform=lambda full: self._output(self._postprocess(full)))

    # -- the work ------------------------------------------------------------------------------
    def _embed_float(self, texts: list[str], model: SentenceEncoder | ModelCard,
                     prompt: str) -> np.ndarray:
        """Truncated and normalised, never centred (:meth:`embed`, similarity, search)."""
        full = self._embedder(model, prompt).embed(texts)
        return truncate_and_normalize(full, self.truncate_dim, self.normalize)

    def _transform_floats(self, texts: list[str], model: SentenceEncoder | ModelCard) -> np.ndarray:
        """``transform``'s floats for ``texts`` (fit's prompt, centred, normalised)."""
        return self._postprocess(self._embedder(model, self.prompt_).embed(texts))

    def _postprocess(self, full: np.ndarray) -> np.ndarray:
        """``transform``'s floats: truncated, centred on ``center_`` (when fit learned one),
        normalised."""
        return truncate_and_normalize(full, self.truncate_dim, self.normalize,
                                      getattr(self, "center_", None))

    def _embedder(self, model: SentenceEncoder | ModelCard, prompt: str, *,
                  open_cache: bool = True) -> Embedder:
        """The road for these settings (:meth:`Embedder.configure`: token limit, long texts,
        cache namespace); loads the model lazily."""
        import torch

        _, _, device, precision = registry_key(self.model, self.revision, self.device, self.dtype)
        encoder = model if isinstance(model, SentenceEncoder) else None
        return Embedder.configure(
            model, prompt, load=self.get_encoder if encoder is None else (lambda: encoder),
            max_length=self.max_length, long_text=self.long_text,
            chunk_overlap=self.chunk_overlap,
            cache=self._open_cache() if open_cache else None, precision=precision,
            device_type=torch.device(device).type, name=str(self.model),
            batch_size=self.batch_size, max_tokens_per_batch=self.max_tokens_per_batch,
            verbose=self.verbose)

    def cache_namespace(self, encoder: SentenceEncoder, prompt: str) -> str:
        """The cache namespace of ``encoder`` with ``prompt`` under these settings."""
        return self._embedder(encoder, prompt, open_cache=False).namespace

    def embed_full(
        self, texts: list[str], encoder: SentenceEncoder | None = None, prompt: str | None = None
    ) -> np.ndarray:
        """Full-width, un-normalised float32 pooled vectors, through the cache when one is set."""
        texts = validate_texts(texts, "texts")
        model = encoder if encoder is not None else self._model()
        if prompt is None:
            prompt = self._prompt(model)
        return self._embedder(model, prompt).embed(texts)

    def _open_cache(self) -> Any:
        return get_cache(self.cache)

    def cache_stats(self) -> Any:
        """Entries, bytes, and this process's hits and misses of the cache (None without one)."""
        cache = self._open_cache()
        return None if cache is None else cache.stats()
