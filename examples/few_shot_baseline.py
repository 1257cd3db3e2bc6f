"""A few-shot baseline: k labelled examples per class, 10 seeded draws, mean +- std.

The SetFit / MTEB protocol with a frozen encoder: draw k training sentences per topic, fit a
logistic-regression head on their embeddings, score it, repeat with other seeds. The
sentences are embedded once; only the head is refit for each draw. The bundled sample has
16 training sentences per topic and language, so k stays below 16 here.

Two ways to run it:

1. scikit-learn native: :class:`skmoe.evaluation.FewShotSplit` is a cross-validation splitter,
   so ``cross_val_score(head, embeddings, y, cv=FewShotSplit(...))`` works as is (the test
   part of each draw is the rest of the training pool);
2. :func:`skmoe.evaluation.probe_report`: the same draws per language, scored on SIB-200's
   separate test split, as a tidy table (``summarize`` gives mean +- std).

Run::

    python examples/few_shot_baseline.py
    python examples/few_shot_baseline.py --model ./me5-small --prompt "query: "
"""

from __future__ import annotations

import argparse
import os
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from skmoe import DEFAULT_MODEL, MoEEmbeddingTransformer
from skmoe.datasets import load_sib200_sample
from skmoe.evaluation import FewShotSplit, probe_report, summarize


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("SKMOE_EXAMPLE_MODEL", DEFAULT_MODEL))
    parser.add_argument("--prompt", default=os.environ.get("SKMOE_EXAMPLE_PROMPT") or None)
    parser.add_argument("--cache", default=os.environ.get("SKMOE_EXAMPLE_CACHE") or None,
                        help="SQLite embedding cache shared between runs (optional)")
    parser.add_argument("--languages", nargs="+", default=["eng_Latn", "hin_Deva"])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--n-splits", type=int, default=10)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = load_sib200_sample(languages=args.languages)
    train, test = data[data.split == "train"], data[data.split == "test"]
    embedder = MoEEmbeddingTransformer(args.model, prompt_name="classification",
                                       prompt=args.prompt, cache=args.cache)
    chance = 1 / train.category.nunique()

    # 1. FewShotSplit with cross_val_score, on embeddings computed once.
    first = train[train.language == args.languages[0]]
    X = embedder.fit_transform(first.text.tolist())
    print(f"cross_val_score, {args.languages[0]}, head=LogisticRegression, chance={chance:.3f}")
    for k in args.k:
        cv = FewShotSplit(n_per_class=k, n_splits=args.n_splits, random_state=0)
        with warnings.catch_warnings():
            # max_iter=100 is the MTEB head; it may stop early on tiny training sets (mteb #944)
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = cross_val_score(LogisticRegression(max_iter=100), X, first.category, cv=cv)
        print(f"  k={k:2d} accuracy={scores.mean():.3f} +- {scores.std(ddof=1):.3f}")

    # 2. probe_report: per language, scored on the test split; every text is embedded once.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        report = probe_report(
            train.text.tolist(), train.category, groups=train.language,
            X_test=test.text.tolist(), y_test=test.category, groups_test=test.language,
            transformer=embedder, samples_per_label=args.k, n_experiments=args.n_splits,
            metrics=("accuracy", "f1_macro"),
        )
    table = summarize(report)
    print("probe_report on the test split (mean +- std over draws)")
    for r in table[table.metric == "accuracy"].itertuples():
        print(f"  {r.group} k={r.k:2d} accuracy={r.mean:.3f} +- {r.std:.3f} (n={r.n})")


if __name__ == "__main__":
    main()
