"""Pair similarity on the estimator and ``PairFeatures`` for pair classification and regression."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline

from skmoe.estimator import MoEEmbeddingTransformer
from skmoe.similarity import PairFeatures, cosine_matrix, cosine_rows, split_pairs


@pytest.fixture(scope="module")
def moe(random_moe_xlmr_path: Path) -> str:
    return str(random_moe_xlmr_path)


def test_cosine_helpers_match_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
    np.testing.assert_allclose(cosine_matrix(a, b), cosine_similarity(a, b), atol=1e-6)
    np.testing.assert_allclose(cosine_rows(a[:3], b), np.diag(cosine_similarity(a[:3], b)), atol=1e-6)
    assert cosine_matrix(a, b).dtype == np.float32
    with pytest.raises(ValueError, match="as many rows"):
        cosine_rows(a, b)


def test_estimator_similarity_is_cosine_of_the_embeddings(moe):
    est = MoEEmbeddingTransformer(moe, normalize=False, device="cpu")  # no fit needed; cosine normalises anyway
    a, b = ["a cat", "a dog", "stocks fell"], ["a kitten", "bonds rose"]
    before = dict(vars(est))
    sim = est.similarity(a, b)
    assert vars(est) == before  # no state
    emb = MoEEmbeddingTransformer(moe, device="cpu", normalize="l2").fit([])
    np.testing.assert_allclose(sim, emb.transform(a) @ emb.transform(b).T, atol=1e-5)
    square = est.similarity(a)
    assert square.shape == (3, 3)
    np.testing.assert_allclose(np.diag(square), 1.0, atol=1e-5)
    np.testing.assert_allclose(square, square.T, atol=1e-6)


def test_pairwise_similarity_is_row_aligned(moe):
    est = MoEEmbeddingTransformer(moe, device="cpu")
    a, b = ["one", "two", "three"], ["uno", "dos", "three"]
    rows = est.similarity_pairwise(a, b)
    assert rows.shape == (3,)
    np.testing.assert_allclose(rows, np.diag(est.similarity(a, b)), atol=1e-6)
    assert rows[2] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="as many rows"):
        est.similarity_pairwise(a, b[:2])


def test_similarity_uses_the_truncated_dimensions(moe):
    full = MoEEmbeddingTransformer(moe, normalize=False, device="cpu").fit([]).transform(["x y", "z"])
    got = MoEEmbeddingTransformer(moe, truncate_dim=8, device="cpu").similarity_pairwise(["x y"], ["z"])
    np.testing.assert_allclose(got, cosine_rows(full[:1, :8], full[1:, :8]), atol=1e-6)


def test_real_model_similarity_ranks_meaning(e5_path):
    est = MoEEmbeddingTransformer(str(e5_path), prompt="query: ")
    sim = est.similarity(["A cat is sitting on the mat."],
                         ["A kitten sits on a rug.", "Die Katze sitzt auf der Matte.", "Stock markets fell sharply."])
    assert sim[0, 0] > sim[0, 2] + 0.05 and sim[0, 1] > sim[0, 2] + 0.05


# -- PairFeatures ------------------------------------------------------------------------------------
PAIRS = [("a red car", "a crimson automobile"), ("he is cooking", "a man cooks dinner"),
         ("the sun is hot", "snow is cold"), ("I like tea", "the train leaves at nine")]


@pytest.mark.parametrize("container", [
    lambda p: pd.DataFrame(p, columns=["s1", "s2"]),
    lambda p: np.asarray(p, dtype=object),
    list,
], ids=["dataframe", "ndarray", "list-of-pairs"])
def test_pair_features_layout(moe, container):
    est = MoEEmbeddingTransformer(moe, device="cpu")  # fp32: a alone vs a + b in one batch
    pf = PairFeatures(est).fit(container(PAIRS))
    out = pf.transform(container(PAIRS))
    assert out.shape == (4, 1 + 64 + 64) == (4, pf.n_features_out_) and out.dtype == np.float32
    a, b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    u, v = pf.embedder_.transform(a), pf.embedder_.transform(b)
    np.testing.assert_allclose(out[:, 0], cosine_rows(u, v), atol=1e-5)  # of transform's rows
    assert pf.embedder_.center_ is not None  # centred on the training pairs' texts
    np.testing.assert_allclose(out[:, 1:65], np.abs(u - v), atol=1e-6)
    np.testing.assert_allclose(out[:, 65:], u * v, atol=1e-5)
    names = pf.get_feature_names_out()
    assert names[0] == "cosine" and names[1] == "abs_diff_0" and names[-1] == "product_63"
    assert not hasattr(est, "n_features_out_")  # the given embedder is cloned, not fitted in place


def test_pair_features_subset_and_names(moe):
    pf = PairFeatures(MoEEmbeddingTransformer(moe, truncate_dim=16), features=("product", "cosine")).fit(PAIRS)
    out = pf.transform(PAIRS)
    assert out.shape == (4, 17)
    assert list(pf.get_feature_names_out()[[0, -1]]) == ["product_0", "cosine"]
    before = joblib.hash(vars(pf))
    pf.transform(PAIRS[:2])
    assert joblib.hash(vars(pf)) == before


@pytest.mark.parametrize(("X", "error", "match"), [
    (pd.DataFrame({"a": ["x"], "b": ["y"], "c": ["z"]}), ValueError, "two text columns"),
    ([("only one",)], ValueError, r"shape \(n, 2\)"),
    # two columns given as [a, b] instead of pairs: the hint says how to pair them
    ([["a", "b", "c"], ["d", "e", "f"]], ValueError, r"got shape \(2, 3\).*list\(zip\(a, b\)\)"),
    ([np.array(["a", "b"]), np.array(["c", "d"])], ValueError, "two arrays/Series.*list\\(zip"),
    ([pd.Series(["a", "b"]), pd.Series(["c", "d"])], ValueError, "two arrays/Series"),
    ([("ok", "ok"), ("fine", None)], ValueError, "Column 1 of the pairs: Missing text at row 1"),
    ([("ok", "ok"), (3, "x")], TypeError, "Column 0 of the pairs: Text at row 1 is int"),
    (pd.DataFrame({"s1": ["a", "b"], "s2": ["c", None]}), ValueError,
     "Column 's2' of the pairs: Missing text at row 1"),
])
def test_pair_input_errors(X, error, match):
    with pytest.raises(error, match=match):
        split_pairs(X)


def test_unknown_features_are_rejected(moe):
    with pytest.raises(ValueError, match="features must be"):
        PairFeatures(MoEEmbeddingTransformer(moe), features=("cosine", "l1")).fit(PAIRS)
    with pytest.raises(ValueError, match="features must be"):
        PairFeatures(MoEEmbeddingTransformer(moe), features=()).fit(PAIRS)


@pytest.mark.parametrize("output_dtype", ["int8", "binary"])
def test_pair_features_refuse_coded_embeddings(moe, output_dtype):
    with pytest.raises(ValueError, match=f"PairFeatures needs float embeddings, but got {output_dtype} codes"):
        PairFeatures(MoEEmbeddingTransformer(moe, output_dtype=output_dtype)).fit(PAIRS)


def test_pair_features_take_a_sparse_embedder():
    from sklearn.feature_extraction.text import TfidfVectorizer

    pf = PairFeatures(TfidfVectorizer(), features=("cosine", "abs_diff")).fit(PAIRS)
    out = pf.transform(PAIRS)
    tfidf = TfidfVectorizer().fit([t for p in PAIRS for t in p])
    u, v = tfidf.transform([p[0] for p in PAIRS]), tfidf.transform([p[1] for p in PAIRS])
    np.testing.assert_allclose(out[:, 0], cosine_similarity(u, v).diagonal(), atol=1e-6)
    assert out.shape == (len(PAIRS), 1 + len(tfidf.vocabulary_))


def test_pair_classification_pipeline(moe):
    X = pd.DataFrame(PAIRS * 3, columns=["s1", "s2"])
    y = [1, 1, 0, 0] * 3
    pipe = Pipeline([("pairs", PairFeatures(MoEEmbeddingTransformer(moe))), ("clf", LogisticRegression())])
    assert pipe.fit(X, y).predict(X).shape == (12,)
    assert pipe.predict_proba(X.iloc[:2]).shape == (2, 2)


@pytest.mark.slow
def test_pair_regression_on_sts17_english(e5_path, sts17_dir, tmp_path):
    """Real e5 on 40 STS17 en-en pairs: the cosine feature alone tracks the gold scores."""
    lines = (sts17_dir / "STS2017.eval.v1.1" / "STS.input.track5.en-en.txt").read_text(encoding="utf-8").splitlines()
    gold = np.loadtxt(sts17_dir / "STS2017.gs" / "STS.gs.track5.en-en.txt")[:40]
    X = pd.DataFrame([line.split("\t") for line in lines[:40]], columns=["s1", "s2"])
    # The cache embeds each sentence once across the folds.
    embed = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", cache=str(tmp_path / "sts.sqlite"))
    pipe = Pipeline([("pairs", PairFeatures(embed, features=("cosine",))), ("reg", Ridge(alpha=1e-3))])
    pred = cross_val_predict(pipe, X, gold, cv=3)
    assert spearmanr(pred, gold).statistic > 0.6


def test_pairwise_similarity_refuses_pandas_sides_in_another_order(moe):
    """Row-aligned similarity paired two Series by position whatever their indexes: sentences
    and their translations, one side shuffled, scored 0.78 instead of 0.99, silently, while
    sts_report refused the same input (audit)."""
    est = MoEEmbeddingTransformer(moe, verbose=0).fit([])
    a = pd.Series(["The cat sleeps.", "A man plays guitar.", "It is raining."], index=[0, 1, 2])
    b = pd.Series(["Rain is falling.", "The cat is sleeping.", "Someone plays a guitar."],
                  index=[2, 0, 1])
    with pytest.raises(ValueError, match="different indexes"):
        est.similarity_pairwise(a, b)
    aligned = est.similarity_pairwise(a, b.loc[a.index])
    np.testing.assert_allclose(aligned, est.similarity_pairwise(list(a), list(b.loc[a.index])))


def test_pair_features_fit_transform_takes_zip_once(moe):
    """split_pairs accepts zip(a, b, strict=True), but fit used the iterator up and transform got "shape
    (0,)": PairFeatures.fit_transform and a Pipeline's fit failed on it (audit)."""
    a, b = ["x one", "y two", "z three"], ["u one", "v two", "w three"]
    pf = PairFeatures(MoEEmbeddingTransformer(moe, center=False, verbose=0))
    out = pf.fit_transform(zip(a, b, strict=True))
    np.testing.assert_array_equal(out, pf.transform(list(zip(a, b, strict=True))))
    pipe = Pipeline([("pairs", PairFeatures(MoEEmbeddingTransformer(moe, center=False,
                                                                    verbose=0))),
                     ("clf", LogisticRegression())])
    assert pipe.fit(zip(a, b, strict=True), [0, 1, 0]).predict(list(zip(a, b, strict=True))).shape == (3,)
