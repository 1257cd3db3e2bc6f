"""Running many texts through an encoder fast: batching, precision, device, OOM back-off."""

from .batching import Batch, collate, padding_fraction, plan_batches
from .runner import Engine, EngineStats, TruncationWarning

__all__ = [
    "Batch",
    "Engine",
    "EngineStats",
    "TruncationWarning",
    "collate",
    "padding_fraction",
    "plan_batches",
]
