"""BERTopic backend: make BERTopic embed with skmoe instead of silently using its default model.

BERTopic's ``select_backend`` recognises its own ``BaseEmbedder`` subclasses and sklearn
``Pipeline`` objects, but not a bare sklearn transformer: ``BERTopic(embedding_model=
MoEEmbeddingTransformer())`` falls back to ``all-MiniLM-L6-v2`` without a word (BERTopic
issues 941 and 1651). Pass :class:`SkmoeBackend` (or ``make_pipeline(transformer)``) instead::

    from bertopic import BERTopic
    from skmoe.integrations.bertopic import SkmoeBackend

    topic_model = BERTopic(embedding_model=SkmoeBackend(MoEEmbeddingTransformer(prompt_name="clustering")))

Requires the ``bertopic`` extra (``pip install skmoe[bertopic]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from bertopic.backend import BaseEmbedder
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "skmoe.integrations.bertopic needs BERTopic; install it with `pip install skmoe[bertopic]`."
    ) from exc

__all__ = ["SkmoeBackend", "bertopic_embedder"]


class SkmoeBackend(BaseEmbedder):
    """A BERTopic embedding backend that encodes with a skmoe transformer.

    Parameters
    ----------
    transformer : MoEEmbeddingTransformer
        Encodes the documents; its prompt, truncation, normalisation and cache apply. It need
        not be fitted. For topic modelling the nomic model's ``prompt_name="clustering"`` is
        the matching prompt.
    word_transformer : MoEEmbeddingTransformer, optional
        Encodes single words and keyphrases (for representation models such as
        ``KeyBERTInspired`` or ``MaximalMarginalRelevance``); defaults to ``transformer``.

    Notes
    -----
    Output is float32, uncentred (the transformer's ``embed``), every row of the length
    ``normalize`` gives (1.25 by default; ``"l2"``: unit rows), so Euclidean HDBSCAN on it ranks
    like cosine. Quantised ``output_dtype`` settings are ignored here: UMAP and HDBSCAN want
    floats. The backend pickles without weights, like the
    transformer, so ``BERTopic.save(serialization="pickle")`` stays small.
    """

    def __init__(self, transformer: Any, word_transformer: Any = None) -> None:
        super().__init__(embedding_model=transformer, word_embedding_model=word_transformer)
        self.transformer = transformer
        self.word_transformer = word_transformer

    def embed(self, documents: list[str], verbose: bool = False) -> np.ndarray:
        """Float32 ``[n, dim]`` embeddings of ``documents``.

        ``verbose`` is ignored; set ``verbose=1`` on the transformer for a progress bar.
        """
        return self.transformer.embed(list(documents))

    def embed_words(self, words: list[str], verbose: bool = False) -> np.ndarray:
        """Embeddings of words/keyphrases, with ``word_transformer`` when given."""
        return (self.word_transformer or self.transformer).embed(list(words))


def bertopic_embedder(transformer: Any, word_transformer: Any = None) -> SkmoeBackend:
    """Shorthand for :class:`SkmoeBackend`."""
    return SkmoeBackend(transformer, word_transformer)
