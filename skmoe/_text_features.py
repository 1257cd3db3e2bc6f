"""What the package's text-in, vectors-out transformers share: output names and sklearn tags."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted


class TextFeaturesMixin:
    """``get_feature_names_out`` and the tags of a transformer taking a list of texts.

    The class sets ``_feature_prefix``; the fitted estimator has ``n_features_out_``.
    """

    _feature_prefix = "feature"

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``<prefix>_0 ... <prefix>_{d-1}`` (known after fit, without running the model)."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"{self._feature_prefix}_{i}" for i in range(self.n_features_out_)],
                          dtype=object)

    def __sklearn_tags__(self) -> Tags:  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        tags.non_deterministic = False
        return tags
