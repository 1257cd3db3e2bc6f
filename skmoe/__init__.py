"""skmoe: scikit-learn feature extraction with the nomic-embed-text-v2-moe MoE sentence encoder."""

from .encoder import DEFAULT_MODEL, capture_routing, load_encoder

__version__ = "0.1.0"

__all__ = ["DEFAULT_MODEL", "__version__", "capture_routing", "load_encoder"]
