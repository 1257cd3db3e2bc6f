"""Choose ``LearnedPooling``'s training defaults on SIB-200's *dev* split (never its test split).

Per language: token states are computed once (``skmoe.token_states`` memo, shared by every fit
below); mean pooling is ``LearnedPooling(max_iter=0)``. Each setting of the grid
(``max_iter`` x ``attention_penalty`` x ``learning_rate``, other parameters at their defaults)
is fitted on the train split (701 rows) for each seed, and scored like the benchmark
(benchmarks/evaluate_learned_pooling.py): ``LogisticRegression()`` at sklearn's defaults on the
pooled vectors of the train split, accuracy on the dev split (99 rows).

Results go to a JSON file after every (language, setting) (a rerun skips what is there).
``--summary`` prints the per-setting mean dev accuracy minus mean pooling's, over the languages
every setting has, and stops.

Run::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/tune_learned_pooling.py \\
        --model /tmp/skmoe-assets2/me5-small-q4deq --sib200 DATA/sib200 --out /tmp/tune.json \\
        --languages eng_Latn deu_Latn zho_Hans arb_Arab hin_Deva swh_Latn
    python benchmarks/tune_learned_pooling.py --out /tmp/tune.json --summary
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common beside this file
from bench_common import splice_docs  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="multilingual-e5-small folder")
    p.add_argument("--sib200", type=Path, default=None, help="SIB-200 folder (with dev.tsv)")
    p.add_argument("--languages", nargs="+", default=["eng_Latn"])
    p.add_argument("--prompt", default="query: ")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--max-iter", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--attention-penalty", type=float, nargs="+", default=[0.01, 0.1])
    p.add_argument("--learning-rate", type=float, nargs="+", default=[3e-3, 1e-3])
    p.add_argument("--out", type=Path, required=True, help="JSON results (appended, resumable)")
    p.add_argument("--summary", action="store_true", help="summarise --out and stop")
    p.add_argument("--write-docs", nargs=2, type=Path, metavar=("OLD_JSON", "NEW_JSON"),
                   help="render --out (dev grid) and the test-split results of "
                        "evaluate_learned_pooling.py with the old and the new defaults into "
                        "docs/evaluation-results.md, and stop")
    return p.parse_args(argv)


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def run(args: argparse.Namespace) -> None:
    from sklearn.linear_model import LogisticRegression

    from skmoe import LearnedPooling
    from skmoe.datasets import load_sib200

    data = json.loads(args.out.read_text()) if args.out.is_file() else {"records": [], "meta": {}}
    done = {r["key"] for r in data["records"]}
    data["meta"].update({"model": Path(args.model).name, "prompt": args.prompt,
                         "platform": platform.platform(), "cpus": os.cpu_count(),
                         "seeds": args.seeds, "split": "train -> dev"})

    def dev_acc(pool: LearnedPooling, tr, dev) -> float:  # noqa: ANN001
        clf = LogisticRegression().fit(pool.transform(tr.text), tr.category)
        return float((clf.predict(pool.transform(dev.text)) == dev.category.to_numpy()).mean())

    sib = load_sib200(args.sib200, languages=args.languages, splits=("train", "dev"))
    grid = list(itertools.product(args.max_iter, args.attention_penalty, args.learning_rate))
    for lang in args.languages:
        tr = sib[(sib.language == lang) & (sib.split == "train")]
        dev = sib[(sib.language == lang) & (sib.split == "dev")]
        mean = LearnedPooling(str(args.model), prompt=args.prompt, max_iter=0)
        t0 = time.time()
        mean.fit(list(tr.text), list(tr.category)).transform(list(dev.text))  # states, once
        if f"{lang}/mean" not in done:
            rec = {"key": f"{lang}/mean", "language": lang, "setting": "mean",
                   "dev": dev_acc(mean, tr, dev), "states_s": round(time.time() - t0, 1)}
            data["records"].append(rec)
            done.add(rec["key"])
            _save(args.out, data)
            print(json.dumps(rec), flush=True)
        for max_iter, penalty, lr in grid:
            setting = f"max_iter={max_iter},penalty={penalty:g},lr={lr:g}"
            key = f"{lang}/{setting}"
            if key in done:
                continue
            accs, epochs, fit_s = [], [], []
            for seed in args.seeds:
                t = time.time()
                pool = LearnedPooling(str(args.model), prompt=args.prompt, max_iter=max_iter,
                                      attention_penalty=penalty, learning_rate=lr,
                                      random_state=seed).fit(list(tr.text), list(tr.category))
                fit_s.append(round(time.time() - t, 1))
                epochs.append(pool.n_iter_)
                accs.append(dev_acc(pool, tr, dev))
            rec = {"key": key, "language": lang, "setting": setting, "max_iter": max_iter,
                   "attention_penalty": penalty, "learning_rate": lr,
                   "dev": float(np.mean(accs)), "dev_seeds": accs, "epochs": epochs,
                   "fit_s": fit_s}
            data["records"].append(rec)
            done.add(key)
            _save(args.out, data)
            print(json.dumps(rec), flush=True)


def summary(data: dict) -> str:
    """Per setting: mean dev accuracy minus mean pooling's, over the languages all settings have."""
    by: dict[str, dict[str, float]] = {}
    for r in data["records"]:
        by.setdefault(r["setting"], {})[r["language"]] = r["dev"]
    langs = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
    if not langs or "mean" not in by:
        return "no complete language yet"
    base = np.array([by["mean"][lang] for lang in langs])
    lines = [f"languages ({len(langs)}): {' '.join(langs)}; dev rows 99 each",
             f"{'setting':40s} {'dev acc':>8s} {'vs mean':>8s} {'wins':>5s}"]
    rows = []
    for setting, accs in by.items():
        a = np.array([accs[lang] for lang in langs])
        rows.append((float((a - base).mean()), setting, float(a.mean()), int((a > base).sum())))
    for diff, setting, acc, wins in sorted(rows, reverse=True):
        lines.append(f"{setting:40s} {acc:8.4f} {100 * diff:+8.2f} {wins:5d}")
    return "\n".join(lines)


START, END = "<!-- learned-pooling-defaults:start -->", "<!-- learned-pooling-defaults:end -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "evaluation-results.md"


NEW, OLD = "max_iter=10,penalty=0.1,lr=0.001", "max_iter=100,penalty=0.01,lr=0.003"


def dev_diff(dev: dict, setting: str) -> float:
    """Mean over languages of the setting's dev accuracy minus mean pooling's, in points."""
    acc = {(r["language"], r["setting"]): r["dev"] for r in dev["records"]}
    langs = sorted({lang for lang, s in acc if s == setting and (lang, "mean") in acc})
    return float(np.mean([100 * (acc[lang, setting] - acc[lang, "mean"]) for lang in langs]))


def render(dev: dict, old: dict, new: dict) -> str:
    """Markdown: the dev grid, then the test split with the old and the new defaults."""
    from scipy import stats

    def full(d: dict) -> dict[str, dict]:
        return {r["language"]: r for r in d["records"] if r.get("part") == "full"}

    o, n = full(old), full(new)
    langs = [lang for lang in n if lang in o]
    out = [START, "### Defaults chosen on the dev split (issue 15, second round)", "",
           "`python benchmarks/tune_learned_pooling.py` (results: "
           "`benchmarks/learned_pooling_e5_dev_tuning.json`): each setting fitted on the train split "
           f"(seeds {dev['meta'].get('seeds')}), `LogisticRegression()` on top, accuracy on the "
           "**dev** split (99 rows; the test split was not looked at). Differences: points x 100 "
           "against mean pooling on the same dev rows, averaged over the languages; `wins`: "
           "languages where the setting beats mean pooling.", "", "```",
           summary(dev), "```", "",
           "The old defaults (`max_iter=100, attention_penalty=0.01, learning_rate=3e-3`) were "
           "the worst cell of the grid; the closer a setting stays to mean pooling (short "
           "training, stronger KL penalty, smaller step) the better, and none beats mean pooling "
           "on average. The new defaults are the best cell: `max_iter=10, "
           "attention_penalty=0.1, learning_rate=1e-3`. Within 10 or 30 epochs early stopping "
           "never fired in the grid (the held-out cross-entropy of the joint softmax head still "
           "falls while the dev accuracy of the `LogisticRegression()` on top already drops): "
           "the epoch budget, not the stopping rule, is what keeps the pooling near mean "
           "pooling.", "",
           "Test split, in-language full train split, rerun with the new defaults by "
           "`evaluate_learned_pooling.py --parts full --seeds 0` (results: "
           "`benchmarks/learned_pooling_e5_v2.json`), next to the first round's numbers (old "
           "defaults; English averaged 3 seeds there). Interval: paired bootstrap over the 204 "
           "test rows. The grid's languages ("
           + " ".join(sorted({r["language"] for r in dev["records"]}))
           + ") are among them: tuned on their dev rows, measured on their test rows.", "",
           "| language | mean pooling | learned, old defaults | diff | learned, new defaults "
           "| diff [95% CI] |", "|---|---|---|---|---|---|"]
    d_old, d_new = [], []
    for lang in langs:
        a, b = o[lang], n[lang]
        d_old.append(a["learned"] - a["mean"])
        d_new.append(b["learned"] - b["mean"])
        lo, hi = b["ci"]
        out.append(f"| {lang} | {b['mean']:.3f} | {a['learned']:.3f} | {100 * d_old[-1]:+.1f} | "
                   f"{b['learned']:.3f} | {100 * d_new[-1]:+.1f} [{100 * lo:+.1f}, "
                   f"{100 * hi:+.1f}] |")

    def avg(d: list[float]) -> str:
        x = 100 * np.asarray(d)
        if len(x) < 2:
            return f"{x.mean():+.2f}"
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        return f"{x.mean():+.2f} [{x.mean() - half:+.2f}, {x.mean() + half:+.2f}]"

    out += ["", f"Average over these {len(langs)} languages (95% t-interval over languages): old "
            f"defaults {avg(d_old)}, new defaults {avg(d_new)} points; the new defaults beat mean "
            f"pooling in {sum(x > 0 for x in d_new)} and lose in {sum(x < 0 for x in d_new)} "
            f"of them. On the dev split the same setting was {dev_diff(dev, NEW):+.2f} points and "
            f"the old defaults {dev_diff(dev, OLD):+.2f} (99 dev rows per language: one row is "
            "one point, so differences of a point or two between settings are noise; what it "
            "showed clearly is that the old defaults were the worst cell). "
            + _coverage(new, set(o) - set(n))]
    eo, en = ({r["language"]: r for r in d["records"] if r.get("part") == "en2x"}
              for d in (old, new))
    e_langs = [lang for lang in en if lang in eo]
    if e_langs:
        cells = [f"{lang} {100 * (eo[lang]['learned'] - eo[lang]['mean']):+.1f} -> "
                 f"{100 * (en[lang]['learned'] - en[lang]['mean']):+.1f}" for lang in e_langs]
        out += ["", f"English->X rerun with the new defaults ({len(e_langs)} languages, seed 0; "
                "learned minus mean pooling in points, old defaults -> new): "
                + ", ".join(cells) + "; average "
                + avg([eo[x]["learned"] - eo[x]["mean"] for x in e_langs]) + " -> "
                + avg([en[x]["learned"] - en[x]["mean"] for x in e_langs]) + "."]
    out.append(END)
    return "\n".join(out)


def _coverage(new: dict, missing_full: set[str]) -> str:
    """What the new-defaults results file holds (the tables of the section above show it)."""
    recs = new["records"]
    langs = {part: sorted({r["language"] for r in recs if r.get("part") == part})
             for part in ("en2x", "fewshot")}
    sts = sorted({r["train"] for r in recs if r.get("part") == "sts"})
    parts = [f"English->X {len(langs['en2x'])} languages" if langs["en2x"] else "",
             f"few-shot {len(langs['fewshot'])} languages" if langs["fewshot"] else "",
             f"STS17 trained on {len(sts)} tracks" if sts else ""]
    held = ", ".join(x for x in parts if x)
    return ("The section above (\"Learned attention pooling vs mean pooling\") is rendered from "
            "the same results file, all with the new defaults: in-language "
            f"{'all languages' if not missing_full else 'not ' + ' '.join(sorted(missing_full))}"
            + (f", {held}" if held else "") + ".")


def write_docs(dev: dict, old: dict, new: dict) -> None:
    splice_docs(DOCS, render(dev, old, new), START, END, after="<!-- learned-pooling:end -->")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.write_docs:
        old, new = (json.loads(p.read_text()) for p in args.write_docs)
        write_docs(json.loads(args.out.read_text()), old, new)
        return
    if args.summary:
        print(summary(json.loads(args.out.read_text())))
        return
    if args.model is None or args.sib200 is None:
        raise SystemExit("--model and --sib200 are required (or --summary)")
    run(args)
    print(summary(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()
