"""Topic classification with a frozen encoder and a logistic-regression head.

``Pipeline(MoEEmbeddingTransformer, LogisticRegression)`` is trained on the English part of
the bundled SIB-200 sample (112 sentences, 7 topics) and scored on its 56 test sentences.
The embeddings are the features; only the head learns.

Run::

    python examples/pipeline_logistic_regression.py                      # the real MoE model
    python examples/pipeline_logistic_regression.py --model ./me5-small --prompt "query: "

``--model`` (or ``SKMOE_EXAMPLE_MODEL``) takes a hub id or a local folder; ``--prompt`` (or
``SKMOE_EXAMPLE_PROMPT``) a raw prefix for models without a prompt table, such as e5;
``--cache`` (or ``SKMOE_EXAMPLE_CACHE``) an SQLite file that keeps the embeddings between runs.
"""

from __future__ import annotations

import argparse
import os

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report
from sklearn.pipeline import make_pipeline

from skmoe import DEFAULT_MODEL, MoEEmbeddingTransformer
from skmoe.datasets import load_sib200_sample


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("SKMOE_EXAMPLE_MODEL", DEFAULT_MODEL))
    parser.add_argument("--prompt", default=os.environ.get("SKMOE_EXAMPLE_PROMPT") or None)
    parser.add_argument("--cache", default=os.environ.get("SKMOE_EXAMPLE_CACHE") or None,
                        help="SQLite embedding cache shared between runs (optional)")
    parser.add_argument("--language", default="eng_Latn")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = load_sib200_sample(languages=args.language)
    train, test = data[data.split == "train"], data[data.split == "test"]

    # prompt_name="classification" selects nomic's "classification: " prefix; a raw --prompt
    # (e.g. e5's "query: ") wins over it.
    pipe = make_pipeline(
        MoEEmbeddingTransformer(args.model, prompt_name="classification", prompt=args.prompt,
                                cache=args.cache),
        LogisticRegression(max_iter=1000),
    )
    pipe.fit(train.text.tolist(), train.category)
    predicted = pipe.predict(test.text.tolist())

    n_classes = train.category.nunique()
    print(classification_report(test.category, predicted, zero_division=0))
    print(f"train={len(train)} test={len(test)} classes={n_classes} "
          f"dim={pipe[0].n_features_out_}")
    print(f"accuracy={accuracy_score(test.category, predicted):.3f} "
          f"chance={1 / n_classes:.3f}")


if __name__ == "__main__":
    main()
