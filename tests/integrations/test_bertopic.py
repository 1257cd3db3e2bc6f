"""BERTopic with the skmoe backend on real English SIB-200 sentences (real e5 weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bertopic")

from _sib200 import read_sib200  # noqa: E402
from bertopic import BERTopic  # noqa: E402
from bertopic.backend._sklearn import SklearnEmbedder  # noqa: E402
from bertopic.backend._utils import select_backend  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.feature_extraction.text import CountVectorizer  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from skmoe.estimator import MoEEmbeddingTransformer  # noqa: E402
from skmoe.integrations.bertopic import SkmoeBackend, bertopic_embedder  # noqa: E402

N_TOPICS = 7


class SpyBackend(SkmoeBackend):
    """Records every batch BERTopic asks the backend to embed."""

    def __init__(self, transformer):
        super().__init__(transformer)
        self.calls: list[list[str]] = []
        self.outputs: list[np.ndarray] = []

    def embed(self, documents, verbose=False):
        self.calls.append(list(documents))
        self.outputs.append(super().embed(documents, verbose))
        return self.outputs[-1]


@pytest.fixture(scope="module")
def corpus(sib200_dir):
    return read_sib200(sib200_dir, "train", 350)


@pytest.fixture(scope="module")
def e5(e5_path):
    return MoEEmbeddingTransformer(str(e5_path), prompt="query: ")


def _topic_model(embedding_model) -> BERTopic:
    # PCA + KMeans instead of UMAP + HDBSCAN: deterministic and quick; every stage is swappable.
    return BERTopic(
        embedding_model=embedding_model,
        umap_model=PCA(n_components=5, random_state=0),
        hdbscan_model=KMeans(n_clusters=N_TOPICS, n_init=10, random_state=0),
        vectorizer_model=CountVectorizer(stop_words="english"),
    )


@pytest.mark.slow
def test_bertopic_uses_skmoe_embeddings_and_finds_topics(corpus, e5):
    docs, categories = corpus
    backend = SpyBackend(e5)
    topic_model = _topic_model(backend)
    topics, _ = topic_model.fit_transform(docs)

    # BERTopic kept our backend (no silent fallback) and embedded every document once, with it.
    assert topic_model.embedding_model is backend
    assert backend.calls == [docs]
    ours = backend.outputs[0]
    # ... and what it returned is the transformer's own output (batching may move the last bit).
    np.testing.assert_allclose(ours[:20], e5.fit(docs[:1]).transform(docs[:20]), atol=1e-5)
    topics = np.asarray(topics)
    assert sorted(set(topics)) == list(range(N_TOPICS))
    # topic_embeddings_ are BERTopic's per-topic means of the document embeddings it used.
    expected = np.stack([ours[topics == k].mean(axis=0) for k in range(N_TOPICS)])
    np.testing.assert_allclose(topic_model.topic_embeddings_, expected, atol=1e-6)

    # The topics mean something: they agree with SIB-200's human categories far above chance.
    nmi = normalized_mutual_info_score(categories, topics)
    chance = normalized_mutual_info_score(np.random.default_rng(0).permutation(categories), topics)
    print(f"NMI(topics, SIB-200 categories) = {nmi:.3f}, permuted = {chance:.3f}")
    assert nmi > 0.25 and nmi > 5 * chance, (nmi, chance)
    info = topic_model.get_topic_info()
    assert len(info) == N_TOPICS and all(len(r) > 0 for r in info["Representation"])

    # New documents go through the same backend.
    new_topics, _ = topic_model.transform(docs[:10])
    assert backend.calls[-1] == docs[:10]
    assert set(new_topics) <= set(range(N_TOPICS))


def test_select_backend_keeps_the_skmoe_backend(e5):
    backend = bertopic_embedder(e5)
    assert select_backend(backend) is backend


@pytest.mark.slow
def test_pipeline_route_is_equivalent(corpus, e5):
    docs, _ = corpus
    wrapped = select_backend(make_pipeline(e5))
    assert isinstance(wrapped, SklearnEmbedder)
    np.testing.assert_allclose(
        wrapped.embed(docs[:20]), SkmoeBackend(e5).embed(docs[:20]), atol=1e-6
    )
