"""Parameters and inputs that were accepted and did something else, or failed with a message
that did not name them (audit of 2026-12-04): each is refused by name, before any training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_learned_pooling import keyword_task

from skmoe import LearnedPooling, MoEEmbeddingTransformer, PairFeatures


@pytest.mark.parametrize("value", ["false", "no", 2, None])
def test_center_must_be_a_bool(fast_moe, value):
    """center="false" is a non-empty string: it turned centring on (output off by up to 0.22)."""
    with pytest.raises(TypeError, match=f"center must be True or False, got {value!r}"):
        MoEEmbeddingTransformer(fast_moe, center=value).fit(["a", "b"])
    with pytest.raises(TypeError, match="center must be True or False"):
        LearnedPooling(fast_moe, center=value, max_iter=0).fit(["a", "b"], [0, 1])


def test_transformer_parameters_and_inputs_named(fast_moe):
    est = MoEEmbeddingTransformer(fast_moe, verbose="loud")
    with pytest.raises(TypeError, match="verbose must be an int, got 'loud'"):
        est.fit(["a"])
    MoEEmbeddingTransformer(fast_moe, verbose=True).fit(["a"])
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) sample_weight"):
        MoEEmbeddingTransformer(fast_moe).fit_transform(["a", "b"], sample_weight=[1, 2])
    with pytest.raises(TypeError, match=r"got a scipy sparse matrix \(2, 3\)"):
        MoEEmbeddingTransformer(fast_moe).fit(sp.csr_matrix(np.eye(2, 3)))
    for prompt, error in ((b"query: ", "prompt must be a str .* got bytes"),
                          ("q\ud800: ", "prompt: Text at row 0 is not valid Unicode")):
        with pytest.raises((TypeError, ValueError), match=error):
            MoEEmbeddingTransformer(fast_moe, prompt=prompt).fit(["a"])
    with pytest.raises(ValueError, match="each once"):
        PairFeatures(MoEEmbeddingTransformer(fast_moe), features=("cosine", "abs_diff", "cosine")
                     ).fit([("a", "b"), ("c", "d")])


@pytest.mark.parametrize("params, error", [
    ({"max_length": 0}, "max_length must be >= 2, got 0"),
    ({"max_length": "64"}, "max_length must be an int or None, got '64'"),
    ({"max_length": 100_000}, "beyond the .* positions"),
    ({"batch_tokens": 0}, "batch_tokens must be >= 1, got 0"),
    ({"random_state": -1}, "random_state must be >= 0, got -1"),
    ({"learning_rate": "0.1"}, "learning_rate must be a finite number, got '0.1'"),
    ({"alpha": float("inf")}, "alpha must be a finite number, got inf"),
    ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
])
def test_learned_pooling_parameters_named(fast_moe, params, error):
    with pytest.raises((TypeError, ValueError), match=error):
        LearnedPooling(fast_moe, **params).fit(["a", "b", "c"], [0, 1, 0])


def test_learned_pooling_labels_and_inputs(fast_moe):
    texts, y = keyword_task(8, 0)
    with pytest.raises(ValueError, match=r"y holds continuous values \(e.g. 0.1"):
        LearnedPooling(fast_moe).fit(texts, np.linspace(0.1, 0.9, 8))
    with pytest.raises(TypeError, match="y mix several kinds of value"):
        LearnedPooling(fast_moe).fit(texts, [0, "1"] * 4)
    with pytest.raises(ValueError, match=r"fit_transform takes texts; after fit\(pairs\)"):
        LearnedPooling(fast_moe).fit_transform([("a", "b"), ("c", "d")])
    # one column of texts (what ColumnTransformer passes) is texts, not pairs
    column = np.asarray(texts, dtype=object)[:, None]
    a = LearnedPooling(fast_moe, max_iter=2, random_state=0).fit(column, y).transform(texts)
    b = LearnedPooling(fast_moe, max_iter=2, random_state=0).fit(texts, y).transform(texts)
    np.testing.assert_array_equal(a, b)


def test_heads_learn_apart_and_torch_global_seed_is_left_alone(fast_moe):
    """From zero scores every head got the same gradient: heads=2 was heads=1. And fit called
    torch.manual_seed, resetting the user's global stream even with random_state=None."""
    texts, y = keyword_task(64, 1)
    LearnedPooling(fast_moe).get_encoder()  # loaded (building a model draws from torch's RNG)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    two = LearnedPooling(fast_moe, heads=2, max_iter=3, random_state=0).fit(texts, y)
    assert torch.equal(torch.rand(3), expected)
    assert not np.allclose(two.attention_[:, 0], two.attention_[:, 1])
    again = LearnedPooling(fast_moe, heads=2, max_iter=3, random_state=0).fit(texts, y)
    np.testing.assert_array_equal(again.attention_, two.attention_)  # seeded
    untrained = LearnedPooling(fast_moe, heads=2, max_iter=0).fit(texts, y)
    assert not untrained.attention_.any()  # max_iter=0 stays exactly mean pooling


def test_an_unknown_prompt_name_is_refused_before_the_weights_load(tmp_path, minilm_path):
    """all-MiniLM has no prompt table: the default prompt_name ("classification") was refused
    only after loading the weights (8.9 s for e5-small; minutes for a large model)."""
    import shutil

    from skmoe.encoder.sentence import UnknownPromptError
    from skmoe.registry import LOAD_COUNTS

    folder = tmp_path / "minilm"  # a path of its own: no other test has loaded it
    shutil.copytree(minilm_path, folder)
    before = sum(LOAD_COUNTS.values())
    with pytest.raises(UnknownPromptError, match="Unknown prompt_name 'classification'"):
        MoEEmbeddingTransformer(folder).fit(["a"])
    with pytest.raises(TypeError, match=r"prompt_name must be a str or None, got 3 \(int\)"):
        MoEEmbeddingTransformer(folder, prompt_name=3).fit(["a"])  # was an AttributeError
    assert sum(LOAD_COUNTS.values()) == before
    MoEEmbeddingTransformer(folder, prompt="").fit(["a"])  # a raw prompt wins: loads and fits
    assert sum(LOAD_COUNTS.values()) == before + 1
