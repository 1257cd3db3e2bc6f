"""Running many texts through an encoder fast: batching, precision, device, OOM back-off."""

from .batching import Batch, TokenRows, collate, padding_fraction, plan_batches
from .precision import DEFAULT_PRECISION, PRECISIONS, apply_precision, supported_precisions
from .runner import Engine, EngineStats, TruncationWarning

__all__ = [
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "Batch",
    "Engine",
    "EngineStats",
    "TokenRows",
    "TruncationWarning",
    "apply_precision",
    "collate",
    "padding_fraction",
    "plan_batches",
    "supported_precisions",
]
