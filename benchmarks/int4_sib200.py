"""SIB-200 LogisticRegression accuracy and cosine to fp32, fp32 vs int8 vs int4 (train -> test per
language) for a dense e5-style model ("query: " prompt).

Usage: python benchmarks/int4_sib200.py MODEL_FOLDER SIB200_DIR [--modes float32 int8 int4 int4-rtn]
       [--vectors DIR] [--threads 2]

SIB200_DIR is the full data/annotated folder. Modes: ``int4`` is the default int4 (``mse``
rounding), ``int4-rtn`` the min/max rounding it replaced. ``--vectors DIR`` keeps each mode's
vectors there (one .npy per model and mode) and reuses them on the next run. Besides accuracy,
each mode prints ``lost``/``gained``: test texts fp32 classifies right and this mode wrong, and
the reverse (a paired view of the accuracy difference; one text = 0.49 points of a language).
"""
import argparse
import csv
import hashlib
import json
import os
import time

import numpy as np
import torch
from bench_common import cpu_description
from sklearn.linear_model import LogisticRegression

from skmoe.embedding import Embedder
from skmoe.encoder import load_encoder
from skmoe.engine.precision import apply_precision

MODES = {"float32": {}, "int8": {"precision": "int8"}, "int4": {"precision": "int4"},
         "int4-rtn": {"precision": "int4", "rounding": "rtn"}}
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("model")
parser.add_argument("sib200")
parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["float32", "int8", "int4"])
parser.add_argument("--vectors", help="folder keeping each mode's vectors between runs")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
root = args.sib200
langs = ["eng_Latn", "deu_Latn", "arb_Arab", "hin_Deva", "zho_Hans", "swh_Latn"]
def read(lang, split):
    with open(f"{root}/{lang}/{split}.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r["text"] for r in rows], [r["category"] for r in rows]
data = {lang: (read(lang, "train"), read(lang, "test")) for lang in langs}
texts = [t for lang in langs for s in data[lang] for t in s[0]]
model = args.model
print("cpu:", cpu_description(), f"| {args.threads} threads", flush=True)
key = hashlib.sha256(os.path.abspath(model).encode()).hexdigest()[:12]
modes = ["float32"] + [m for m in args.modes if m != "float32"]
vecs = {}
for mode in modes:
    path = args.vectors and os.path.join(args.vectors, f"{key}-{mode}.npy")
    if path and os.path.exists(path):
        vecs[mode] = np.load(path)
        print(mode, "vectors from", path, flush=True)
        continue
    enc = load_encoder(model, device="cpu", dtype="float32")
    if MODES[mode]:
        apply_precision(enc, **MODES[mode])
    t = time.time()
    vecs[mode] = Embedder.for_encoder(enc, "query: ").embed(texts)
    print(mode, f"{len(texts)} texts in {time.time() - t:.0f}s", flush=True)
    if path:
        os.makedirs(args.vectors, exist_ok=True)
        np.save(path, vecs[mode])
    del enc
out, right = {}, {}
for mode in modes:
    V = vecs[mode] / np.linalg.norm(vecs[mode], axis=1, keepdims=True)
    c = (V * (vecs["float32"] / np.linalg.norm(vecs["float32"], axis=1, keepdims=True))).sum(1)
    i, accs, ok = 0, {}, []
    for lang in langs:
        (tr, ytr), (te, yte) = data[lang]
        Xtr, Xte = V[i:i + len(tr)], V[i + len(tr):i + len(tr) + len(te)]
        i += len(tr) + len(te)
        clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
        ok.append(clf.predict(Xte) == np.asarray(yte))
        accs[lang] = round(100 * float(ok[-1].mean()), 2)
    right[mode] = np.concatenate(ok)
    out[mode] = {"cos_mean": round(float(c.mean()), 5), "cos_min": round(float(c.min()), 5),
                 "acc": accs, "acc_mean": round(float(np.mean(list(accs.values()))), 2),
                 "lost": int((right["float32"] & ~right[mode]).sum()),
                 "gained": int((~right["float32"] & right[mode]).sum())}
    print(mode, json.dumps(out[mode]), flush=True)
