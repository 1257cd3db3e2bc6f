"""``center=True`` (the default): fit learns the mean unit vector of its texts, transform removes
it before normalising; embed, similarity and search keep the model's own geometry."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from test_estimator import forward_log, mixed_texts

from skmoe import MoEEmbeddingTransformer
from skmoe.postprocessing import DEFAULT_NORMALIZE, fit_center, truncate_and_normalize


@pytest.fixture(scope="module")
def moe(random_moe_xlmr_path) -> str:
    return str(random_moe_xlmr_path)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_transform_subtracts_the_fit_texts_mean_unit_vector_then_rescales(moe):
    train, new = mixed_texts(40, seed=1, max_words=12), ["an unseen text", "noch einer", "x"]
    est = MoEEmbeddingTransformer(moe).fit(train)
    raw = MoEEmbeddingTransformer(moe, normalize=False, center=False).fit([])
    centre = _unit(raw.transform(train)).mean(axis=0)
    np.testing.assert_allclose(est.center_, centre, atol=1e-6)
    assert est.center_.dtype == np.float32 and est.center_.shape == (64,)
    expected = DEFAULT_NORMALIZE * _unit(_unit(raw.transform(new)) - centre)
    out = est.transform(new)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), DEFAULT_NORMALIZE, atol=1e-5)
    # the centre is learned, not a transform-batch statistic: a row alone = its row in a batch
    for i, text in enumerate(new):
        np.testing.assert_allclose(est.transform([text])[0], out[i], atol=1e-5)
    # centring changes the directions: the model's own vectors differ
    plain = MoEEmbeddingTransformer(moe, center=False).fit(train).transform(new)
    assert np.abs(plain - out).max() > 1e-2


def test_fit_transform_runs_the_model_once_and_matches_fit_then_transform(moe):
    texts = mixed_texts(50, seed=3, max_words=8)
    est = MoEEmbeddingTransformer(moe)
    with forward_log(est) as shapes:
        out = est.fit_transform(texts)
    assert sum(rows for rows, _ in shapes) == len(texts)
    np.testing.assert_allclose(out, clone(est).fit(texts).transform(texts), atol=1e-6)
    # centred on its own texts, the output's mean direction is gone
    assert np.linalg.norm(out.mean(axis=0)) < 0.5 * np.linalg.norm(
        MoEEmbeddingTransformer(moe).fit([]).transform(texts).mean(axis=0))


@pytest.mark.parametrize("train", [[], ["only one"], ["same"] * 30], ids=["none", "one", "copies"])
def test_fewer_than_two_fit_texts_learn_no_centre(moe, train):
    """30 copies of one text (a column of empty cells) learned that text as the centre, and
    every row of it became a zero vector, unwarned."""
    texts = ["a", "b c", "d e f"]
    est = MoEEmbeddingTransformer(moe).fit(train)
    assert est.center_ is None
    np.testing.assert_array_equal(
        est.transform(texts), MoEEmbeddingTransformer(moe, center=False).fit(train).transform(texts))


def test_embed_similarity_and_search_keep_the_model_geometry(moe):
    train, a, b = mixed_texts(30, seed=5, max_words=10), ["one two", "drei vier"], ["five", "six"]
    est = MoEEmbeddingTransformer(moe).fit(train)
    plain = MoEEmbeddingTransformer(moe, center=False).fit([])
    np.testing.assert_allclose(est.embed(a), plain.transform(a), atol=1e-6)
    np.testing.assert_allclose(est.similarity(a, b), plain.similarity(a, b), atol=1e-6)
    np.testing.assert_allclose(est.search(a, b, top_k=2)[1], plain.search(a, b, top_k=2)[1],
                               atol=1e-6)


def test_centre_follows_truncate_dim(moe):
    train, texts = mixed_texts(20, seed=6, max_words=8), ["x y", "z"]
    est = MoEEmbeddingTransformer(moe, truncate_dim=16).fit(train)
    raw = MoEEmbeddingTransformer(moe, normalize=False, center=False).fit([])
    full = raw.transform(train)
    assert est.center_.shape == (16,)
    np.testing.assert_allclose(est.center_, fit_center(full, 16), atol=1e-6)
    np.testing.assert_allclose(
        est.transform(texts),
        truncate_and_normalize(raw.transform(texts), 16, DEFAULT_NORMALIZE, fit_center(full, 16)), atol=1e-5)


def test_changing_center_after_fit_asks_for_a_refit(moe):
    est = MoEEmbeddingTransformer(moe).fit(["a", "b"])
    est.set_params(center=False)
    with pytest.raises(ValueError, match="center changed after fit .*True.*False.*call fit again"):
        est.transform(["x"])
    assert est.fit(["a", "b"]).center_ is None  # refit: no centre learned


def test_centre_travels_with_pickle_and_clone_forgets_it(moe):
    train, texts = mixed_texts(20, seed=7, max_words=8), ["p q", "r"]
    est = MoEEmbeddingTransformer(moe).fit(train)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.center_, est.center_)
    np.testing.assert_array_equal(back.transform(texts), est.transform(texts))
    assert not hasattr(clone(est), "center_")


def test_rows_equal_to_the_centre_give_zero_rows_not_nan():
    x = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    out = truncate_and_normalize(x, None, DEFAULT_NORMALIZE, np.array([0.6, 0.8], np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[1]), DEFAULT_NORMALIZE, atol=1e-5)


def test_few_distinct_fit_texts_warn_by_their_distinct_count(moe):
    with pytest.warns(UserWarning, match="centre from only 3 distinct texts"):
        MoEEmbeddingTransformer(moe).fit(["a", "b", "c"] * 10)


def test_fit_center_and_the_shape_check():
    assert fit_center(np.ones((1, 4), dtype=np.float32), None) is None
    x = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(fit_center(x, None), [0.3, 0.9], atol=1e-7)
    with pytest.raises(ValueError, match=r"center has shape \(3,\), the rows have 2 features"):
        truncate_and_normalize(x, None, 2.0, np.zeros(3, dtype=np.float32))
