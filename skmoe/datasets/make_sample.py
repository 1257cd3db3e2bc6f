"""Rebuild the bundled SIB-200 sample from a local SIB-200 copy.

``python -m skmoe.datasets.make_sample SIB200_FOLDER [OUT_FILE]``

Draws (seeded) ``TRAIN_PER_CLASS`` training and ``TEST_PER_CLASS`` test sentences per topic
from the English files and keeps the same ``index_id`` s in every sample language, so the
sample stays parallel across languages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .sib200 import SAMPLE_FILE, load_sib200

LANGUAGES = ["eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn",
             "rus_Cyrl", "zho_Hans", "arb_Arab", "hin_Deva"]
TRAIN_PER_CLASS = 16
TEST_PER_CLASS = 8
SEED = 0


def _pick(df: pd.DataFrame, per_class: int, rng: np.random.Generator) -> list[int]:
    ids: list[int] = []
    for _, group in df.groupby("category", sort=True):
        take = rng.choice(group["index_id"].to_numpy(), size=per_class, replace=False)
        ids.extend(int(i) for i in take)
    return ids


def make_sample(source: str | Path) -> pd.DataFrame:
    """The sample as a DataFrame (columns of :func:`load_sib200`), rows in source file order."""
    full = load_sib200(source, LANGUAGES, ("train", "test"))
    eng = full[full["language"] == "eng_Latn"]
    rng = np.random.default_rng(SEED)
    keep = {
        "train": set(_pick(eng[eng["split"] == "train"], TRAIN_PER_CLASS, rng)),
        "test": set(_pick(eng[eng["split"] == "test"], TEST_PER_CLASS, rng)),
    }
    mask = [i in keep[s] for s, i in zip(full["split"], full["index_id"], strict=True)]
    sample = full[mask].reset_index(drop=True)
    # Parallel check: every language has the same (split, index_id, category) rows in order.
    ref = sample.loc[sample["language"] == "eng_Latn", ["split", "index_id", "category"]]
    for lang in LANGUAGES:
        got = sample.loc[sample["language"] == lang, ["split", "index_id", "category"]]
        if not np.array_equal(got.to_numpy(), ref.to_numpy()):
            raise ValueError(f"{lang} is not aligned with eng_Latn in the SIB-200 source")
    return sample


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit(__doc__)
    out = Path(args[1]) if len(args) > 1 else Path(__file__).parent / "data" / SAMPLE_FILE
    sample = make_sample(args[0])
    sample.to_csv(out, sep="\t", index=False, encoding="utf-8", lineterminator="\n")
    print(f"{len(sample)} rows -> {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
