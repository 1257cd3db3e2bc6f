"""Which output scaling lets sklearn's heads work with their own defaults? (issue 15)

Every head with its sklearn defaults, on the same multilingual-e5-small vectors post-processed
four ways: ``l2`` (unit length, the first default), ``len2`` (L2 length 2, the default
``normalize=2.0``), ``rms`` (unit length times sqrt(d): unit RMS per feature) and ``raw`` (pooled
vectors as the model gives them). Reference: StandardScaler +
LogisticRegression (a tuned-enough head, insensitive to the scaling).

- SIB-200, every language found: in-language (train split -> test split) and English -> X (English
  train split -> X's test split): LogisticRegression(), LinearSVC(), RidgeClassifier(),
  KNeighborsClassifier(). Clustering of each language's train+test rows (7 topics), adjusted Rand
  index: KMeans(n_clusters=7, random_state=0), HDBSCAN() (noise = its own cluster),
  UMAP(metric="cosine", random_state=0) + KMeans(7) on the first ``--umap-languages`` languages.
- STS17: Spearman of cosine per track (scale-invariant: the figures must agree).

Vectors come from ``MoEEmbeddingTransformer(normalize=False, cache=...)``: reruns read the SQLite
cache and cost only the heads. e5 takes the prefix ``"query: "``.

Run::

    python benchmarks/evaluate_heads.py --model /tmp/skmoe-assets/me5-small-q4deq \\
        --sib200 DATA/sib200 --sts17 DATA/sts17 --cache /tmp/heads.sqlite --write-docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common beside this file
from bench_common import splice_docs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"l2": "l2", "len2": 2.0, "rms": "rms", "raw": None}
START, END = "<!-- heads:start -->", "<!-- heads:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="multilingual-e5-small folder")
    p.add_argument("--sib200", type=Path, required=True)
    p.add_argument("--sts17", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True, help="SQLite embedding cache file")
    p.add_argument("--prompt", default="query: ")
    p.add_argument("--languages", nargs="*", default=None, help="default: every folder found")
    p.add_argument("--umap-languages", type=int, default=8)
    p.add_argument("--sts-pairs", type=int, default=None,
                   help="only the first N pairs of each STS17 track")
    p.add_argument("--write-docs", action="store_true",
                   help="replace the heads section of docs/evaluation-results.md")
    return p.parse_args(argv)


def heads() -> dict[str, object]:
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return {
        "LogisticRegression()": LogisticRegression(),
        "LinearSVC()": LinearSVC(),
        "RidgeClassifier()": RidgeClassifier(),
        "KNeighborsClassifier()": KNeighborsClassifier(),
        "StandardScaler+LogisticRegression()": make_pipeline(StandardScaler(), LogisticRegression()),
    }


def clusterings(n: int, with_umap: bool) -> dict[str, object]:
    from sklearn.cluster import HDBSCAN, KMeans

    out: dict[str, object] = {
        "KMeans(7)": lambda x: KMeans(n_clusters=n, random_state=0).fit_predict(x),
        "HDBSCAN()": lambda x: HDBSCAN().fit_predict(x),
    }
    if with_umap:
        def umap_kmeans(x: np.ndarray) -> np.ndarray:
            import umap

            low = umap.UMAP(metric="cosine", random_state=0).fit_transform(x)
            return KMeans(n_clusters=n, random_state=0).fit_predict(low)

        out["UMAP(cosine)+KMeans(7)"] = umap_kmeans
    return out


def embed(args: argparse.Namespace, texts: list[str]) -> dict[str, np.ndarray]:
    from skmoe import MoEEmbeddingTransformer

    est = MoEEmbeddingTransformer(str(args.model), prompt=args.prompt, normalize=False,
                                  cache=str(args.cache), verbose=1)
    raw = est.fit_transform(texts)
    return dict(zip(texts, raw, strict=True))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from scipy.stats import spearmanr
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import adjusted_rand_score

    from skmoe.datasets import load_sib200, load_sts17
    from skmoe.postprocessing import truncate_and_normalize

    args = parse_args(argv)
    t0 = time.time()
    sib = load_sib200(args.sib200, languages=args.languages, splits=("train", "test"))
    sts = load_sts17(args.sts17)
    if args.sts_pairs:
        sts = sts.groupby("track", sort=False).head(args.sts_pairs)
    texts = list(dict.fromkeys([*sib.text, *sts.sentence1, *sts.sentence2]))
    table = embed(args, texts)
    t_embed = time.time() - t0

    def vectors(frame_texts: pd.Series, variant: str) -> np.ndarray:
        raw = np.stack([table[t] for t in frame_texts])
        return truncate_and_normalize(raw, None, VARIANTS[variant])

    langs = list(dict.fromkeys(sib.language))
    rows = []
    not_converged: Counter = Counter()
    n_topics = sib.category.nunique()
    eng_tr = sib[(sib.language == "eng_Latn") & (sib.split == "train")]
    for variant in VARIANTS:
        x_eng = vectors(eng_tr.text, variant)
        for li, lang in enumerate(langs):
            tr = sib[(sib.language == lang) & (sib.split == "train")]
            te = sib[(sib.language == lang) & (sib.split == "test")]
            x_tr, x_te = vectors(tr.text, variant), vectors(te.text, variant)
            for name, head in heads().items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    acc = clone(head).fit(x_tr, tr.category).score(x_te, te.category)
                    acc_en = clone(head).fit(x_eng, eng_tr.category).score(x_te, te.category)
                not_converged[(variant, name)] += sum(
                    issubclass(w.category, ConvergenceWarning) for w in caught)
                rows.append((variant, lang, name, "in-language", acc))
                rows.append((variant, lang, name, "English->X", acc_en))
            both = pd.concat([tr, te])
            x_all = vectors(both.text, variant)
            for name, fn in clusterings(n_topics, li < args.umap_languages).items():
                rows.append((variant, lang, name, "clusters (ARI)",
                             adjusted_rand_score(both.category, fn(x_all))))
        for track, g in sts.groupby("track", sort=False):
            a, b = vectors(g.sentence1, variant), vectors(g.sentence2, variant)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            rows.append((variant, track, "cosine", "STS17 (Spearman)",
                         float(spearmanr(cos, g.score).statistic)))
        print(f"{variant}: done at {time.time() - t0:.0f}s", flush=True)
    res = pd.DataFrame(rows, columns=["variant", "language", "head", "task", "score"])
    summary = (res.pivot_table(index=["task", "head"], columns="variant", values="score",
                               aggfunc="mean")[list(VARIANTS)])
    worst = (res.pivot_table(index=["task", "head"], columns="variant", values="score",
                             aggfunc="min")[list(VARIANTS)])
    print(summary.round(4).to_string())
    md = render(args, res, summary, worst, langs, t_embed, time.time() - t0, not_converged,
                len(sts))
    if args.write_docs:
        splice_docs(REPO / "docs" / "evaluation-results.md", md, START, END)
    else:
        print(md)
    return res


def render(args: argparse.Namespace, res: pd.DataFrame, summary: pd.DataFrame,
           worst: pd.DataFrame, langs: list[str], t_embed: float, t_all: float,
           not_converged: Counter, n_sts: int) -> str:
    import sklearn
    import torch

    n_umap = min(args.umap_languages, len(langs))
    lines = [
        START,
        "## Output scaling and sklearn's default heads (issue 15)",
        "",
        f"Made by `python benchmarks/evaluate_heads.py --model me5-small-q4deq --sib200 ... "
        f"--sts17 ... --cache ... --write-docs` on {dt.date.today()}; {platform.platform()}, "
        f"{os.cpu_count()} CPU cores (shared, busy), torch {torch.__version__}, scikit-learn "
        f"{sklearn.__version__}; {t_all:.0f} s in all, {t_embed:.0f} s of it embedding "
        "(0 on a rerun: SQLite cache).",
        "",
        "multilingual-e5-small (`query: ` prefix, mean pooling) with every head at its sklearn "
        "defaults. Columns: the same vectors L2-normalised (`l2`, the first default), rows of L2 "
        "length 2 (`len2`, the default `normalize=2.0`), L2-normalised and scaled by sqrt(384) so "
        "each feature has unit RMS (`rms`, `normalize=\"rms\"`), and raw pooled vectors (`raw`, "
        "`normalize=False`). SIB-200: "
        f"{len(langs)} languages, full train split (701 rows) -> test split (204 rows), accuracy "
        "averaged over languages (min over languages in brackets); English->X trains on the "
        "English train split. Clustering: adjusted Rand index against the 7 topics on each "
        f"language's 905 train+test rows (UMAP: first {n_umap} languages only, for time). STS17: "
        f"Spearman of cosine per track, averaged over the 7 tracks ({n_sts} pairs in all).",
        "",
        "| task | head | " + " | ".join(VARIANTS) + " |",
        "|---|---|" + "---|" * len(VARIANTS),
    ]
    for (task, head), row in summary.iterrows():
        cells = [f"{row[v]:.3f} ({worst.loc[(task, head), v]:.3f})" for v in VARIANTS]
        lines.append(f"| {task} | {head} | " + " | ".join(cells) + " |")
    fits = 2 * len(langs)
    warned = ", ".join(f"{h} with `{v}` {n}/{fits}" for (v, h), n in sorted(not_converged.items())
                       if n)
    lines += ["", "Fits that ended with a ConvergenceWarning (of in-language + English->X fits): "
              + (warned or "none") + "."]
    lr = res[(res.task == "in-language") & (res.variant == "len2")].pivot_table(
        index="language", columns="head", values="score")
    gap = lr["StandardScaler+LogisticRegression()"] - lr["LogisticRegression()"]
    lr_l2 = res[(res.task == "in-language") & (res.variant == "l2")].pivot_table(
        index="language", columns="head", values="score")
    gap_l2 = lr_l2["StandardScaler+LogisticRegression()"] - lr_l2["LogisticRegression()"]
    lines += [
        "",
        "The card's pipeline (`LogisticRegression()` on the transformer's output) against "
        "StandardScaler+LogisticRegression, in-language: largest shortfall over languages "
        f"{gap.max():.3f} with `len2` ({gap.idxmax()}), {gap_l2.max():.3f} with `l2` "
        f"({gap_l2.idxmax()}); mean shortfall {gap.mean():.3f} (`len2`) and {gap_l2.mean():.3f} "
        "(`l2`).",
        "",
        "| language | LogisticRegression() l2 | LogisticRegression() len2 | StandardScaler+LR |",
        "|---|---|---|---|",
    ]
    for lang in langs:
        lines.append(f"| {lang} | {lr_l2.loc[lang, 'LogisticRegression()']:.3f} | "
                     f"{lr.loc[lang, 'LogisticRegression()']:.3f} | "
                     f"{lr.loc[lang, 'StandardScaler+LogisticRegression()']:.3f} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
