"""skmoe: scikit-learn feature extraction with the nomic-embed-text-v2-moe MoE sentence encoder.

Names are imported lazily, so ``import skmoe`` stays cheap (torch loads on first real use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it

# public name -> module that defines it
_EXPORTS = {
    "DEFAULT_MODEL": "skmoe.encoder.loading",
    "load_encoder": "skmoe.engine.quantized_io",  # float checkpoints and quantized folders
    "SentenceEncoder": "skmoe.encoder.sentence",
    "capture_routing": "skmoe.encoder.nomic_moe",
    "ModelNotAvailableError": "skmoe.encoder.loading",
    "CheckpointError": "skmoe.encoder.loading",
    "UnsupportedConfigError": "skmoe.encoder.config",
    "MoEEmbeddingTransformer": "skmoe.estimator",
    "WeightsChangedError": "skmoe.estimator",
    "EmbeddingCache": "skmoe.cache",
    "cache_namespace": "skmoe.cache",
    "LearnedPooling": "skmoe.learned_pooling",
    "plot_token_weights": "skmoe.learned_pooling",
    "PairFeatures": "skmoe.similarity",
    "cosine_matrix": "skmoe.similarity",
    "cosine_rows": "skmoe.similarity",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # the same names, for type checkers; at run time __getattr__ imports them
    from .cache import EmbeddingCache as EmbeddingCache
    from .cache import cache_namespace as cache_namespace
    from .encoder.config import UnsupportedConfigError as UnsupportedConfigError
    from .encoder.loading import DEFAULT_MODEL as DEFAULT_MODEL
    from .encoder.loading import CheckpointError as CheckpointError
    from .encoder.loading import ModelNotAvailableError as ModelNotAvailableError
    from .encoder.nomic_moe import capture_routing as capture_routing
    from .encoder.sentence import SentenceEncoder as SentenceEncoder
    from .engine.quantized_io import load_encoder as load_encoder
    from .estimator import MoEEmbeddingTransformer as MoEEmbeddingTransformer
    from .estimator import WeightsChangedError as WeightsChangedError
    from .learned_pooling import LearnedPooling as LearnedPooling
    from .learned_pooling import plot_token_weights as plot_token_weights
    from .similarity import PairFeatures as PairFeatures
    from .similarity import cosine_matrix as cosine_matrix
    from .similarity import cosine_rows as cosine_rows


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skmoe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
