"""Cross-lingual transfer: train a topic probe in one language, test it in the others.

A multilingual encoder maps translations to nearby vectors, so a head trained on English
embeddings should also classify French, Chinese or Arabic sentences it has never seen
labelled. Two views on the bundled SIB-200 sample:

1. :func:`skmoe.evaluation.transfer_matrix`: one probe per training language, scored on
   every test language (rows: trained on, columns: tested on);
2. :func:`skmoe.evaluation.transfer_regimes`: SetFit's multilingual regimes, training on the
   target language itself (``each``), on English only (``en``) or on all languages pooled
   (``all``).

Every sentence is embedded once; only the heads are refit.

Run::

    python examples/cross_lingual_transfer.py
    python examples/cross_lingual_transfer.py --model ./me5-small --prompt "query: "
"""

from __future__ import annotations

import argparse
import os
import warnings

import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from skmoe import DEFAULT_MODEL, MoEEmbeddingTransformer
from skmoe.datasets import load_sib200_sample
from skmoe.evaluation import summarize, transfer_matrix, transfer_regimes, transfer_table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("SKMOE_EXAMPLE_MODEL", DEFAULT_MODEL))
    parser.add_argument("--prompt", default=os.environ.get("SKMOE_EXAMPLE_PROMPT") or None)
    parser.add_argument("--cache", default=os.environ.get("SKMOE_EXAMPLE_CACHE") or None,
                        help="SQLite embedding cache shared between runs (optional)")
    parser.add_argument("--languages", nargs="+",
                        default=["eng_Latn", "fra_Latn", "zho_Hans", "arb_Arab"])
    parser.add_argument("--k", type=int, default=8, help="training examples per topic")
    parser.add_argument("--n-experiments", type=int, default=5)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = load_sib200_sample(languages=args.languages)
    train, test = data[data.split == "train"], data[data.split == "test"]
    embedder = MoEEmbeddingTransformer(args.model, prompt_name="classification",
                                       prompt=args.prompt, cache=args.cache)
    common = dict(
        X_test=test.text.tolist(), y_test=test.category, languages_test=test.language,
        transformer=embedder, samples_per_label=args.k, n_experiments=args.n_experiments,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # MTEB head, tiny training sets
        matrix = transfer_matrix(train.text.tolist(), train.category, train.language, **common)
        regimes = transfer_regimes(train.text.tolist(), train.category, train.language,
                                   source_language=args.languages[0], **common)

    table = transfer_table(matrix)
    print(f"accuracy, k={args.k} per topic, mean of {args.n_experiments} draws, "
          f"chance={1 / train.category.nunique():.3f}")
    with pd.option_context("display.width", 120, "display.precision", 3):
        print("rows: trained on, columns: tested on")
        print(table.round(3).to_string())
        by_regime = summarize(regimes).pivot(index="test_language", columns="regime",
                                             values="mean")
        print(by_regime.round(3).to_string())

    off_diagonal = [table.loc[a, b] for a in table.index for b in table.columns if a != b]
    print(f"mean same-language accuracy={pd.Series(list(table.values.diagonal())).mean():.3f} "
          f"mean cross-language accuracy={pd.Series(off_diagonal).mean():.3f}")


if __name__ == "__main__":
    main()
