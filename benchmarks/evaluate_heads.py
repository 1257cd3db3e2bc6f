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
# name -> (normalize, centred on the rows the head is fitted on)
VARIANTS = {"l2": ("l2", False), "len2": (2.0, False), "default": (1.25, True),
            "c2": (2.0, True), "rms": ("rms", False), "raw": (None, False)}
CV_LENGTHS = (1.0, 1.25, 1.5, 2.0)  # centred row lengths compared by 5-fold CV on the train split
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

    # the raw pooled vectors: every variant is post-processed from them per fit below
    est = MoEEmbeddingTransformer(str(args.model), prompt=args.prompt, normalize=False,
                                  center=False, cache=str(args.cache), verbose=1)
    raw = est.fit([]).transform(texts)
    return dict(zip(texts, raw, strict=True))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from scipy.stats import spearmanr
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import adjusted_rand_score

    from skmoe.datasets import load_sib200, load_sts17
    from skmoe.postprocessing import fit_center, truncate_and_normalize

    args = parse_args(argv)
    t0 = time.time()
    sib = load_sib200(args.sib200, languages=args.languages, splits=("train", "test"))
    sts = load_sts17(args.sts17)
    if args.sts_pairs:
        sts = sts.groupby("track", sort=False).head(args.sts_pairs)
    texts = list(dict.fromkeys([*sib.text, *sts.sentence1, *sts.sentence2]))
    table = embed(args, texts)
    t_embed = time.time() - t0

    def vectors(frame_texts: pd.Series, variant: str, fit_texts: pd.Series) -> np.ndarray:
        """What ``MoEEmbeddingTransformer(normalize=..., center=...)`` fitted on ``fit_texts``
        gives for ``frame_texts`` (the estimator's own post-processing functions)."""
        normalize, centred = VARIANTS[variant]
        center = (fit_center(np.stack([table[t] for t in fit_texts]), None) if centred
                  else None)
        raw = np.stack([table[t] for t in frame_texts])
        return truncate_and_normalize(raw, None, normalize, center)

    langs = list(dict.fromkeys(sib.language))
    rows = []
    not_converged: Counter = Counter()
    n_topics = sib.category.nunique()
    eng_tr = sib[(sib.language == "eng_Latn") & (sib.split == "train")]
    for variant in VARIANTS:
        x_eng = vectors(eng_tr.text, variant, eng_tr.text)
        for li, lang in enumerate(langs):
            tr = sib[(sib.language == lang) & (sib.split == "train")]
            te = sib[(sib.language == lang) & (sib.split == "test")]
            x_tr, x_te = vectors(tr.text, variant, tr.text), vectors(te.text, variant, tr.text)
            x_te_en = vectors(te.text, variant, eng_tr.text)  # the head fitted on English
            for name, head in heads().items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    acc = clone(head).fit(x_tr, tr.category).score(x_te, te.category)
                    acc_en = clone(head).fit(x_eng, eng_tr.category).score(x_te_en, te.category)
                not_converged[(variant, name)] += sum(
                    issubclass(w.category, ConvergenceWarning) for w in caught)
                rows.append((variant, lang, name, "in-language", acc))
                rows.append((variant, lang, name, "English->X", acc_en))
            both = pd.concat([tr, te])
            x_all = vectors(both.text, variant, both.text)
            for name, fn in clusterings(n_topics, li < args.umap_languages).items():
                rows.append((variant, lang, name, "clusters (ARI)",
                             adjusted_rand_score(both.category, fn(x_all))))
        for track, g in sts.groupby("track", sort=False):
            both_sides = pd.concat([g.sentence1, g.sentence2])
            a, b = vectors(g.sentence1, variant, both_sides), vectors(g.sentence2, variant,
                                                                       both_sides)
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
    cv = length_cv(sib, table)
    md = render(args, res, summary, worst, langs, t_embed, time.time() - t0, not_converged,
                len(sts), cv)
    if args.write_docs:
        splice_docs(REPO / "docs" / "evaluation-results.md", md, START, END)
    else:
        print(md)
    return res


def length_cv(sib: pd.DataFrame, table: dict[str, np.ndarray]) -> pd.DataFrame:
    """How the centred rows' length was chosen, on the train split only (5-fold stratified CV,
    the test split unused): mean CV accuracy per language of LogisticRegression(), LinearSVC()
    and RidgeClassifier() on centred rows of each length in ``CV_LENGTHS`` (the centre learned
    on the training folds), of LogisticRegression() on uncentred rows of length 2, and of
    StandardScaler + LogisticRegression()."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from skmoe.postprocessing import fit_center, truncate_and_normalize

    linear = {"LogisticRegression()": LogisticRegression(), "LinearSVC()": LinearSVC(),
              "RidgeClassifier()": RidgeClassifier()}
    settings = [(f"centred {length}", length, True) for length in CV_LENGTHS]
    settings.append(("uncentred 2.0", 2.0, False))
    rows = []
    train = sib[sib.split == "train"]
    for lang, part in train.groupby("language", sort=False):
        raw = np.stack([table[t] for t in part.text])
        y = part.category.to_numpy()
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(raw, y)
        for fold, (a, b) in enumerate(folds):
            for name, length, centred in settings:
                center = fit_center(raw[a], None) if centred else None
                xa = truncate_and_normalize(raw[a], None, length, center)
                xb = truncate_and_normalize(raw[b], None, length, center)
                for head, est in linear.items():
                    rows.append((lang, fold, name, head,
                                 clone(est).fit(xa, y[a]).score(xb, y[b])))
            tuned = make_pipeline(StandardScaler(), LogisticRegression())
            rows.append((lang, fold, "any", "StandardScaler+LogisticRegression()",
                         tuned.fit(raw[a], y[a]).score(raw[b], y[b])))
    out = pd.DataFrame(rows, columns=["language", "fold", "setting", "head", "score"])
    return out.groupby(["language", "setting", "head"], sort=False)["score"].mean().reset_index()


def _render_cv(cv: pd.DataFrame) -> list[str]:
    tuned = cv[cv["head"] == "StandardScaler+LogisticRegression()"].set_index("language")["score"]
    settings = [s for s in dict.fromkeys(cv.setting) if s != "any"]
    heads = ["LogisticRegression()", "LinearSVC()", "RidgeClassifier()"]
    lines = [
        "",
        "### How the default length was chosen (train split only, 5-fold CV)",
        "",
        f"5-fold stratified CV on each language's 701 training rows ({cv.language.nunique()} "
        "languages; the test split above was not used). Mean CV accuracy over languages; "
        "`LR gap`: the largest shortfall over languages of `LogisticRegression()` against "
        "StandardScaler + LogisticRegression "
        f"({tuned.mean():.3f} on average), and in how many languages it exceeds 0.02. Longer "
        "rows help `LogisticRegression()`, shorter ones `LinearSVC()` and `RidgeClassifier()`; "
        "the default is the shortest length whose gap stays within 0.02 everywhere.",
        "",
        "| setting | " + " | ".join(heads) + " | LR gap (languages > 0.02) |",
        "|---|" + "---|" * (len(heads) + 1),
    ]
    for setting in settings:
        part = cv[cv.setting == setting]
        means = part.groupby("head")["score"].mean()
        lr = part[part["head"] == "LogisticRegression()"].set_index("language")["score"]
        gap = tuned - lr
        worst = gap.round(6).max()
        lines.append(f"| {setting} | " + " | ".join(f"{means[h]:.4f}" for h in heads)
                     + f" | {worst:.3f} ({gap.idxmax()}; {int((gap.round(6) > 0.02).sum())}) |")
    return lines


def render(args: argparse.Namespace, res: pd.DataFrame, summary: pd.DataFrame,
           worst: pd.DataFrame, langs: list[str], t_embed: float, t_all: float,
           not_converged: Counter, n_sts: int, cv: pd.DataFrame) -> str:
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
        "length 2 (`len2`, `normalize=2.0, center=False`, the previous default), unit vectors "
        "minus the mean unit vector of the rows the head is fitted on, then rows of length 1.25 "
        "(`default`, `normalize=1.25, center=True`: the transformer fitted on those rows) or "
        "of length 2 (`c2`), L2-normalised "
        "and scaled by sqrt(384) so each feature has unit RMS (`rms`, `normalize=\"rms\"`), "
        "and raw pooled vectors (`raw`, `normalize=False`). SIB-200: "
        f"{len(langs)} languages, full train split (701 rows) -> test split (204 rows), accuracy "
        "averaged over languages (min over languages in brackets); English->X trains on the "
        "English train split (centred: the English training mean is subtracted from X's test "
        "rows too, as a pipeline fitted on English does). Clustering: adjusted Rand index "
        "against the 7 topics on each language's 905 train+test rows (centred: their own "
        f"mean; UMAP: first {n_umap} languages only, for time). STS17: Spearman of cosine per "
        f"track, averaged over the 7 tracks ({n_sts} pairs in all; centred: the mean of the "
        "track's sentences, both sides).",
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
    def in_language(variant: str) -> pd.DataFrame:
        return res[(res.task == "in-language") & (res.variant == variant)].pivot_table(
            index="language", columns="head", values="score")

    card, tuned = "LogisticRegression()", "StandardScaler+LogisticRegression()"
    tables = {v: in_language(v) for v in ("l2", "len2", "default")}
    gaps = {v: t[tuned] - t[card] for v, t in tables.items()}
    lines += [
        "",
        "The card's pipeline (`LogisticRegression()` on the transformer's output) against "
        "StandardScaler+LogisticRegression on the same output, in-language: largest shortfall "
        "over languages " + ", ".join(
            f"{g.max():.3f} with `{v}` ({g.idxmax()}, {int((g > 0.02).sum())} languages beyond "
            f"0.02)" for v, g in gaps.items())
        + "; mean shortfall " + ", ".join(f"{g.mean():.3f} (`{v}`)" for v, g in gaps.items())
        + ".",
        "",
        "| language | " + " | ".join(f"LR() {v}" for v in tables) + " | "
        + " | ".join(f"Scaler+LR {v}" for v in ("len2", "default")) + " |",
        "|---|" + "---|" * (len(tables) + 2),
    ]
    for lang in langs:
        cells = [f"{t.loc[lang, card]:.3f}" for t in tables.values()]
        cells += [f"{tables[v].loc[lang, tuned]:.3f}" for v in ("len2", "default")]
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines += _render_cv(cv)
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
