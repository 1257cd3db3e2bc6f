"""Inputs that gave a wrong score without a word (audit of 2026-12-04): each is refused or
warned about, naming the argument and the row; STS and bitext score the model's own cosines."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, TransformerMixin

from skmoe import MoEEmbeddingTransformer
from skmoe.evaluation import (
    DataError,
    FewShotSplit,
    bitext_report,
    cluster_report,
    prepare_data,
    sts_report,
)
from skmoe.postprocessing import UNCENTRED_NORMALIZE

RNG = np.random.default_rng(0)
SRC = RNG.normal(size=(20, 8))
TGT = SRC + 0.01 * RNG.normal(size=SRC.shape)


def test_a_nan_row_of_precomputed_embeddings_is_named():
    """One NaN value won every argmax: bitext accuracy fell from 1.0 to 0.05, unwarned."""
    bad = TGT.copy()
    bad[7, 3] = np.nan
    langs, ids = ["a"] * 20 + ["b"] * 20, list(range(20)) * 2
    assert bitext_report(np.vstack([SRC, TGT]), langs, ids).accuracy.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="X row 27 has a NaN or infinite value"):
        bitext_report(np.vstack([SRC, bad]), langs, ids)
    with pytest.raises(ValueError, match="X2 row 7 has a NaN or infinite value"):
        sts_report(SRC, bad, np.arange(20.0))


def test_bitext_refuses_missing_ids():
    """Two NaN ids matched each other: two unrelated sentences scored as translations."""
    ids = np.arange(20.0)
    with_gap = np.concatenate([np.where(ids == 3, np.nan, ids), np.where(ids == 7, np.nan, ids)])
    with pytest.raises(ValueError, match=r"ids has a missing value \(None/NaN\) at row 3"):
        bitext_report(np.vstack([SRC, TGT]), ["a"] * 20 + ["b"] * 20, with_gap)


class _Centring(TransformerMixin, BaseEstimator):
    """Records the ``center`` it was fitted with; centres on its fit rows like skmoe's."""

    def __init__(self, center: bool = True) -> None:
        self.center = center

    def fit(self, X, y=None):
        self.mean_ = self._raw(X).mean(axis=0) if self.center else 0.0
        return self

    def transform(self, X):
        return self._raw(X) - self.mean_

    @staticmethod
    def _raw(X):
        return np.stack([np.random.default_rng(len(t)).normal(size=4) + 3.0 for t in X])


def test_sts_and_bitext_fit_an_unfitted_transformer_without_a_centre(fast_moe):
    """A clone fitted on the evaluated sentences with center=True scored centred cosines learned
    from the test pairs (e5 STS17 track 2: 0.635 against the model's 0.530), and a track's
    score depended on the other tracks of the call."""
    a = ["a cat sits", "dogs run fast", "the sun is hot", "rain falls", "I like tea",
         "cars are loud"]
    b = ["a cat is sitting", "a dog runs", "it is sunny", "it rains", "tea is nice", "a bus"]
    gold = [4.5, 3.0, 3.5, 4.0, 2.5, 1.0]
    est = MoEEmbeddingTransformer(fast_moe, verbose=0)
    own = est.similarity_pairwise(a, b)
    got = sts_report(a, b, gold, transformer=est).cosine_spearman[0]
    assert got == pytest.approx(spearmanr(own, gold).statistic)
    # nothing learned: two groups in one call score as each does alone
    alone = sts_report(a[:3], b[:3], gold[:3], transformer=est).cosine_spearman[0]
    both = sts_report(a, b, gold, groups=["x"] * 3 + ["y"] * 3, transformer=est)
    assert both.cosine_spearman[0] == pytest.approx(alone)
    assert not hasattr(est, "center_")  # the user's estimator stays unfitted

    class Seen(_Centring):
        fitted_with: list[bool] = []

        def fit(self, X, y=None):
            Seen.fitted_with.append(self.center)
            return super().fit(X, y)

    sts_report(a, b, gold, transformer=Seen())
    bitext_report(a + b, ["a"] * 6 + ["b"] * 6, list(range(6)) * 2, transformer=Seen())
    from sklearn.pipeline import make_pipeline

    sts_report(a, b, gold, transformer=make_pipeline(Seen()))
    assert Seen.fitted_with == [False, False, False]
    fitted = Seen().fit(a + b)  # a fitted one is used as it is, centre and all
    Seen.fitted_with.clear()
    sts_report(a, b, gold, transformer=fitted)
    assert Seen.fitted_with == [] and fitted.center


@pytest.mark.parametrize("output_dtype", ["int8", "binary"])
def test_sts_and_bitext_refuse_codes(fast_moe, output_dtype):
    est = MoEEmbeddingTransformer(fast_moe, output_dtype=output_dtype, verbose=0)
    texts = [f"sentence number {i}" for i in range(20)]
    with pytest.raises(ValueError, match=f"sts_report needs float embeddings, but got {output_dtype} codes"):
        sts_report(texts[:10], texts[10:], np.arange(10.0), transformer=est.fit(texts))
    with pytest.raises(ValueError, match="bitext_report needs float embeddings"):
        bitext_report(texts, ["a"] * 10 + ["b"] * 10, list(range(10)) * 2,
                      transformer=est.fit(texts))


@pytest.mark.parametrize("in_pipeline", [False, True])
def test_reports_refuse_declared_codes_before_encoding(recorder, in_pipeline):
    from sklearn.pipeline import make_pipeline

    from skmoe.evaluation import cluster_report

    class Coded(recorder):
        output_dtype = "int8"

    inner = Coded()
    tr = make_pipeline(inner) if in_pipeline else inner
    texts = [f"sentence number {i}" for i in range(20)]
    refused = "needs float embeddings, but got int8"
    with pytest.raises(ValueError, match=f"sts_report {refused}"):
        sts_report(texts[:10], texts[10:], np.arange(10.0), transformer=tr)
    with pytest.raises(ValueError, match=f"bitext_report {refused}"):
        bitext_report(texts, ["a"] * 10 + ["b"] * 10, list(range(10)) * 2, transformer=tr)
    with pytest.raises(ValueError, match=f"cluster_report {refused}"):
        cluster_report(texts, [i % 2 for i in range(20)], transformer=tr)
    assert inner.calls == []  # refused before a single text was encoded
    with pytest.raises(ValueError, match="sts_report needs float embeddings, but got uint8"):
        sts_report(np.zeros((2, 4), np.uint8), np.zeros((2, 4), np.uint8), [1.0, 2.0])


def test_reports_name_the_argument_that_holds_a_bad_row(recorder):
    a, b = ["x", "y", "z"], ["x", None, "z"]
    with pytest.raises(ValueError, match=r"^X2: Missing text at row 1"):
        sts_report(a, b, [1.0, 2.0, 3.0], transformer=recorder())
    with pytest.raises(TypeError, match="X2 is None"):
        sts_report(a, None, [1.0, 2.0, 3.0], transformer=recorder())


def test_bad_split_parameters_are_refused_by_name():
    y = np.array(["a"] * 5 + ["b"] * 5, dtype=object)
    y[3] = None
    with pytest.raises(ValueError, match=r"y has a missing value \(None/NaN\) at row 3"):
        list(FewShotSplit(2, random_state=0).split(np.zeros(10), y))
    yf = np.array([0.0] * 5 + [1.0] * 5)
    yf[2] = np.nan  # was: a class of its own
    with pytest.raises(ValueError, match="at row 2"):
        list(FewShotSplit(2, random_state=0).split(np.zeros(10), yf))
    with pytest.raises(ValueError, match="test_size must be an int, a float or None, got True"):
        list(FewShotSplit(2, test_size=True).split(np.zeros(10), [0] * 5 + [1] * 5))
    X = RNG.normal(size=(20, 4))
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match=f"max_documents must be an int >= 1, got {bad}"):
            cluster_report(X, [0, 1] * 10, max_documents=bad)


def _parallel(n_ids: int = 12) -> pd.DataFrame:
    rows = [{"text": f"{lang} sentence {i}", "category": "ab"[i % 2], "language": lang,
             "index_id": i, "split": "train" if i < 8 else "test"}
            for lang in ("en", "fr") for i in range(n_ids)]
    return pd.DataFrame(rows)


def test_prepare_data_checks_the_test_fraction_and_the_own_split_ids():
    df = _parallel()
    for bad in (0, 0.0, -0.2, 1, 1.5, True, "0.3"):
        with pytest.raises(DataError, match=r"test_fraction must be a number in \(0, 1\)"):
            prepare_data(df, split_column=None, test_fraction=bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_data(df, id_column="index_id")  # each id in one split: quiet
    leaky = df.copy()
    leaky.loc[(leaky.language == "fr") & (leaky.index_id < 2), "split"] = "test"
    with pytest.warns(UserWarning, match=r"2 id\(s\) of column 'index_id' \(first: 0\) have "
                      "training and test rows in column 'split'"):
        prepare_data(leaky, id_column="index_id")


def test_a_centre_from_few_texts_is_warned_about(fast_moe):
    """Two fit texts came out exactly opposite (cosine -1 for paraphrases), unwarned."""
    est = MoEEmbeddingTransformer(fast_moe, verbose=0)
    with pytest.warns(UserWarning, match="centre from only 2 texts.*two texts come out opposite"):
        out = est.fit_transform(["a dog", "a puppy"])
    assert (out[0] @ out[1]) / (np.linalg.norm(out[0]) * np.linalg.norm(out[1])) == \
        pytest.approx(-1.0, abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MoEEmbeddingTransformer(fast_moe, verbose=0).fit([f"text {i}" for i in range(16)])
        MoEEmbeddingTransformer(fast_moe, verbose=0, center=False,
                                normalize=UNCENTRED_NORMALIZE).fit(["a", "b"])
