"""skmoe: scikit-learn feature extraction with the nomic-embed-text-v2-moe MoE sentence encoder.

Names are imported lazily, so ``import skmoe`` stays cheap (torch loads on first real use).
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skmoe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
