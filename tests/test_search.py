"""Exact top-k search in bounded blocks (``skmoe.search``) and asymmetric query/document prompts
on the estimator (``similarity``, ``similarity_pairwise``, ``search``)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import skmoe.search as search_mod
from skmoe.datasets import load_sib200_sample
from skmoe.encoder.sentence import UnknownPromptError
from skmoe.estimator import MoEEmbeddingTransformer
from skmoe.postprocessing import cosine_matrix
from skmoe.search import search_vectors


def naive(q: np.ndarray, c: np.ndarray, k: int, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The reference: the full score matrix, stable argsort (ties by corpus index)."""
    s = cosine_matrix(q, c) if normalize else q.astype(np.float32) @ c.astype(np.float32).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def tied_data(seed: int, nq: int = 13, n: int = 57, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Small integer vectors: dot products are exact and many of them tie."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(nq, d)).astype(np.float32)
    c = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    c[10:20] = c[0]  # duplicated rows: equal scores for every query
    return q, c


@pytest.mark.parametrize("top_k", [1, 3, 10, 57, 100])
@pytest.mark.parametrize(("query_block", "corpus_block"), [(1, 1), (4, 7), (13, 57), (1000, 1000)])
def test_exact_with_ties_and_any_block_size(top_k, query_block, corpus_block):
    q, c = tied_data(0)
    want_i, want_s = naive(q, c, top_k, normalize=False)
    assert want_i.shape == (13, min(top_k, 57))
    # the data really has ties at the cut, or the test proves nothing about tie order
    s = q @ c.T
    assert any(len(np.unique(row)) < len(row) for row in s)
    got_i, got_s = search_vectors(q, c, top_k, normalize=False, query_block=query_block,
                                  corpus_block=corpus_block)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s)
    assert got_i.dtype == np.int64 and got_s.dtype == np.float32


def test_all_scores_equal_keeps_corpus_order():
    q, c = np.ones((3, 4), np.float32), np.ones((20, 4), np.float32)
    idx, val = search_vectors(q, c, 5, corpus_block=3)
    np.testing.assert_array_equal(idx, np.tile(np.arange(5), (3, 1)))
    np.testing.assert_allclose(val, 1.0, atol=1e-6)


def test_cosine_matches_naive_on_random_floats():
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(20, 16)), rng.normal(size=(300, 16)) * rng.uniform(0.1, 9, (300, 1))
    want_i, want_s = naive(q, c, 7, normalize=True)
    for blocks in [(3, 11), (20, 300), (64, 4096)]:
        got_i, got_s = search_vectors(q, c, 7, query_block=blocks[0], corpus_block=blocks[1])
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_allclose(got_s, want_s, atol=1e-6)


def test_never_allocates_the_full_score_matrix(monkeypatch):
    rng = np.random.default_rng(2)
    q = rng.normal(size=(200, 16)).astype(np.float32)
    c = rng.normal(size=(20_000, 16)).astype(np.float32)
    shapes = []
    real = search_mod._block_scores
    monkeypatch.setattr(search_mod, "_block_scores",
                        lambda a, b: shapes.append((len(a), len(b))) or real(a, b))
    tracemalloc.start()
    try:
        idx, _ = search_vectors(q, c, 5, query_block=50, corpus_block=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(shapes) == 4 * 20 and max(shapes) == (50, 1000)
    full = 200 * 20_000 * 4  # bytes of the [queries, corpus] float32 matrix
    assert peak < full / 8, f"peak {peak} bytes, the full score matrix is {full}"
    np.testing.assert_array_equal(idx, naive(q, c, 5, normalize=True)[0])


def test_memory_mapped_corpus(tmp_path):
    rng = np.random.default_rng(3)
    q, c = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(100, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", c)
    got = search_vectors(q, np.load(tmp_path / "c.npy", mmap_mode="r"), 3, corpus_block=16)
    np.testing.assert_array_equal(got[0], naive(q, c, 3, normalize=True)[0])


@pytest.mark.parametrize(("q", "c", "kwargs", "match"), [
    (np.ones((2, 3)), np.ones((4, 5)), {}, "3 features but the corpus has 5"),
    (np.ones(3), np.ones((4, 3)), {}, "2-D"),
    (np.ones((2, 3)), np.ones((0, 3)), {}, "corpus is empty"),
    (np.ones((2, 3)), np.ones((4, 3)), {"top_k": 0}, "top_k must be an int >= 1"),
    (np.ones((2, 3)), np.ones((4, 3)), {"corpus_block": 0}, "corpus_block"),
    (np.ones((2, 3)), np.array([[1, 2, 3], [4, np.nan, 6.0]]), {}, "corpus row 1 has a NaN"),
    (np.array([[1, 2, 3], [np.inf, 0, 0]]), np.ones((4, 3)), {}, "queries row 1"),
])
def test_bad_input_is_named(q, c, kwargs, match):
    with pytest.raises(ValueError, match=match):
        search_vectors(q, c, **kwargs)


# -- the estimator: asymmetric prompts -----------------------------------------------------------
TEXTS = ["a cat sat on the mat", "stocks fell sharply", "the weather is mild"]


def test_query_and_document_prompts_reach_the_model(fast_moe, tmp_path):
    est = MoEEmbeddingTransformer(str(fast_moe), device="cpu", verbose=0,
                                  cache=str(tmp_path / "c.sqlite"))
    same = est.similarity(TEXTS)
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-5)  # default: one prompt both sides
    asym = est.similarity(TEXTS, TEXTS, query_prompt_name="query", document_prompt_name="document")
    assert np.diag(asym).max() < 0.9999  # same text, different prompts: different vectors
    # each side is exactly the estimator with that prompt (the one resolution path)
    q = MoEEmbeddingTransformer(str(fast_moe), prompt_name="query", device="cpu").embed(TEXTS)
    d = MoEEmbeddingTransformer(str(fast_moe), prompt_name="passage", device="cpu").embed(TEXTS)
    np.testing.assert_allclose(asym, cosine_matrix(q, d), atol=1e-5)
    raw = est.similarity(TEXTS, query_prompt="search_query: ", document_prompt="search_document: ")
    np.testing.assert_allclose(raw, asym, atol=1e-6)
    rows = est.similarity_pairwise(TEXTS, TEXTS, query_prompt_name="query",
                                   document_prompt_name="document")
    np.testing.assert_allclose(rows, np.diag(asym), atol=1e-6)
    # the cache keeps each prompt's vectors apart and serves them again
    before = est.cache_stats()
    again = est.similarity(TEXTS, TEXTS, query_prompt_name="query", document_prompt_name="document")
    after = est.cache_stats()
    np.testing.assert_array_equal(again, asym)
    assert after.misses == before.misses and after.hits == before.hits + 2 * len(TEXTS)


def test_estimator_search_ranks_by_asymmetric_cosine(fast_moe):
    est = MoEEmbeddingTransformer(str(fast_moe), device="cpu", verbose=0)
    corpus = [f"document number {i} about topic {i % 3}" for i in range(12)]
    idx, scores = est.search(TEXTS, corpus, top_k=4, corpus_block=5)
    sim = est.similarity(TEXTS, corpus, query_prompt_name="query", document_prompt_name="document")
    want = np.argsort(-sim, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(sim, want, axis=1), atol=1e-5)
    with pytest.raises(UnknownPromptError, match="nonsense.*Pass query_prompt=.*or "
                       "query_prompt_name=None to use the estimator's own prompt"):
        est.search(TEXTS, corpus, query_prompt_name="nonsense")
    with pytest.raises(UnknownPromptError, match="'nonsense'.*Pass document_prompt="):
        est.similarity(TEXTS, corpus, document_prompt_name="nonsense")


def test_search_on_a_model_without_prompt_table_names_the_side(e5_path):
    """e5 has no prompt table: search's default prompt names cannot resolve, and the error
    says which argument to pass (not the estimator's prompt=, which the user already set)."""
    est = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", device="cpu", verbose=0)
    with pytest.raises(UnknownPromptError, match=r"'query'.*no prompt table.*query_prompt=.*"
                       r"query_prompt_name=None to use the estimator's own prompt \('query: '\)"):
        est.search(["where do cats sleep?"], ["cats sleep on sofas"])
    idx, _ = est.search(["where do cats sleep?"], ["stocks fell", "cats sleep on sofas"], top_k=1,
                        query_prompt="query: ", document_prompt="passage: ")
    assert idx.tolist() == [[1]]


@pytest.mark.slow
def test_english_queries_find_their_french_translations(e5_path):
    df = load_sib200_sample(["eng_Latn", "fra_Latn"])
    en = df[df.language == "eng_Latn"].set_index("index_id")
    fr = df[df.language == "fra_Latn"].set_index("index_id").loc[en.index]  # pair by index_id
    est = MoEEmbeddingTransformer(str(e5_path), device="cpu", verbose=0)
    idx, _ = est.search(en.text.tolist(), fr.text.tolist(), top_k=1,
                        query_prompt="query: ", document_prompt="passage: ")
    top1 = float(np.mean(idx[:, 0] == np.arange(len(en))))
    chance = 1 / len(fr)
    assert top1 > chance + 0.5, f"top-1 {top1:.3f} vs chance {chance:.3f}"


def test_inputs_checked_before_any_text_is_embedded(tmp_path):
    """Lengths, top_k and empty corpora were checked after embedding both sides (150 s on 400
    texts); a model that does not exist proves nothing was loaded."""
    from skmoe import MoEEmbeddingTransformer

    est = MoEEmbeddingTransformer(str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match=r"as many rows in a as in b \(1 != 2\)"):
        est.similarity_pairwise(["a"], ["b", "c"])
    with pytest.raises(ValueError, match="top_k must be an int >= 1, got 0"):
        est.search(["q"], ["c"], top_k=0)
    with pytest.raises(ValueError, match="the corpus is empty"):
        est.search(["q"], [])
    with pytest.raises(ValueError, match=r"^b: Missing text at row 1"):
        est.similarity_pairwise(["a", "b"], ["b", None])
    with pytest.raises(ValueError, match=r"^corpus: Missing text at row 0"):
        est.search(["q"], [None])


def test_scores_stay_in_range_and_odd_inputs_get_plain_errors():
    import scipy.sparse as sp

    from skmoe.postprocessing import cosine_matrix, cosine_rows

    x = np.random.default_rng(3).normal(size=(50, 384)).astype(np.float32)
    assert cosine_matrix(x, x).max() <= 1.0 and cosine_rows(x, x).max() <= 1.0
    _, scores = search_vectors(x, x, top_k=1)
    assert scores.max() <= 1.0
    with pytest.raises(TypeError, match=r"corpus is a scipy sparse matrix.*corpus.toarray\(\)"):
        search_vectors(x, sp.csr_matrix(x))
    with pytest.raises(ValueError, match=r"cosines need 2-D arrays .* got shapes \(384,\)"):
        cosine_matrix(x[0], x)
    with pytest.raises(ValueError, match="vectors differ in width: 384 vs 10"):
        cosine_rows(x, x[:, :10])
