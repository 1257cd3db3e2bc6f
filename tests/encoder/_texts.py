"""Real sentences in several scripts from the SIB-200 sample in tests/data (FLORES-200 translations)."""

from __future__ import annotations

import csv
from pathlib import Path

SCRIPTS = ["eng_Latn", "rus_Cyrl", "arb_Arab", "zho_Hans", "tha_Thai", "jpn_Jpan", "hin_Deva"]


def sib200_texts(sib200_dir: Path, lang: str, n: int, split: str = "test") -> list[str]:
    with open(sib200_dir / lang / f"{split}.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r["text"] for r in rows[:n]]
