"""Few-shot heads on one language: where the centre comes from, and which head (a diagnosis).

For each language and k (rows per label, 3 draws as in ``evaluate_learned_pooling.py``), the
test-split accuracy of ``LogisticRegression()`` on e5 mean pooling with the centre learned from
the k-per-label draw itself (``own``, what a Pipeline's fit does), from the whole train split
(``full``), no centre (``none``, uncentred length 2), and StandardScaler + LogisticRegression on
the raw vectors (``ss``). Raw vectors come through the cache, so a warm cache costs only the heads.

Run::

    python benchmarks/fewshot_centre.py --model /tmp/skmoe-assets2/me5-small-q4deq \\
        --sib200 DATA/sib200 --cache /tmp/heads.sqlite --languages por_Latn spa_Latn eng_Latn
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skmoe import MoEEmbeddingTransformer
from skmoe.datasets import load_sib200
from skmoe.postprocessing import (
    DEFAULT_NORMALIZE,
    UNCENTRED_NORMALIZE,
    fit_center,
    truncate_and_normalize,
)


def _default_head_score(x: np.ndarray, y: np.ndarray, x_te: np.ndarray, y_te: Any,
                        center: np.ndarray | None) -> float:
    """Test accuracy of ``LogisticRegression()`` on the output centred on ``center`` (length
    1.25), or uncentred at length 2 when ``center`` is None: the estimator's two defaults."""
    length = DEFAULT_NORMALIZE if center is not None else UNCENTRED_NORMALIZE
    head = LogisticRegression().fit(truncate_and_normalize(x, None, length, center), y)
    return head.score(truncate_and_normalize(x_te, None, length, center), y_te)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--sib200", required=True)
    p.add_argument("--cache", default=None)
    p.add_argument("--prompt", default="query: ")
    p.add_argument("--languages", nargs="+", default=["por_Latn", "spa_Latn", "eng_Latn"])
    p.add_argument("--shots", type=int, nargs="+", default=[8, 32])
    p.add_argument("--draws", type=int, default=3)
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    raw = MoEEmbeddingTransformer(args.model, prompt=args.prompt, cache=args.cache, center=False,
                                  normalize=False, verbose=0).fit([])
    print("| language | k | own centre | train-split centre | no centre | StandardScaler+LR |")
    print("|---|---|---|---|---|---|")
    for lang in args.languages:
        df = load_sib200(args.sib200, [lang], ("train", "test"))
        tr, te = df[df.split == "train"], df[df.split == "test"]
        x_tr, x_te = raw.transform(list(tr.text)), raw.transform(list(te.text))
        full = fit_center(x_tr, None)
        for k in args.shots:
            acc: dict[str, list[float]] = {"own": [], "full": [], "none": [], "ss": []}
            for seed in range(args.draws):
                draw = tr.groupby("category", group_keys=False).sample(n=k, random_state=seed)
                x, y = x_tr[tr.index.get_indexer(draw.index)], draw.category.to_numpy()
                for name, c in (("own", fit_center(x, None)), ("full", full), ("none", None)):
                    acc[name].append(_default_head_score(x, y, x_te, te.category, c))
                ss = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
                acc["ss"].append(ss.score(x_te, te.category))
            print(f"| {lang} | {k} | " + " | ".join(f"{np.mean(acc[n]):.3f}"
                                                   for n in ("own", "full", "none", "ss")) + " |")


if __name__ == "__main__":
    main()
