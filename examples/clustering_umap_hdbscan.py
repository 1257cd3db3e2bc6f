"""Topic discovery: embeddings -> UMAP -> HDBSCAN, compared with the SIB-200 topics.

The BERTopic recipe without the topic words: L2-normalised sentence embeddings (centred on the
corpus by the transformer's default ``center=True``) are reduced
with UMAP (cosine metric, 5 components) and clustered with scikit-learn's HDBSCAN, which
finds the number of clusters itself and leaves outliers unassigned (label -1). The
clusters are compared with the 7 gold topics by V-measure, next to k-means told the true
number of topics.

Why this shape: HDBSCAN's tree algorithms have no cosine metric, and on unit vectors the
Euclidean distance ranks neighbours exactly as cosine does (``|a - b|^2 = 2 - 2 cos``), so
the vectors are normalised and every later step uses Euclidean distances. Straight on the
embeddings (hundreds of dimensions) HDBSCAN finds little density and calls most points
noise; UMAP first gives it a low-dimensional space where clusters are dense.

Run::

    python examples/clustering_umap_hdbscan.py
    python examples/clustering_umap_hdbscan.py --model ./me5-small --prompt "query: "
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.metrics import v_measure_score
from umap import UMAP

from skmoe import DEFAULT_MODEL, MoEEmbeddingTransformer
from skmoe.datasets import load_sib200_sample


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("SKMOE_EXAMPLE_MODEL", DEFAULT_MODEL))
    parser.add_argument("--prompt", default=os.environ.get("SKMOE_EXAMPLE_PROMPT") or None)
    parser.add_argument("--cache", default=os.environ.get("SKMOE_EXAMPLE_CACHE") or None,
                        help="SQLite embedding cache shared between runs (optional)")
    parser.add_argument("--language", default="eng_Latn")
    parser.add_argument("--min-cluster-size", type=int, default=5)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = load_sib200_sample(languages=args.language, splits=("train", "test"))
    texts, topics = data.text.tolist(), data.category.to_numpy()

    embedder = MoEEmbeddingTransformer(
        args.model, prompt_name="clustering", prompt=args.prompt, normalize=True, cache=args.cache
    )
    X = embedder.fit_transform(texts)  # unit rows: Euclidean ranks neighbours like cosine

    # A small corpus wants a small neighbourhood (BERTopic's default is 15). random_state makes
    # UMAP reproducible on one machine (it then runs single-threaded).
    layout = UMAP(n_neighbors=10, n_components=5, min_dist=0.0, metric="cosine",
                  random_state=0, n_jobs=1).fit_transform(X)
    clusters = HDBSCAN(
        min_cluster_size=args.min_cluster_size, metric="euclidean", copy=True
    ).fit_predict(layout)

    n_topics = len(np.unique(topics))
    kmeans = KMeans(n_clusters=n_topics, n_init=10, random_state=0).fit_predict(X)

    n_clusters = len(set(clusters) - {-1})
    print(f"texts={len(texts)} topics={n_topics} dim={X.shape[1]}")
    for c in range(n_clusters):
        members, counts = np.unique(topics[clusters == c], return_counts=True)
        print(f"  cluster {c:2d}: {counts.sum():3d} texts, {counts.max():3d} of them "
              f"{members[counts.argmax()]}")
    print(f"hdbscan clusters={n_clusters} noise={np.mean(clusters == -1):.2f}")
    print(f"v_measure umap+hdbscan={v_measure_score(topics, clusters):.3f}")
    print(f"v_measure kmeans(k={n_topics})={v_measure_score(topics, kmeans):.3f}")


if __name__ == "__main__":
    main()
