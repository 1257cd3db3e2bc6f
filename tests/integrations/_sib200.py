"""English SIB-200 rows for the integration tests."""

from __future__ import annotations

import csv
from pathlib import Path


def read_sib200(sib200_dir: Path, split: str, n: int | None = None) -> tuple[list[str], list[str]]:
    """(texts, categories) of the English SIB-200 split (csv module: some texts are quoted)."""
    with open(sib200_dir / "eng_Latn" / f"{split}.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))[:n]
    return [r["text"] for r in rows], [r["category"] for r in rows]
