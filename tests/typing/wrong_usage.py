"""Wrong use of skmoe's public API: mypy must flag every line whose comment starts with
``expect-error``, and nothing else (tests/test_typing.py). A hint loosened to ``Any``, or
top-level names that type checkers cannot see through ``skmoe``'s lazy imports, would let
these through. Never run."""

from __future__ import annotations

from skmoe import EmbeddingCache, MoEEmbeddingTransformer
from skmoe.evaluation import probe_report


def wrong() -> None:
    MoEEmbeddingTransformer(batch_size="32")  # expect-error: a str where it takes an int
    found, vectors, cut = EmbeddingCache("e.sqlite").lookup("ns", ["a"])  # expect-error: no cut
    probe_report(["a", "b"], ["x", "y"], metrics=3)  # expect-error: 3 is no scorer
    print(found, vectors, cut)
