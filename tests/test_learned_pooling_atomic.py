"""``LearnedPooling.fit`` is atomic, as ``MoEEmbeddingTransformer.fit`` (tests/test_refit_atomic.py):
a fit that raises leaves the previous fit exactly as it was, or the estimator unfitted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from test_learned_pooling import keyword_task
from test_refit_atomic import assert_same_state, fitted_state, interrupt

from skmoe import LearnedPooling
from skmoe import token_states as ts
from skmoe.encoder.checkpoint import ModelNotAvailableError


@pytest.mark.parametrize("failure", ["max_length", "model", "token_states", "training"])
def test_a_failed_refit_keeps_the_previous_fit(fast_moe, tmp_path, monkeypatch, failure):
    """Audit 8, D5: fit deleted every fitted attribute before loading the model, checking
    max_length, computing token states and training, so a refit that raised (max_length beyond
    the model's positions, a missing model, Ctrl-C) lost the previous fit: NotFittedError."""
    texts, y = keyword_task(40, seed=11)
    est = LearnedPooling(fast_moe, max_iter=3, random_state=0, verbose=0).fit(texts, y)
    before, expected = fitted_state(est), est.transform(texts[:5])
    new_texts = [t + " (another fit)" for t in texts]  # not memoised: token states must run
    with monkeypatch.context() as patch:
        if failure == "max_length":
            est.set_params(max_length=100_000)
            error: type[BaseException] = ValueError
        elif failure == "model":
            est.set_params(model=str(tmp_path / "no-such-model"), local_files_only=True)
            error = ModelNotAvailableError
        elif failure == "token_states":
            patch.setattr(ts, "_compute", interrupt)
            error = KeyboardInterrupt
        else:
            patch.setattr(torch.optim.Adam, "step", interrupt)
            error = KeyboardInterrupt
        with pytest.raises(error):
            est.fit(new_texts, y)
    est.set_params(max_length=None, model=fast_moe, local_files_only=False)
    assert_same_state(est, before)
    np.testing.assert_array_equal(est.transform(texts[:5]), expected)


def test_an_interrupted_first_fit_leaves_no_half_fitted_estimator(fast_moe, monkeypatch):
    """Audit 8, D5: Ctrl-C during training left classes_, state_mean_, loss_curve_... but no
    attention_: check_is_fitted passed, get_feature_names_out gave names, transform raised
    NotFittedError."""
    texts, y = keyword_task(40, seed=12)
    est = LearnedPooling(fast_moe, max_iter=3, random_state=0, verbose=0)
    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", interrupt)
        with pytest.raises(KeyboardInterrupt):
            est.fit(texts, y)
    assert fitted_state(est) == {}
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    # a refit with other data (pairs) keeps nothing of the previous fit (classes_, coef_)
    est.fit(texts, y)
    assert hasattr(est, "coef_")
    est.fit(np.array(list(zip(texts[::2], texts[1::2], strict=True)), dtype=object))
    assert est.objective_ == "infonce" and not hasattr(est, "coef_")
    assert not hasattr(est, "classes_") and not hasattr(est, "intercept_")
