"""The reusable text-transformer checks: our estimator passes them, and each catches what it should."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from skmoe.checks import (
    SKLEARN_CHECKS,
    TEXT_CHECKS,
    check_names,
    check_text_transformer,
    parametrize_text_transformer_checks,
    text_transformer_checks,
)
from skmoe.estimator import MoEEmbeddingTransformer
from skmoe.validation import validate_texts


class HashEmbedder(TransformerMixin, BaseEstimator):
    """A user's toy text transformer: a fixed random vector per text (a hash as the seed)."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim

    def fit(self, X, y=None):
        validate_texts(X)
        self.n_features_out_ = self.dim
        return self

    def _rows(self, texts):
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) for t in texts]
        return np.vstack(rows).astype(np.float32) if rows else np.empty((0, self.dim), np.float32)

    def transform(self, X):
        check_is_fitted(self)
        return np.ascontiguousarray(self._rows(validate_texts(X)))

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        return np.asarray([f"hash_{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags


# -- broken variants, each caught by one check --------------------------------------------------------
class FitReturnsNone(HashEmbedder):
    def fit(self, X, y=None):
        super().fit(X)


class CountsCalls(HashEmbedder):
    def transform(self, X):
        self.calls_ = getattr(self, "calls_", 0) + 1
        return super().transform(X)


class BatchCentered(HashEmbedder):
    def transform(self, X):
        out = super().transform(X)
        return np.ascontiguousarray(out - out.mean(axis=0))


class PositionDependent(HashEmbedder):
    def transform(self, X):
        out = super().transform(X)
        return np.ascontiguousarray(out + np.arange(len(out), dtype=np.float32)[:, None] * 1e-3)


class CarriesWeights(HashEmbedder):
    def fit(self, X, y=None):
        self.weights_ = np.zeros(300_000)  # 2.4 MB in every pickle
        return super().fit(X)


class WorksInInit(HashEmbedder):
    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.model = "loaded"


class ChangesParamInFit(HashEmbedder):
    def fit(self, X, y=None):
        self.dim = max(self.dim, 16)  # "fixes" a parameter instead of recording dim_
        return super().fit(X)


class WrongFeatureNames(HashEmbedder):
    def get_feature_names_out(self, input_features=None):
        return np.asarray(["only_one"], dtype=object)


class AcceptsAnything(HashEmbedder):
    def transform(self, X):
        check_is_fitted(self)
        return np.ascontiguousarray(self._rows([str(t) for t in X]))


class NoStringTag(HashEmbedder):
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = False
        return tags


class RandomAtFit(HashEmbedder):
    """Draws a scale at fit from ``random_state`` (None: another at every fit)."""

    def __init__(self, dim: int = 8, random_state=None) -> None:
        super().__init__(dim)
        self.random_state = random_state

    def fit(self, X, y=None):
        super().fit(X)
        self.scale_ = np.random.default_rng(self.random_state).uniform(1, 2)
        return self

    def transform(self, X):
        return super().transform(X) * np.float32(self.scale_)


class StatelessOnlyAfterFit(HashEmbedder):
    def transform(self, X):
        return np.ascontiguousarray(self._rows(validate_texts(X)))


BROKEN = [
    (FitReturnsNone, "check_text_fit_returns_self"),
    (CountsCalls, "check_text_transform_keeps_state"),
    (BatchCentered, "check_text_subset_invariance"),
    (PositionDependent, "check_text_order_invariance"),
    (CarriesWeights, "check_text_pickle"),
    (WorksInInit, "check_no_attributes_set_in_init"),
    (ChangesParamInFit, "check_text_fit_keeps_params"),
    (WrongFeatureNames, "check_text_transform_output"),
    (WrongFeatureNames, "check_text_set_output"),
    (AcceptsAnything, "check_text_rejects_bad_input"),
    (NoStringTag, "check_text_tags"),
    (StatelessOnlyAfterFit, "check_text_unfitted"),
]


@parametrize_text_transformer_checks(HashEmbedder(), HashEmbedder(dim=3))
def test_a_correct_user_transformer_passes(estimator, check):
    check(estimator)


@pytest.mark.parametrize(("cls", "check_name"), BROKEN, ids=[f"{c.__name__}-{n}" for c, n in BROKEN])
def test_each_check_catches_its_defect(cls, check_name):
    with pytest.raises(AssertionError, match=check_name):
        check_text_transformer(cls(), checks=[check_name])
    # The same defect does not trip the check on the correct transformer.
    check_text_transformer(HashEmbedder(), checks=[check_name])


@pytest.mark.parametrize("check_name", ["check_text_fit_idempotent", "check_text_transform_output",
                                        "check_text_clone"])
def test_a_random_state_is_seeded_as_scikit_learn_does(check_name):
    """The refit checks compared two fits of an unseeded estimator: LearnedPooling() (default
    random_state=None) failed them at random; scikit-learn's checks seed random_state."""
    check_text_transformer(RandomAtFit(), checks=[check_name])


def test_expected_failures():
    check_text_transformer(BatchCentered(), expected_failed_checks={
        "check_text_subset_invariance": "centres each batch", "check_text_duplicates": "centres each batch",
        "check_text_fit_idempotent": "centres each batch",
    }, checks=["check_text_subset_invariance", "check_text_order_invariance"])
    with pytest.raises(AssertionError, match="expected to fail .* but passed"):
        check_text_transformer(HashEmbedder(), expected_failed_checks={"check_text_pickle": "why not"})
    with pytest.raises(ValueError, match="unknown check"):
        check_text_transformer(HashEmbedder(), checks=["check_nothing"])


def test_names_and_texts():
    names = check_names()
    assert len(names) == len(set(names)) == len(SKLEARN_CHECKS) + len(TEXT_CHECKS)
    assert [n for n in names if n.startswith("check_text_")] == [c.__name__ for c in TEXT_CHECKS]
    pairs = list(text_transformer_checks(HashEmbedder(), ["a", "b", "c", "d"]))
    assert len(pairs) == len(names)
    with pytest.raises(ValueError, match="at least 4 distinct"):
        list(text_transformer_checks(HashEmbedder(), ["a", "a", "b", "c"]))


# -- our estimator --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moe(random_moe_xlmr_path: Path) -> str:
    return str(random_moe_xlmr_path)


@pytest.mark.parametrize("check_name", check_names())
def test_moe_embedding_transformer_passes(moe, check_name):
    # fp32 on CPU: the default atol (1e-5) is the fp32 tolerance.
    check_text_transformer(MoEEmbeddingTransformer(moe, device="cpu"), checks=[check_name])


def test_moe_embedding_transformer_variant_passes(moe, tmp_path):
    params = {"truncate_dim": 16, "normalize": False, "cache": str(tmp_path / "c.sqlite"), "batch_size": 3}
    check_text_transformer(MoEEmbeddingTransformer(moe, device="cpu", **params))


def test_learned_pooling_passes_every_text_check(fast_moe):
    """LearnedPooling needs labels: its tags say so (target_tags.required) and the checks fit it
    with two alternating labels (they fitted it without, and 15 checks failed)."""
    from skmoe import LearnedPooling

    check_text_transformer(LearnedPooling(fast_moe, max_iter=2, random_state=0))
