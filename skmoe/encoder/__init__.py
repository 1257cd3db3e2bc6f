"""The model layer: pure torch encoders loaded strictly from checkpoints. No sklearn here."""

from .config import NomicMoEConfig, UnsupportedConfigError
from .info import format_model_info, model_info
from .loading import (
    DEFAULT_MODEL,
    CheckpointError,
    ModelNotAvailableError,
    ModelSource,
)
from .nomic_moe import NomicMoEModel, RoutingRecord, capture_routing, count_parameters
from .sentence import SentenceEncoder, load_encoder
from .st_modules import UnsupportedModuleError

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointError",
    "ModelNotAvailableError",
    "ModelSource",
    "NomicMoEConfig",
    "NomicMoEModel",
    "RoutingRecord",
    "SentenceEncoder",
    "UnsupportedConfigError",
    "UnsupportedModuleError",
    "capture_routing",
    "count_parameters",
    "format_model_info",
    "load_encoder",
    "model_info",
]
