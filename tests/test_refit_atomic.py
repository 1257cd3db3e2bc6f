"""``MoEEmbeddingTransformer.fit`` is atomic: a fit that raises (an interrupt while embedding or
loading, a refused parameter) leaves the previous fitted state exactly as it was, or the
estimator unfitted; and a transform after ``set_params(model=...)`` names both models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from _moe_factory import make_random_moe
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from skmoe import registry
from skmoe.engine.runner import Engine
from skmoe.estimator import MoEEmbeddingTransformer, WeightsChangedError

FIT = [f"sentence number {i} about {topic}" for i, topic in
       enumerate(["films", "music", "rain", "trains", "bread", "cats", "code", "maps"] * 3)]
MORE = [f"another text {i} on {topic}" for i, topic in
        enumerate(["tea", "ships", "snow", "birds", "glass", "rivers"] * 4)]
QUERIES = ["a wonderful film", "awful and boring", "neutral words here"]


@pytest.fixture(scope="module")
def other_moe(tmp_path_factory, bert_tokenizer):
    """Same layout and tokenizer as ``fast_moe``, other random weights."""
    folder = make_random_moe(tmp_path_factory.mktemp("other-moe"), tokenizer=bert_tokenizer,
                             seed=1, vocab_size=30528)
    yield folder
    registry.clear(folder)


def fitted_state(est):
    """A deep copy of the fitted attributes (``name_``)."""
    return {k: copy.deepcopy(v) for k, v in vars(est).items()
            if k.endswith("_") and not k.startswith("__")}


def assert_same_state(est, before):
    after = fitted_state(est)
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        else:
            assert after[name] == value, name


def interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt  # the notebook's Stop button, a progress callback, Ctrl-C


@pytest.mark.filterwarnings("ignore:int8/uint8 ranges learned from only")
@pytest.mark.parametrize("output_dtype", ["float32", "int8"])
def test_interrupted_refit_keeps_the_previous_fit(fast_moe, monkeypatch, output_dtype):
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0, output_dtype=output_dtype)
    est.fit(FIT)
    assert est.center_ is not None
    before, expected = fitted_state(est), est.transform(QUERIES)
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_launch", interrupt)
        with pytest.raises(KeyboardInterrupt):
            est.fit(MORE)
    assert_same_state(est, before)
    np.testing.assert_array_equal(est.transform(QUERIES), expected)  # still centred, bit for bit


def test_interrupted_refit_on_another_model_keeps_the_previous_fit(fast_moe, other_moe, monkeypatch):
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0).fit(FIT)
    before, expected = fitted_state(est), est.transform(QUERIES)
    est.set_params(model=str(other_moe))
    registry.clear(other_moe)
    with monkeypatch.context() as patch:
        patch.setattr(registry, "load_encoder", interrupt)  # a long model load, stopped
        with pytest.raises(KeyboardInterrupt):
            est.fit(MORE)
    assert_same_state(est, before)
    with pytest.raises(WeightsChangedError):  # the guard still holds
        est.transform(QUERIES)
    est.set_params(model=str(fast_moe))
    np.testing.assert_array_equal(est.transform(QUERIES), expected)


def test_interrupted_first_fit_leaves_the_estimator_unfitted(fast_moe, monkeypatch):
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0)
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_launch", interrupt)
        with pytest.raises(KeyboardInterrupt):
            est.fit(FIT)
    assert fitted_state(est) == {}
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    with pytest.raises(NotFittedError):
        est.transform(QUERIES)


def test_refused_refit_keeps_the_weights_guard(fast_moe, other_moe):
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0).fit(FIT)
    before, expected = fitted_state(est), est.transform(QUERIES)
    est.set_params(truncate_dim=1000)
    with pytest.raises(ValueError, match="truncate_dim"):
        est.fit(FIT)
    assert_same_state(est, before)
    est.set_params(truncate_dim=None, model=str(other_moe))
    with pytest.raises(WeightsChangedError):  # not other weights under fast_moe's centre
        est.transform(QUERIES)
    est.set_params(model=str(fast_moe))
    np.testing.assert_array_equal(est.transform(QUERIES), expected)


def test_refit_with_bad_texts_keeps_the_previous_fit(fast_moe):
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0).fit(FIT)
    before = fitted_state(est)
    with pytest.raises((TypeError, ValueError)):
        est.fit(["fine", 3])
    assert_same_state(est, before)


@pytest.mark.parametrize("cached", [False, True])
def test_refit_on_another_model_is_accepted(fast_moe, other_moe, tmp_path, cached):
    cache = str(tmp_path / "emb.sqlite") if cached else None
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0, cache=cache).fit(FIT)
    first = est.model_fingerprint_
    est.set_params(model=str(other_moe))
    out = est.fit_transform(FIT)
    assert est.model_fingerprint_ != first
    fresh = MoEEmbeddingTransformer(str(other_moe), prompt="", verbose=0).fit_transform(FIT)
    np.testing.assert_array_equal(out, fresh)


def test_changed_model_error_names_both_models(fast_moe, other_moe):
    est = MoEEmbeddingTransformer(str(fast_moe), prompt="", verbose=0).fit(FIT)
    est.set_params(model=str(other_moe))
    with pytest.raises(WeightsChangedError) as info:
        est.transform(QUERIES)
    message = str(info.value)
    assert "model changed after fit" in message
    assert f"fitted with {str(fast_moe)!r}" in message and f"now {str(other_moe)!r}" in message
    assert "call fit again" in message and "Pin revision" not in message
