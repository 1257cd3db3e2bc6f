"""Does the default centring (``center=True``) help or hurt clustering? Per SIB-200 language.

Each language's train+test rows (7 topics) embedded two ways: the estimator's defaults fitted
on those rows (centred on them, length 1.25) and the model's own unit vectors
(``center=False, normalize="l2"``, what sentence-transformers gives). Adjusted Rand index
against the topics for KMeans(7, n_init=10) over 5 seeds, MiniBatchKMeans(7, n_init=1) as
``cluster_report`` runs it over 10 seeds, agglomerative ward and average-linkage cosine, and
UMAP(cosine, 5-d) + KMeans(7) over 2 seeds on the first ``--umap-languages`` languages.

Run::

    python benchmarks/clustering_centre.py --model /tmp/skmoe-assets/me5-small-q4deq \\
        --prompt "query: " --sib200 DATA/sib200 --cache /tmp/cluster.sqlite
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common beside this file
from bench_common import cpu_description  # noqa: E402

from skmoe import MoEEmbeddingTransformer  # noqa: E402
from skmoe.datasets import load_sib200  # noqa: E402

LANGUAGES = ["eng_Latn", "fra_Latn", "zho_Hans", "deu_Latn", "arb_Arab", "hin_Deva", "jpn_Jpan",
             "por_Latn", "rus_Cyrl", "spa_Latn", "swh_Latn", "tur_Latn"]


def methods(X: np.ndarray, umap: bool) -> dict[str, list[np.ndarray]]:
    """Cluster assignments of each method (one per seed)."""
    out = {
        "KMeans(7, n_init=10) x5": [KMeans(7, n_init=10, random_state=s).fit_predict(X)
                                    for s in range(5)],
        "MiniBatchKMeans(7, n_init=1) x10": [
            MiniBatchKMeans(7, batch_size=512, n_init=1, random_state=s).fit_predict(X)
            for s in range(10)],
        "Agglomerative ward": [AgglomerativeClustering(7).fit_predict(X)],
        "Agglomerative average, cosine": [
            AgglomerativeClustering(7, metric="cosine", linkage="average").fit_predict(X)],
    }
    if umap:
        from umap import UMAP

        out["UMAP(cosine, 5-d) + KMeans(7) x2"] = [
            KMeans(7, n_init=10, random_state=0).fit_predict(
                UMAP(n_components=5, metric="cosine", random_state=s, n_jobs=1).fit_transform(X))
            for s in range(2)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--sib200", required=True)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--languages", nargs="*", default=LANGUAGES)
    ap.add_argument("--umap-languages", type=int, default=4)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(cpu_description())
    data = load_sib200(args.sib200, languages=args.languages, splits=("train", "test"))
    common = dict(model=args.model, prompt=args.prompt, cache=args.cache, verbose=0)
    rows = []
    for i, lang in enumerate(args.languages):
        part = data[data.language == lang]
        texts, y = part.text.tolist(), part.category.to_numpy()
        variants = {"default": MoEEmbeddingTransformer(**common).fit_transform(texts),
                    "l2": MoEEmbeddingTransformer(center=False, normalize="l2", **common)
                    .fit_transform(texts)}
        for variant, X in variants.items():
            for method, preds in methods(X, i < args.umap_languages).items():
                rows.append({"language": lang, "variant": variant, "method": method,
                             "ari": float(np.mean([adjusted_rand_score(y, p) for p in preds]))})
        print(f"{lang}: {len(texts)} rows", flush=True)
    table = pd.DataFrame(rows).pivot_table(index=["method", "language"], columns="variant",
                                           values="ari")
    table["difference"] = table["default"] - table["l2"]
    print("\n| method | languages | ARI default (centred, 1.25) | ARI l2 (model's own) | "
          "difference | default better in |\n|---|---|---|---|---|---|")
    for method, g in table.groupby(level=0, sort=False):
        print(f"| {method} | {len(g)} | {g['default'].mean():.3f} | {g['l2'].mean():.3f} | "
              f"{g['difference'].mean():+.3f} | {int((g['difference'] > 0).sum())}/{len(g)} |")


if __name__ == "__main__":
    main()
