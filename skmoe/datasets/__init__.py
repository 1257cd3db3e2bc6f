"""Datasets: the bundled SIB-200 sample and loaders for SIB-200 and STS17 files on disk."""

from .sib200 import load_sib200, load_sib200_sample
from .sts17 import STS17_TRACKS, load_sts17

__all__ = ["STS17_TRACKS", "load_sib200", "load_sib200_sample", "load_sts17"]
