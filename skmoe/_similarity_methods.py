"""Similarity, search and ``embed`` of :class:`~skmoe.MoEEmbeddingTransformer`: the model's own
cosine geometry (never centred), each side with its own prompt.

The host class provides ``_model()``, ``_check_params(model)``, ``_prompt(model)`` (its own
prompt) and ``_embed_float(texts, model, prompt)`` (truncated and normalised floats).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .embedding import resolve_prompt
from .encoder.sentence import UnknownPromptError
from .postprocessing import cosine_matrix, cosine_rows
from .search import CORPUS_BLOCK, QUERY_BLOCK, check_search_params, search_vectors
from .validation import check_aligned, validate_texts


class SimilarityMixin:
    """``similarity``, ``similarity_pairwise``, ``search`` and ``embed``: every argument is
    checked and every prompt resolved before any text is embedded."""

    def similarity(self, a: Any, b: Any = None, *, query_prompt_name: str | None = None,
                   query_prompt: str | None = None, document_prompt_name: str | None = None,
                   document_prompt: str | None = None) -> np.ndarray:
        """Cosine similarity matrix ``[len(a), len(b)]`` of queries ``a`` and documents ``b``.

        ``b`` defaults to ``a``. Each side has its own prompt, resolved like the estimator's
        ``prompt_name``/``prompt`` (raw prompt wins); a side given neither uses the estimator's
        own prompt, so by default both sides share it. For retrieval with a model that has
        them: ``query_prompt_name="query", document_prompt_name="document"``.
        """
        one_side = b is None and query_prompt_name is None and query_prompt is None and (
            document_prompt_name is None and document_prompt is None)
        a = validate_texts(a, "a")
        b = a if b is None else validate_texts(b, "b")
        if one_side:
            (ea,) = self._embed_sides((a, None, None, "query"))
            return cosine_matrix(ea, ea)
        ea, eb = self._embed_sides((a, query_prompt_name, query_prompt, "query"),
                                   (b, document_prompt_name, document_prompt, "document"))
        return cosine_matrix(ea, eb)

    def similarity_pairwise(self, a: Any, b: Any, *, query_prompt_name: str | None = None,
                            query_prompt: str | None = None,
                            document_prompt_name: str | None = None,
                            document_prompt: str | None = None) -> np.ndarray:
        """Row-aligned cosine similarity ``[n]`` of ``a[i]`` and ``b[i]`` (prompts as in
        :meth:`similarity`: ``a`` takes the query prompt, ``b`` the document prompt). Two
        pandas sides whose indexes hold the same labels in another order are refused, as in
        the reports: by position they would pair other rows."""
        check_aligned(a=a, b=b)  # 0.78 for translations paired across shuffled indexes
        a, b = validate_texts(a, "a"), validate_texts(b, "b")
        if len(a) != len(b):  # before embedding either side
            raise ValueError(f"Row-aligned similarity needs as many rows in a as in b ({len(a)} "
                             f"!= {len(b)}).")
        return cosine_rows(*self._embed_sides((a, query_prompt_name, query_prompt, "query"),
                                              (b, document_prompt_name, document_prompt,
                                               "document")))

    def search(self, queries: Any, corpus: Any, top_k: int = 10, *,
               query_prompt_name: str | None = "query", query_prompt: str | None = None,
               document_prompt_name: str | None = "document", document_prompt: str | None = None,
               query_block: int = QUERY_BLOCK, corpus_block: int = CORPUS_BLOCK,
               ) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` corpus texts most similar (cosine) to each query, best first.

        Both sides are embedded through :meth:`embed`'s road (the cache applies, per prompt),
        queries with the query prompt and the corpus with the document prompt (raw
        ``query_prompt``/``document_prompt`` win; pass ``None`` for both of a side to use the
        estimator's own prompt). Scoring is :func:`skmoe.search.search_vectors`: exact, in
        bounded blocks; ties go to the lower corpus index.

        Returns
        -------
        indices : ndarray of int64, shape (n_queries, min(top_k, n_corpus))
        scores : ndarray of float32, same shape
        """
        check_search_params(top_k, query_block, corpus_block)
        queries, corpus = validate_texts(queries, "queries"), validate_texts(corpus, "corpus")
        if not corpus:
            raise ValueError("the corpus is empty")
        q, c = self._embed_sides((queries, query_prompt_name, query_prompt, "query"),
                                 (corpus, document_prompt_name, document_prompt, "document"))
        return search_vectors(q, c, top_k, query_block=query_block, corpus_block=corpus_block)

    def _embed_sides(self, *sides: tuple[list[str], str | None, str | None, str]
                     ) -> list[np.ndarray]:
        """:meth:`embed` of validated texts, each side ``(texts, prompt_name, prompt, side)``
        with its own prompt (the estimator's when both are None). Every prompt is resolved
        before anything is embedded; ``side`` ("query" or "document") names the arguments in
        an unknown-prompt error."""
        model = self._model()
        self._check_params(model)
        prompts = [self._side_prompt(model, name, prompt, side) for _, name, prompt, side in sides]
        return [self._embed_float(side[0], model, prompt) for side, prompt in zip(sides, prompts, strict=True)]

    def _side_prompt(self, model: Any, prompt_name: str | None,
                     prompt: str | None, side: str) -> str:
        if prompt_name is None and prompt is None:
            return self._prompt(model)
        try:
            return resolve_prompt(model, prompt_name, prompt)
        except UnknownPromptError as exc:  # say which argument, not the estimator's prompt=
            raise UnknownPromptError(
                exc.name, exc.model, exc.known,
                f"{side}_prompt=... (e5 models: query_prompt='query: ', document_prompt="
                f"'passage: '), or {side}_prompt_name=None to use the estimator's own prompt "
                f"({self._prompt(model)!r})") from None

    def embed(self, X: Any) -> np.ndarray:
        """Float32 embeddings (truncated and normalised as configured), fitting nothing.

        Follows the current parameters (prompt included), fitted or not; ``output_dtype`` does
        not apply.
        """
        return self._embed_sides((validate_texts(X), None, None, ""))[0]
