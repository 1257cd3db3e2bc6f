"""MTEB adapter: evaluate a skmoe transformer with ``mteb.evaluate`` (mteb >= 2).

MTEB hands an encoder a ``DataLoader`` of batches plus the task's metadata and, for retrieval,
a prompt type (query or document). :class:`SkmoeMTEBEncoder` picks the model's prompt for that
task the way MTEB's own model wrappers do (task name, then task type, then prompt type; see
``mteb.models.abs_encoder.get_prompt_name``) and encodes through the transformer, so vectors land
in, and are served from, the transformer's skmoe cache. Unlike MTEB's ``CachedEmbeddingWrapper``
(keyed by text only), the skmoe cache key includes the model's fingerprint, the prompt and the
token limit, so queries and passages never share entries.

Requires the ``mteb`` extra (``pip install skmoe[mteb]``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding import resolve_prompt
from ..postprocessing import normalize_mode, truncate_and_normalize
from ..validation import validate_texts

__all__ = ["DEFAULT_PROMPT_NAMES", "SkmoeMTEBEncoder", "as_mteb_encoder"]

#: MTEB task type (or prompt type) -> prompt name in the model's table. Mirrors the prompts
#: MTEB registers for nomic-embed-text-v2-moe (``mteb/models/model_implementations/
#: nomic_models.py``). Entries the model's table lacks are skipped, so models without these
#: prompts (e5, MiniLM) fall back to the transformer's own prompt.
DEFAULT_PROMPT_NAMES: dict[str, str] = {
    "Classification": "classification",
    "MultilabelClassification": "classification",
    "PairClassification": "classification",
    "STS": "classification",
    "Summarization": "classification",
    "Reranking": "classification",
    "Clustering": "clustering",
    "query": "query",
    "document": "passage",
}


def _texts_from(inputs: Iterable[Mapping[str, Any]]) -> list[str]:
    texts: list[str] = []
    for batch in inputs:
        if "text" not in batch:
            raise ValueError(
                f"SkmoeMTEBEncoder embeds text only; got a batch with fields {sorted(batch)}."
            )
        texts.extend(validate_texts(batch["text"], "a batch's text"))  # a str: not its letters
    return texts


class SkmoeMTEBEncoder:
    """An MTEB encoder (``mteb.models.EncoderProtocol``) backed by a skmoe transformer.

    Parameters
    ----------
    transformer : MoEEmbeddingTransformer
        Its ``truncate_dim``, ``max_length``, ``device``, ``dtype`` and ``cache`` apply. Output
        is always float32 unit vectors (MTEB scores floats; the model card's recipe and MTEB's
        own heads use unit rows): the transformer's scaling for sklearn heads (the default
        ``normalize=1.25``, ``"rms"``) and its centring are not applied; ``normalize=False``
        gives the unnormalised pooled rows.
    prompts_by_task_type : dict, optional
        Keys as MTEB reads them: a task type (``"Classification"``, ``"Clustering"``,
        ``"STS"``...), a prompt type (``"query"``, ``"document"``), a task name, or
        ``"<task name or type>-<prompt type>"``. Values: prompt names in the model's table
        (``"classification"``, ``"clustering"``, ``"query"``, ``"passage"``). Defaults to
        :data:`DEFAULT_PROMPT_NAMES`, keeping only names the model knows.
    prompts : dict, optional
        Same keys, but the values are raw prefixes (``{"query": "query: ", "document":
        "passage: "}`` for e5). Consulted together with ``prompts_by_task_type`` in MTEB's
        priority order; a raw prefix wins over a name for the same key.
    name : str, optional
        Model name reported in MTEB results (default: the hub id, or ``local/<folder>``).

    Notes
    -----
    When no key matches (tasks MTEB encodes without a query/document side, such as bitext
    mining), the default map does what MTEB's wrapper for nomic-embed-text-v2-moe does: the
    model's document prompt (``search_document: ``) where its table has one. Otherwise, and
    with maps of your own, the transformer's own ``prompt``/``prompt_name`` is used.
    """

    def __init__(
        self,
        transformer: Any,
        prompts_by_task_type: Mapping[str, str] | None = None,
        *,
        prompts: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.transformer = transformer
        self.prompts_by_task_type = prompts_by_task_type
        self.prompts = prompts
        self.name = name

    # -- prompts -------------------------------------------------------------------------------
    def _prompt_names(self, encoder: Any) -> dict[str, str]:
        if self.prompts_by_task_type is not None:
            return dict(self.prompts_by_task_type)
        from ..encoder.tokenization import lookup_prompt

        return {
            key: name for key, name in DEFAULT_PROMPT_NAMES.items()
            if lookup_prompt(encoder.prompts, name) is not None
        }

    def get_prompt(self, task_metadata: Any, prompt_type: Any = None) -> str:
        """The prefix this adapter applies for a task (and query/document side)."""
        get_prompt_name = _mteb("mteb.models.abs_encoder").get_prompt_name
        encoder = self.transformer.model_card()
        names = self._prompt_names(encoder)
        raw = dict(self.prompts or {})
        key = get_prompt_name({**names, **raw} or None, task_metadata, prompt_type)
        if key is None and self.prompts_by_task_type is None and not raw and "document" in names:
            key = "document"  # MTEB's nomic wrapper: ``get_prompt_name(...) or "document"``
        if key is None:
            fitted = getattr(self.transformer, "prompt_", None)
            if fitted is not None:
                return fitted
            return resolve_prompt(encoder, settings_of=self.transformer)
        if key in raw:
            return raw[key]
        return resolve_prompt(encoder, names[key])

    # -- EncoderProtocol -----------------------------------------------------------------------
    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Float32 ``[n, dim]`` embeddings of every text in ``inputs``, in order.

        ``batch_size`` and other MTEB encode kwargs are ignored: the skmoe engine batches by
        token budget (set ``batch_size``/``max_tokens_per_batch`` on the transformer).
        """
        texts = _texts_from(inputs)
        prompt = self.get_prompt(task_metadata, prompt_type)
        full = self.transformer.embed_full(texts, prompt=prompt)  # loads only for a cache miss
        unit = normalize_mode(self.transformer.normalize) is not None
        return truncate_and_normalize(full, self.transformer.truncate_dim, "l2" if unit else None)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Cosine similarity matrix (what the model is trained for)."""
        from ..similarity import cosine_matrix

        return cosine_matrix(np.asarray(embeddings1), np.asarray(embeddings2))

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Row-aligned cosine similarity."""
        from ..similarity import cosine_rows

        return cosine_rows(np.asarray(embeddings1), np.asarray(embeddings2))

    @property
    def mteb_model_meta(self) -> Any:
        """MTEB ``ModelMeta`` naming the model, the weights' fingerprint and the output width.

        Without it ``mteb.evaluate`` would not recognise the adapter as a model.
        """
        meta = _mteb("mteb.models.model_meta")
        ModelMeta, ScoringFunction = meta.ModelMeta, meta.ScoringFunction
        encoder = self.transformer.model_card()
        source = encoder.source
        name = self.name
        if name is None:
            name = str(source.name)
            if Path(name).expanduser().is_dir() or "/" not in name:
                name = f"local/{Path(name).name}"
        width = int(self.transformer.truncate_dim or encoder.embedding_dim)
        return ModelMeta.create_empty(
            overwrites={
                "name": name,
                # The digest of config + weights: results of different weights never mix.
                "revision": str(source.fingerprint),
                "embed_dim": width,
                "max_tokens": int(self.transformer.max_length or encoder.max_length),
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
                "open_weights": True,
            }
        )


def as_mteb_encoder(transformer: Any, **kwargs: Any) -> SkmoeMTEBEncoder:
    """Shorthand for :class:`SkmoeMTEBEncoder` (``kwargs`` go to its constructor)."""
    return SkmoeMTEBEncoder(transformer, **kwargs)


def _mteb(module: str) -> Any:
    """Import ``module`` of mteb, or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"the MTEB adapter needs mteb ({module}: {exc}); install it with "
                          "`pip install 'skmoe[mteb]'`.") from exc
