"""Engine tests: small models, one intra-op thread (thread-pool overhead dominates tiny ops on a
loaded 2-core machine), real multilingual text from the SIB-200 sample in tests/data."""

from __future__ import annotations

import pytest
import torch
from _engine_helpers import sib200_texts


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sib_texts(sib200_dir) -> list[str]:
    """64 real sentences, 2 per language: 32 languages, many scripts, mixed lengths."""
    return sib200_texts(sib200_dir, 2)
