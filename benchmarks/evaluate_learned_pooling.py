"""Learned attention pooling vs mean pooling on SIB-200 (issue 15, item 3).

Per language: the full train split (701 rows) -> test split (204 rows), in-language. Mean pooling:
``MoEEmbeddingTransformer(prompt="query: ")`` (default ``normalize="rms"``) + LogisticRegression().
Learned: ``LearnedPooling(prompt="query: ", random_state=seed)`` trained on the same train split with
its labels (cross-entropy, early stopping on 10% of it), then LogisticRegression() on its output.
The difference comes with a paired bootstrap 95% interval over the test rows (2000 resamples).

Run::

    python benchmarks/evaluate_learned_pooling.py --model /tmp/skmoe-assets/me5-small-q4deq \\
        --sib200 DATA/sib200 --cache /tmp/heads.sqlite --languages eng_Latn fra_Latn ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--sib200", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=None, help="embedding cache (mean pooling)")
    p.add_argument("--languages", nargs="+", required=True)
    p.add_argument("--prompt", default="query: ")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="CSV of per-language results")
    return p.parse_args(argv)


def paired_ci(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(b) - mean(a) over paired rows (0/1 correctness)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = (b[idx] - a[idx]).mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from sklearn.linear_model import LogisticRegression

    from skmoe import LearnedPooling, MoEEmbeddingTransformer
    from skmoe.datasets import load_sib200

    args = parse_args(argv)
    extra = {k: v for k, v in (("learning_rate", args.learning_rate),
                               ("max_iter", args.max_iter)) if v is not None}
    rows = []
    for lang in args.languages:
        df = load_sib200(args.sib200, languages=lang)
        tr, te = df[df.split == "train"], df[df.split == "test"]
        t0 = time.time()
        mean = MoEEmbeddingTransformer(str(args.model), prompt=args.prompt,
                                       cache=None if args.cache is None else str(args.cache))
        x_tr, x_te = mean.fit_transform(tr.text), mean.transform(te.text)
        ok_mean = (LogisticRegression().fit(x_tr, tr.category).predict(x_te) == te.category
                   ).to_numpy().astype(float)
        for seed in args.seeds:
            pool = LearnedPooling(str(args.model), prompt=args.prompt, random_state=seed, **extra)
            t1 = time.time()
            pool.fit(tr.text, tr.category)
            fit_s = time.time() - t1
            ok = (LogisticRegression().fit(pool.transform(tr.text), tr.category)
                  .predict(pool.transform(te.text)) == te.category).to_numpy().astype(float)
            low, high = paired_ci(ok_mean, ok, seed=seed)
            w = pool.token_weights(te.text[:50])
            rows.append({"language": lang, "seed": seed, "mean_pooling": ok_mean.mean(),
                         "learned": ok.mean(), "diff": ok.mean() - ok_mean.mean(),
                         "ci_low": low, "ci_high": high, "epochs": pool.n_iter_,
                         "max_relative_weight": float(w["relative"].max()),
                         "fit_s": round(fit_s, 1), "total_s": round(time.time() - t0, 1)})
            print(rows[-1], flush=True)
    res = pd.DataFrame(rows)
    print(res.round(3).to_string())
    print("mean diff", res["diff"].mean().round(4))
    if args.out:
        res.to_csv(args.out, index=False)
    return res


if __name__ == "__main__":
    main()
