"""Learned attention pooling vs mean pooling on SIB-200 and STS17 (issue 15, item 3).

One process computes each text's token states once (``skmoe.token_states`` memo, shared by every
``LearnedPooling`` fit and transform below); mean pooling is ``LearnedPooling(max_iter=0)``, which
is the transformer's mean pooling to 1e-5, so the baseline costs no second encoder pass. Both
sides get the same head, ``LogisticRegression()`` at sklearn's defaults, on the default output
(``center=True, normalize=1.25``: each side centred on the rows its head is trained on).

SIB-200 (per language, in the order given):

- ``full``: the whole train split (701 rows) -> test split (204 rows), in-language, one learned
  fit per seed. Interval: paired bootstrap over the 204 test rows (2000 resamples) of
  ``mean over seeds of learned correctness - mean-pooling correctness``.
- ``en2x``: pooling *and* head trained on the English train split (one fit per seed, reused for
  every language), scored on X's test split; same interval.
- ``fewshot``: ``k`` rows per label drawn from X's train split (draw ``seed``), the same draw for
  both sides. Interval: t-interval (95%) over the draws of the paired difference.

STS17: pooling trained on the pairs of one track, Spearman of cosine on every other track.
``infonce``: ``fit(pairs)`` on the track's pairs with gold score >= 3 (positives only; in-batch
negatives); ``cosine``: ``fit(pairs, scores)`` on all of its pairs. Interval: paired bootstrap
over the test track's pairs of the Spearman difference.

Results go to a JSON file after every unit of work (a rerun skips what is there), so an
interrupted run keeps what it measured; ``--write-docs`` renders the file into
docs/evaluation-results.md (the ``learned-pooling`` section).

Run::

    nice -n 10 python benchmarks/evaluate_learned_pooling.py --model /tmp/skmoe-assets2/me5-small-q4deq \\
        --sib200 DATA/sib200 --sts17 DATA/sts17 --out /tmp/lp.json --languages eng_Latn fra_Latn ...
    python benchmarks/evaluate_learned_pooling.py --out /tmp/lp.json --write-docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common beside this file
from bench_common import splice_docs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- learned-pooling:start -->", "<!-- learned-pooling:end -->"
POSITIVE = 3.0  # STS17 gold score from which a pair counts as a positive for InfoNCE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="multilingual-e5-small folder")
    p.add_argument("--sib200", type=Path, default=None)
    p.add_argument("--sts17", type=Path, default=None)
    p.add_argument("--languages", nargs="+", default=["eng_Latn"])
    p.add_argument("--prompt", default="query: ")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--shots", type=int, nargs="*", default=[8, 16, 32])
    p.add_argument("--shot-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--parts", nargs="+", default=["full", "en2x", "fewshot", "sts"])
    p.add_argument("--sts-train", nargs="*", default=None, help="default: every track")
    p.add_argument("--sts-objectives", nargs="+", default=["infonce", "cosine", "cosent"],
                   choices=["infonce", "cosine", "cosent"],
                   help="cosine: fit(pairs, scores) with objective='cosine_mse'; cosent: "
                        "objective='cosent' (the default for scored pairs)")
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--attention-penalty", type=float, default=None)
    p.add_argument("--eval-split", default="test", choices=("test", "dev"),
                   help="SIB-200 split scored (dev: to choose settings without the test split)")
    p.add_argument("--set", nargs="*", default=[], metavar="PARAM=VALUE",
                   help="other LearnedPooling parameters (numbers), e.g. validation_fraction=0")
    p.add_argument("--out", type=Path, required=True, help="JSON results (appended, resumable)")
    p.add_argument("--write-docs", action="store_true",
                   help="render --out into docs/evaluation-results.md and stop")
    return p.parse_args(argv)


def paired_ci(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(b) - mean(a) over paired rows."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = (b[idx] - a[idx]).mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def t_ci(d: np.ndarray) -> tuple[float, float]:
    """95% t-interval of the mean of ``d`` (NaN for fewer than 2 values)."""
    from scipy import stats

    if len(d) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def spearman_ci(gold: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 1000,
                seed: int = 0) -> tuple[float, float]:
    """95% paired bootstrap interval (over pairs) of Spearman(b) - Spearman(a)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i = rng.integers(0, len(gold), len(gold))
        g = rankdata(gold[i])
        out.append(np.corrcoef(g, rankdata(b[i]))[0, 1] - np.corrcoef(g, rankdata(a[i]))[0, 1])
    return float(np.nanquantile(out, 0.025)), float(np.nanquantile(out, 0.975))


class Results:
    """The JSON file of results: one record per unit, written after every unit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"records": [], "meta": {}}
        self.done = {r["key"] for r in self.data["records"]}

    def add(self, record: dict) -> None:
        self.data["records"].append(record)
        self.done.add(record["key"])
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)
        print(json.dumps({k: v for k, v in record.items() if not isinstance(v, list)}), flush=True)


def run(args: argparse.Namespace) -> None:
    from sklearn.linear_model import LogisticRegression

    from skmoe import LearnedPooling
    from skmoe.datasets import load_sib200, load_sts17

    res = Results(args.out)
    res.data["meta"].update({
        "model": Path(args.model).name, "prompt": args.prompt, "platform": platform.platform(),
        "cpus": os.cpu_count(), "date": str(dt.date.today())})
    extra = {k: v for k, v in (("max_iter", args.max_iter),
                               ("attention_penalty", args.attention_penalty)) if v is not None}
    for item in args.set:
        name, _, value = item.partition("=")
        extra[name] = json.loads(value)
    res.data["meta"]["learned_params"] = extra

    def pooling(max_iter: int | None = None, seed: int = 0, **more: object) -> LearnedPooling:
        kw = dict(extra, **({} if max_iter is None else {"max_iter": max_iter}), **more)
        return LearnedPooling(str(args.model), prompt=args.prompt, random_state=seed, **kw)

    def head_correct(pool: LearnedPooling, tr: pd.DataFrame, te: pd.DataFrame) -> np.ndarray:
        clf = LogisticRegression().fit(pool.transform(tr.text), tr.category)
        return (clf.predict(pool.transform(te.text)) == te.category.to_numpy()).astype(float)

    def tuned_acc(pool: LearnedPooling, tr: pd.DataFrame, te: pd.DataFrame) -> float:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = make_pipeline(StandardScaler(), LogisticRegression())
        clf.fit(pool.transform(tr.text), tr.category)
        return float(clf.score(pool.transform(te.text), te.category))

    def mean_on(rows: pd.DataFrame) -> LearnedPooling:
        """Mean pooling fitted on the rows the head is trained on (its output is centred on
        their mean, as the learned side's is on its training rows)."""
        return pooling(max_iter=0).fit(list(rows.text), list(rows.category))

    def fitted(texts: pd.Series, y: pd.Series | None, seed: int) -> tuple[LearnedPooling, float]:
        t = time.time()
        pool = pooling(seed=seed).fit(list(texts), None if y is None else list(y))
        return pool, time.time() - t

    mean = None
    if args.sib200 is not None:
        sib = load_sib200(args.sib200, languages=list(dict.fromkeys(["eng_Latn", *args.languages])),
                          splits=("train", args.eval_split))
        eng_tr = sib[(sib.language == "eng_Latn") & (sib.split == "train")]
        # max_iter=0 is mean pooling whatever it is fitted on: fit it on a few rows unless the
        # English train split is needed anyway (full, en2x)
        few = slice(None) if {"full", "en2x"} & set(args.parts) else slice(0, 20)
        mean = pooling(max_iter=0).fit(list(eng_tr.text[few]), list(eng_tr.category[few]))
        mean_en = mean  # fitted on the English train split when a part needs it
        eng_pools: dict[int, LearnedPooling] = {}
        for lang in args.languages:
            tr = sib[(sib.language == lang) & (sib.split == "train")]
            te = sib[(sib.language == lang) & (sib.split == args.eval_split)]
            need_train = ("full" in args.parts and f"full/{lang}" not in res.done) or (
                "fewshot" in args.parts
                and any(f"fewshot/{lang}/{k}" not in res.done for k in args.shots))
            t0 = time.time()
            # token states, once per text (the train split only where a part needs it)
            mean.transform(pd.concat([tr.text, te.text]) if need_train else te.text)
            states_s = time.time() - t0
            if "full" in args.parts and f"full/{lang}" not in res.done:
                ok_mean = head_correct(mean_on(tr), tr, te)
                oks, epochs, fit_s = [], [], []
                for seed in args.seeds:
                    pool, s = fitted(tr.text, tr.category, seed)
                    oks.append(head_correct(pool, tr, te))
                    epochs.append(pool.n_iter_)
                    fit_s.append(round(s, 1))
                    if lang == "eng_Latn":
                        eng_pools[seed] = pool
                ok = np.mean(oks, 0)
                res.add({"key": f"full/{lang}", "part": "full", "language": lang,
                         "mean": ok_mean.mean(), "learned": ok.mean(),
                         "learned_seeds": [float(o.mean()) for o in oks],
                         "ci": paired_ci(ok_mean, ok), "epochs": epochs, "fit_s": fit_s,
                         "tuned_mean": tuned_acc(mean_on(tr), tr, te),
                         "states_s": round(states_s, 1)})
            if "en2x" in args.parts and f"en2x/{lang}" not in res.done:
                ok_mean_en = head_correct(mean_en, eng_tr, te)
                oks = []
                for seed in args.seeds:
                    if seed not in eng_pools:
                        eng_pools[seed] = fitted(eng_tr.text, eng_tr.category, seed)[0]
                    oks.append(head_correct(eng_pools[seed], eng_tr, te))
                ok = np.mean(oks, 0)
                res.add({"key": f"en2x/{lang}", "part": "en2x", "language": lang,
                         "mean": ok_mean_en.mean(), "learned": ok.mean(),
                         "learned_seeds": [float(o.mean()) for o in oks],
                         "ci": paired_ci(ok_mean_en, ok),
                         "tuned_mean": tuned_acc(mean_en, eng_tr, te)})
            if "fewshot" not in args.parts:
                continue
            for k in args.shots:
                key = f"fewshot/{lang}/{k}"
                if key in res.done:
                    continue
                m_acc, l_acc, fit_s = [], [], []
                for seed in args.shot_seeds:
                    draw = tr.groupby("category", group_keys=False).sample(
                        n=k, random_state=seed)
                    m_acc.append(head_correct(mean_on(draw), draw, te).mean())
                    pool, s = fitted(draw.text, draw.category, seed)
                    l_acc.append(head_correct(pool, draw, te).mean())
                    fit_s.append(round(s, 1))
                d = np.array(l_acc) - np.array(m_acc)
                res.add({"key": key, "part": "fewshot", "language": lang, "k": k,
                         "mean": float(np.mean(m_acc)), "learned": float(np.mean(l_acc)),
                         "mean_draws": m_acc, "learned_draws": l_acc, "ci": t_ci(d),
                         "fit_s": fit_s})
    if "sts" in args.parts and args.sts17 is not None:
        from scipy.stats import spearmanr

        sts = load_sts17(args.sts17)
        tracks = list(dict.fromkeys(sts.track))
        if mean is None:
            mean = pooling(max_iter=0).fit(list(sts.sentence1[:20]), [0, 1] * 10)

        def cosines(pool: LearnedPooling, g: pd.DataFrame) -> np.ndarray:
            """Row-aligned cosines in the pooling's own geometry (``similarity``: uncentred)."""
            return np.diag(pool.similarity(list(g.sentence1), list(g.sentence2)))

        base = {t: cosines(mean, g) for t, g in sts.groupby("track", sort=False)}
        for train in args.sts_train or tracks:
            g = sts[sts.track == train]
            for objective in args.sts_objectives:
                key = f"sts/{train}/{objective}"
                if key in res.done:
                    continue
                pos = g[g.score >= POSITIVE] if objective == "infonce" else g
                pairs = pos[["sentence1", "sentence2"]].to_numpy(dtype=object)
                t = time.time()
                chosen = {"cosine": {"objective": "cosine_mse"},
                          "cosent": {"objective": "cosent"}}.get(objective, {})
                pool = pooling(**chosen).fit(
                    pairs, None if objective == "infonce" else pos.score.to_numpy())
                fit_s = time.time() - t
                per = {}
                for test, h in sts.groupby("track", sort=False):
                    if test == train:
                        continue
                    cos = cosines(pool, h)
                    gold = h.score.to_numpy()
                    per[test] = {"mean": float(spearmanr(base[test], gold).statistic),
                                 "learned": float(spearmanr(cos, gold).statistic),
                                 "ci": spearman_ci(gold, base[test], cos)}
                res.add({"key": key, "part": "sts", "train": train, "objective": objective,
                         "pairs": len(pairs), "epochs": pool.n_iter_, "fit_s": round(fit_s, 1),
                         "tests": per})


def render(data: dict) -> str:
    recs = data["records"]
    meta = data["meta"]
    lines = [START, "## Learned attention pooling vs mean pooling (issue 15)", ""]
    lines += [
        f"Made by `python benchmarks/evaluate_learned_pooling.py` ({meta.get('date')}, "
        f"{meta.get('platform')}, {meta.get('cpus')} CPU cores shared with other jobs), results "
        "file rendered with `--write-docs`. multilingual-e5-small (`query: ` prefix). Mean "
        "pooling is `LearnedPooling(max_iter=0)` (equal to the transformer's mean pooling to "
        "1e-5); learned is `LearnedPooling(prompt=\"query: \", random_state=seed)` with its "
        f"defaults{' and ' + str(meta['learned_params']) if meta.get('learned_params') else ''} "
        "(1 head, cross-entropy with a jointly trained softmax head, `max_iter=\"auto\"`: "
        "10 epochs with early stopping on 10% of the training rows where that holds out 50 "
        "rows or more (the full train split), else 50 epochs on every row (few-shot), and 10 "
        "for pairs; `learning_rate=1e-3`, `attention_penalty=0.1`). Both feed the card's head, `LogisticRegression()` with sklearn's "
        "defaults, on the default output (`center=True, normalize=1.25`: each side centred on its training rows). Differences are learned minus mean, "
        "in accuracy points x 100 where marked.", ""]
    full = {r["language"]: r for r in recs if r["part"] == "full"}
    en2x = {r["language"]: r for r in recs if r["part"] == "en2x"}
    langs = list(dict.fromkeys([*full, *en2x]))
    if langs:
        seeds = max(len(r["learned_seeds"]) for r in [*full.values(), *en2x.values()])
        lines += [
            f"### SIB-200, full train split ({len(langs)} languages, up to {seeds} seeds)", "",
            "In-language: train split (701 rows) -> test split (204 rows) of the same language. "
            "English->X: pooling and head trained on the English train split, scored on X's "
            "test split. Learned accuracy is the mean over seeds; the interval is a paired "
            "bootstrap (2000 resamples) over the 204 test rows of (seed-averaged learned "
            "correctness - mean-pooling correctness): it covers test-set sampling, the seed "
            "spread is the `seeds` column.", "",
            "| language | in-lang mean | in-lang learned | diff [95% CI] | seeds | "
            "Eng->X mean | Eng->X learned | diff [95% CI] |",
            "|---|---|---|---|---|---|---|---|"]
        for lang in langs:
            cells = []
            for src, with_seeds in ((full, True), (en2x, False)):
                r = src.get(lang)
                if r is None:
                    cells += ["", "", ""] + ([""] if with_seeds else [])
                    continue
                cells += [f"{r['mean']:.3f}", f"{r['learned']:.3f}", _diff(r)]
                if with_seeds:
                    cells.append(" / ".join(f"{s:.3f}" for s in r["learned_seeds"]))
            lines.append(f"| {lang} | " + " | ".join(cells) + " |")
        lines += ["", "Averages over languages (English->X without English itself); interval: "
                  "95% t-interval over the languages of the per-language difference.", "",
                  "| setting | languages | mean pooling | learned | diff [95% CI] |",
                  "|---|---|---|---|---|"]
        for name, src in (("in-language", full), ("English->X", en2x)):
            rs = [r for lang, r in src.items() if name == "in-language" or lang != "eng_Latn"]
            if not rs:
                continue
            d = np.array([r["learned"] - r["mean"] for r in rs])
            low, high = t_ci(d)
            lines.append(f"| {name} | {len(rs)} | {np.mean([r['mean'] for r in rs]):.3f} | "
                         f"{np.mean([r['learned'] for r in rs]):.3f} | {100 * d.mean():+.1f} "
                         f"[{100 * low:+.1f}, {100 * high:+.1f}] |")
        lines += [""]
        lines += _losers(full, en2x)
        fit_s = [s for r in full.values() for s in r["fit_s"]]
        eps = [e for r in full.values() for e in r["epochs"]]
        if fit_s:
            ran = f"{min(eps)}" if min(eps) == max(eps) else f"{min(eps)}-{max(eps)}"
            lines += ["", f"Cost: a full-train fit ran {ran} epochs (early stopping within "
                      f"`max_iter`) in {np.median(fit_s):.0f} s median ({min(fit_s):.0f}-"
                      f"{max(fit_s):.0f} s) on the token states already in memory; the token "
                      "states of a language's 905 texts took "
                      f"{np.median([r['states_s'] for r in full.values()]):.0f} s median.", ""]
    lines += _card_check(full, en2x)
    few = [r for r in recs if r["part"] == "fewshot"]
    if few:
        ks = sorted({r["k"] for r in few})
        draws = sorted({len(r["mean_draws"]) for r in few})
        lines += [f"### SIB-200, few-shot in-language (k rows per label, "
                  f"{' or '.join(map(str, draws))} draws)", "",
                  "Each draw takes k rows per label from the train split; both sides see the "
                  "same draw. Accuracy mean over draws; interval: 95% t-interval over the draws "
                  "of the paired difference (points x 100)."
                  + (" **Measured with the previous output** (`normalize=2.0, center=False`, "
                     "both sides) and carried over from `"
                     + few[0]["carried_from"] + "`: not rerun since centring became the "
                     "default." if few[0].get("carried_from") else ""), "",
                  "| language | " + " | ".join(f"k={k} mean | k={k} learned | diff [95% CI]"
                                               for k in ks) + " |",
                  "|---|" + "---|---|---|" * len(ks)]
        by = {(r["language"], r["k"]): r for r in few}
        for lang in dict.fromkeys(r["language"] for r in few):
            cells = []
            for k in ks:
                r = by.get((lang, k))
                cells += ["", "", ""] if r is None else [
                    f"{r['mean']:.3f}", f"{r['learned']:.3f}", _diff(r)]
            lines.append(f"| {lang} | " + " | ".join(cells) + " |")
        cells = []
        for k in ks:
            rs = [r for r in few if r["k"] == k]
            d = np.array([r["learned"] - r["mean"] for r in rs])
            low, high = t_ci(d)
            cells += [f"{np.mean([r['mean'] for r in rs]):.3f}",
                      f"{np.mean([r['learned'] for r in rs]):.3f}",
                      f"{100 * d.mean():+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"]
        lines += ["| **mean** (over languages) | " + " | ".join(cells) + " |", ""]
        for k in ks:
            rs = [r for r in few if r["k"] == k]
            lose = [f"{r['language']} ({100 * (r['learned'] - r['mean']):+.1f})" for r in rs
                    if r["learned"] - r["mean"] < -0.01]
            gain = sum(r["learned"] - r["mean"] > 0.01 for r in rs)
            lines.append(f"k={k}: learned pooling gains more than 1 point in {gain} of {len(rs)} "
                         f"languages and loses more than 1 point in "
                         f"{', '.join(lose) if lose else 'none'}.")
        lines.append("")
    sts = [r for r in recs if r["part"] == "sts"]
    if sts:
        carried = (f" (Carried over from `{sts[0]['carried_from']}`: the pair objectives and "
                   "`similarity` use the uncentred pooled vectors, which the output change did "
                   "not touch.)" if sts[0].get("carried_from") else "")
        lines += ["### STS17: trained on one track, Spearman on the other six", "",
                  f"`infonce`: `fit(pairs)` on the training track's pairs with gold >= "
                  f"{POSITIVE:g} (positives; in-batch negatives, temperature 0.05); `cosine`: "
                  "`fit(pairs, scores)` on all 250 pairs with `objective=\"cosine_mse\"` (cosine "
                  "regressed on the gold rescaled to 0-1, the default when this was measured); "
                  "`cosent`: the same pairs with `objective=\"cosent\"` (a ranking loss: only "
                  "the order of the gold scores counts; the default since). "
                  "Columns: mean over the six other tracks of Spearman(cosine, gold) for mean "
                  "pooling and learned pooling; the worst and best per-track difference with "
                  "its paired bootstrap interval over the test track's pairs (1000 resamples)."
                  + carried, "", "| trained on | objective | pairs | epochs | mean pooling | learned | "
                  "diff | worst track diff [95% CI] | best track diff [95% CI] |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sts:
            t = r["tests"]
            m = np.mean([v["mean"] for v in t.values()])
            lrn = np.mean([v["learned"] for v in t.values()])
            diffs = {k: v["learned"] - v["mean"] for k, v in t.items()}
            lo, hi = min(diffs, key=diffs.get), max(diffs, key=diffs.get)

            def cell(k: str, _t: dict = t, _d: dict = diffs) -> str:
                c = _t[k]["ci"]
                return f"{k} {_d[k]:+.3f} [{c[0]:+.3f}, {c[1]:+.3f}]"

            lines.append(f"| {r['train']} | {r['objective']} | {r['pairs']} | {r['epochs']} | "
                         f"{m:.3f} | {lrn:.3f} | {lrn - m:+.3f} | {cell(lo)} | {cell(hi)} |")
        lines.append("")
        for objective in dict.fromkeys(r["objective"] for r in sts):
            rs = [r for r in sts if r["objective"] == objective]
            per = [(k, v["learned"] - v["mean"], v["ci"]) for r in rs
                   for k, v in r["tests"].items()]
            d = np.array([x for _, x, _ in per])
            better = sum(np.mean([v["learned"] - v["mean"] for v in r["tests"].values()]) > 0
                         for r in rs)
            lines.append(
                f"`{objective}`: mean change of Spearman over all {len(per)} (training track, "
                f"test track) cells {d.mean():+.3f}; the average over the other tracks improves "
                f"for {better} of {len(rs)} training tracks; per cell, the interval lies above 0 "
                f"in {sum(c[0] > 0 for _, _, c in per)} and below 0 in "
                f"{sum(c[1] < 0 for _, _, c in per)} of {len(per)}; fits took "
                f"{np.median([r['fit_s'] for r in rs]):.0f} s median.\n")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _diff(r: dict) -> str:
    d = r["learned"] - r["mean"]
    low, high = r["ci"]
    return f"{100 * d:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _card_check(full: dict, en2x: dict) -> list[str]:
    """The card's pipeline (LogisticRegression() on the default output) against
    StandardScaler + LogisticRegression() on the same mean-pooled vectors."""
    rows = {k: r for k, r in full.items() if "tuned_mean" in r}
    if not rows:
        return []
    en = {k: r for k, r in en2x.items() if "tuned_mean" in r}
    out = ["### The card's pipeline against the tuned head, every language measured", "",
           "`LogisticRegression()` at sklearn's defaults on the default output "
           "(`center=True, normalize=1.25`, mean pooling) against `StandardScaler` + `LogisticRegression()` "
           "on the same vectors; the issue asks for a shortfall of at most 2 points "
           "(0.020) in every language. Full train split -> test split; one fit each "
           "(deterministic).", "",
           "| language | card LR() | Scaler+LR | shortfall | within 2 points | Eng->X card | "
           "Eng->X Scaler+LR | Eng->X shortfall |", "|---|---|---|---|---|---|---|---|"]
    short = {}
    for lang, r in rows.items():
        short[lang] = r["tuned_mean"] - r["mean"]
        e = en.get(lang)
        ecells = ["", "", ""] if e is None else [
            f"{e['mean']:.3f}", f"{e['tuned_mean']:.3f}", f"{e['tuned_mean'] - e['mean']:+.3f}"]
        out.append(f"| {lang} | {r['mean']:.3f} | {r['tuned_mean']:.3f} | {short[lang]:+.3f} | "
                   f"{'yes' if short[lang] <= 0.02 + 1e-12 else '**no**'} | "
                   + " | ".join(ecells) + " |")
    fails = [k for k, v in short.items() if v > 0.02 + 1e-12]
    worst = max(short, key=short.get)
    out += ["", f"In-language it holds in {len(short) - len(fails)} of {len(short)} languages"
            + (f"; it fails in {', '.join(fails)}" if fails else "")
            + f" (largest shortfall {short[worst]:+.3f}, {worst}; negative = the card's "
            "pipeline is better).", ""]
    return out


def _losers(full: dict, en2x: dict) -> list[str]:
    out = []
    for name, src in (("In-language", full), ("English->X", en2x)):
        src = {k: r for k, r in src.items() if name == "In-language" or k != "eng_Latn"}
        lose = [f"{lang} ({100 * (r['learned'] - r['mean']):+.1f})" for lang, r in src.items()
                if r["learned"] - r["mean"] < -0.01]
        gain = [lang for lang, r in src.items() if r["ci"][0] > 0]
        loss = [lang for lang, r in src.items() if r["ci"][1] < 0]
        out.append(f"{name}: learned pooling loses more than 1 point in "
                   f"{', '.join(lose) if lose else 'no language'}. Its interval lies above 0 in "
                   f"{len(gain)} of {len(src)} languages" + (f" ({', '.join(gain)})" if gain else "")
                   + f" and below 0 in {len(loss)}" + (f" ({', '.join(loss)})" if loss else "")
                   + ".")
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.write_docs:
        splice_docs(REPO / "docs" / "evaluation-results.md", render(json.loads(args.out.read_text())),
                    START, END)
        return
    if args.model is None:
        raise SystemExit("--model is required to measure")
    run(args)


if __name__ == "__main__":
    main()
