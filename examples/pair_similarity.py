"""Pair similarity: translations, bitext retrieval and a same-topic pair classifier.

SIB-200 holds the same sentences in every language, so the bundled sample doubles as a
parallel corpus (rows align on ``index_id``). With English and French:

1. cosine similarity of translation pairs against mismatched pairs
   (``MoEEmbeddingTransformer.similarity_pairwise``);
2. bitext retrieval: is each sentence's nearest neighbour in the other language its
   translation? (``skmoe.evaluation.bitext_report``; chance is 1 / number of candidates);
3. a pair classifier, ``Pipeline(PairFeatures, LogisticRegression)``, that tells whether an
   English and a French sentence are about the same topic, trained on pairs from the
   training split and scored on pairs from the test split.

All three reuse the same embeddings through an on-disk cache (a temporary SQLite file here).

Run::

    python examples/pair_similarity.py
    python examples/pair_similarity.py --model ./me5-small --prompt "query: "
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline

from skmoe import DEFAULT_MODEL, MoEEmbeddingTransformer, PairFeatures
from skmoe.datasets import load_sib200_sample
from skmoe.evaluation import bitext_report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("SKMOE_EXAMPLE_MODEL", DEFAULT_MODEL))
    parser.add_argument("--prompt", default=os.environ.get("SKMOE_EXAMPLE_PROMPT") or None)
    parser.add_argument("--cache", default=os.environ.get("SKMOE_EXAMPLE_CACHE") or None,
                        help="SQLite embedding cache (default: a temporary one of its own)")
    parser.add_argument("--languages", nargs=2, default=["eng_Latn", "fra_Latn"])
    return parser.parse_args()


def topic_pairs(a: pd.DataFrame, b: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """For each row of ``a``: one row of ``b`` on the same topic and one on another topic."""
    rng = np.random.default_rng(seed)
    left, right, same = [], [], []
    for _, row in a.iterrows():
        on_topic = b[(b.category == row.category) & (b.index_id != row.index_id)]
        off_topic = b[b.category != row.category]
        for pool, label in ((on_topic, 1), (off_topic, 0)):
            left.append(row.text)
            right.append(pool.text.iloc[rng.integers(len(pool))])
            same.append(label)
    return pd.DataFrame({"a": left, "b": right}), np.asarray(same)


def main() -> None:
    args = parse_args()
    src, tgt = args.languages
    data = load_sib200_sample(languages=[src, tgt])
    a = data[data.language == src].sort_values("index_id").reset_index(drop=True)
    b = data[data.language == tgt].sort_values("index_id").reset_index(drop=True)

    with tempfile.TemporaryDirectory() as tmp:
        # prompt_name="STS" is nomic's "classification: " prefix; --prompt overrides it.
        embedder = MoEEmbeddingTransformer(args.model, prompt_name="STS", prompt=args.prompt,
                                           cache=args.cache or os.path.join(tmp, "embeddings.sqlite"))

        # 1. translations vs. mismatched pairs (b rolled by one row)
        translation = embedder.similarity_pairwise(a.text.tolist(), b.text.tolist())
        mismatched = embedder.similarity_pairwise(a.text.tolist(), np.roll(b.text, 1).tolist())
        print(f"pairs={len(a)} cosine translation={translation.mean():.3f} "
              f"mismatched={mismatched.mean():.3f} "
              f"translation_wins={np.mean(translation > mismatched):.3f}")

        # 2. bitext retrieval in both directions (all texts from the cache by now)
        both = pd.concat([a, b], ignore_index=True)
        retrieval = bitext_report(both.text.tolist(), both.language, both.index_id,
                                  transformer=embedder)
        for r in retrieval.itertuples():
            print(f"bitext {r.source_language}->{r.target_language} accuracy={r.accuracy:.3f} "
                  f"chance={1 / r.n:.3f}")

        # 3. same-topic classifier on cross-lingual pairs
        X_train, y_train = topic_pairs(a[a.split == "train"], b[b.split == "train"], seed=0)
        X_test, y_test = topic_pairs(a[a.split == "test"], b[b.split == "test"], seed=1)
        pipe = make_pipeline(PairFeatures(embedder), LogisticRegression(max_iter=1000))
        pipe.fit(X_train, y_train)
        cosine_auc = roc_auc_score(y_test, embedder.similarity_pairwise(X_test.a, X_test.b))
        print(f"same-topic pairs train={len(y_train)} test={len(y_test)} "
              f"accuracy={accuracy_score(y_test, pipe.predict(X_test)):.3f} chance=0.500 "
              f"auc pipeline={roc_auc_score(y_test, pipe.predict_proba(X_test)[:, 1]):.3f} "
              f"cosine={cosine_auc:.3f}")
        stats = embedder.cache_stats()
        print(f"cache entries={stats.entries} hits={stats.hits} misses={stats.misses}")


if __name__ == "__main__":
    main()
