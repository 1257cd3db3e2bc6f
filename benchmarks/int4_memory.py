"""Peak RSS, in this fresh process, of loading a checkpoint in MODE and embedding N SIB-200 texts.

Usage: python benchmarks/int4_memory.py MODE MODEL_FOLDER N SIB200_DIR [OUT.npy]
(docs/performance.md, "int4 on CPU"; the full-size random checkpoint is what bench_engine.py builds).
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import torch
from bench_common import reset_peak_rss, sib200_corpus, vm_hwm_mb

from skmoe.embedding import Embedder
from skmoe.encoder import load_encoder
from skmoe.engine.precision import apply_precision


def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
mode, folder, n, sib = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(2)
texts = sib200_corpus(sib, n)
t = time.time()
enc = load_encoder(folder, device="cpu", dtype="float32")
loaded = vm_hwm_mb()
if mode != "float32":
    apply_precision(enc, mode)
load_s = time.time() - t
after_conv = vm_hwm_mb()
rss_conv = rss_mb()
reset_peak_rss()
t = time.time()
v = Embedder.for_encoder(enc, "search_query: ").embed(texts)
if len(sys.argv) > 5:
    np.save(sys.argv[5], v)
print(json.dumps({"mode": mode, "load+convert_s": round(load_s, 1), "embed_s": round(time.time() - t, 1),
                  "peak_load_mb": round(loaded), "peak_convert_mb": round(after_conv),
                  "rss_after_convert_mb": round(rss_conv), "peak_embed_mb": round(vm_hwm_mb())}))
