"""SIB-200 LogisticRegression accuracy and cosine to fp32, fp32 vs int8 vs int4 (train -> test per
language) for a dense e5-style model ("query: " prompt).

Usage: python benchmarks/int4_sib200.py MODEL_FOLDER SIB200_DIR (the full data/annotated folder)
"""
import csv
import json
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from skmoe.embedding import Embedder
from skmoe.encoder import load_encoder
from skmoe.engine.precision import apply_precision

torch.set_num_threads(2)
root = sys.argv[2]
langs = ["eng_Latn", "deu_Latn", "arb_Arab", "hin_Deva", "zho_Hans", "swh_Latn"]
def read(lang, split):
    with open(f"{root}/{lang}/{split}.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r["text"] for r in rows], [r["category"] for r in rows]
data = {lang: (read(lang, "train"), read(lang, "test")) for lang in langs}
texts = [t for lang in langs for s in data[lang] for t in s[0]]
model = sys.argv[1]
vecs = {}
for mode in ["float32", "int8", "int4"]:
    enc = load_encoder(model, device="cpu", dtype="float32")
    if mode != "float32":
        apply_precision(enc, mode)
    t = time.time()
    vecs[mode] = Embedder.for_encoder(enc, "query: ").embed(texts)
    print(mode, f"{len(texts)} texts in {time.time() - t:.0f}s", flush=True)
    del enc
out = {}
for mode, V in vecs.items():
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    c = (V * (vecs["float32"] / np.linalg.norm(vecs["float32"], axis=1, keepdims=True))).sum(1)
    i, accs = 0, {}
    for lang in langs:
        (tr, ytr), (te, yte) = data[lang]
        Xtr, Xte = V[i:i + len(tr)], V[i + len(tr):i + len(tr) + len(te)]
        i += len(tr) + len(te)
        clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
        accs[lang] = round(100 * clf.score(Xte, yte), 2)
    out[mode] = {"cos_mean": round(float(c.mean()), 5), "cos_min": round(float(c.min()), 5),
                 "acc": accs, "acc_mean": round(float(np.mean(list(accs.values()))), 2)}
    print(mode, json.dumps(out[mode]), flush=True)
