import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from skmoe.evaluation import EmbeddingSource, embed


def test_precomputed_passthrough_and_rows():
    X = np.arange(12, dtype=float).reshape(4, 3)
    src = EmbeddingSource(X)
    assert len(src) == 4 and src.n_distinct == 4
    np.testing.assert_array_equal(src.get([2, 0]), X[[2, 0]])
    np.testing.assert_array_equal(embed(sp.csr_matrix(X)), X)
    assert src.n_encoded_ == 0


def test_texts_encoded_once_lazily(recorder):
    table = {"a": [1, 0], "b": [0, 1], "c": [1, 1]}
    tr = recorder(table)
    src = EmbeddingSource(["a", "b", "a", "c", "b"], tr)
    assert src.n_distinct == 3 and tr.calls == []
    np.testing.assert_array_equal(src.get([0, 2]), [[1, 0], [1, 0]])
    assert tr.calls == [["a"]]
    src.prefetch([0, 1, 2, 4])
    assert tr.calls == [["a"], ["b"]]
    np.testing.assert_array_equal(src.get(), [[1, 0], [0, 1], [1, 0], [1, 1], [0, 1]])
    assert tr.calls == [["a"], ["b"], ["c"]] and src.n_encoded_ == 3 and src.n_transform_calls_ == 3


def test_text_containers_and_sparse_output():
    hv = HashingVectorizer(n_features=16)
    for X in (["x y", "z"], pd.Series(["x y", "z"]), pd.DataFrame({"t": ["x y", "z"]}),
              np.array(["x y", "z"], dtype=object)):
        out = embed(X, hv)
        assert out.shape == (2, 16) and isinstance(out, np.ndarray)
        np.testing.assert_allclose(out, hv.transform(["x y", "z"]).toarray())


def test_errors(recorder):
    with pytest.raises(TypeError, match="raw text"):
        EmbeddingSource("just a string", recorder({}))
    with pytest.raises(TypeError, match="str"):
        EmbeddingSource(["a", 3], recorder({}))
    with pytest.raises(TypeError, match="no transformer"):
        EmbeddingSource(["a", "b"])
    with pytest.raises(ValueError, match="2-D"):
        EmbeddingSource(np.zeros(3))
    with pytest.raises(TypeError, match="transform"):
        EmbeddingSource(["a"], object())

    class Bad:
        def transform(self, texts):
            return np.zeros((len(texts) + 1, 2))

    with pytest.raises(ValueError, match="returned shape"):
        EmbeddingSource(["a"], Bad()).get()
