"""Evaluation helpers: few-shot probes per language, transfer, clustering, STS, bitext, routing.

Every report takes texts plus any scikit-learn transformer (``transformer=``) or precomputed
embeddings, and returns a tidy ``pandas.DataFrame``. Protocols follow MTEB and SetFit.
"""

from ..validation import check_label_types
from .bitext import bitext_accuracy, bitext_report
from .clustering import cluster_report
from .data import DataError, ReportData, prepare_data
from .embeddings import EmbeddingSource, embed
from .probe import (
    UnseenLabelWarning,
    default_head,
    probe_report,
    transfer_matrix,
    transfer_regimes,
)
from .routing import RoutingStats, routing_stats
from .splits import FewShotSplit, FewShotWarning
from .sts import paired_cosine, sts_report
from .tables import summarize, transfer_table

__all__ = [
    "DataError",
    "ReportData",
    "UnseenLabelWarning",
    "check_label_types",
    "prepare_data",
    "EmbeddingSource",
    "FewShotSplit",
    "FewShotWarning",
    "RoutingStats",
    "bitext_accuracy",
    "bitext_report",
    "cluster_report",
    "default_head",
    "embed",
    "paired_cosine",
    "probe_report",
    "routing_stats",
    "sts_report",
    "summarize",
    "transfer_matrix",
    "transfer_regimes",
    "transfer_table",
]
