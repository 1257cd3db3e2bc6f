"""Peak RSS of embedding long documents with ``long_text="chunk"``: does memory stay flat?

Each size runs in a fresh subprocess (peak RSS is per process) that builds N distinct documents
of ``--chars`` characters (SIB-200 sentences of all languages in the given folder, each
document starting at another sentence) and streams them to a ``.npy`` file as ``skmoe embed
--long-text chunk`` does: ``MoEEmbeddingTransformer(long_text="chunk").embed_to`` (the road in
``skmoe.embedding``; the engine tokenizes and plans windows in groups of
``skmoe.engine.windows.GROUP_TOKENS`` tokens). A small model keeps this cheap: memory per
window does not depend on the model's width. The corpus itself (N x chars characters of Python
strings, which the caller holds anyway) is built before the baseline is read, and the report
gives the peak above that baseline too.

    python benchmarks/memory_long_text.py --model PATH --sib200 tests/data/sib200 \\
        --sizes 1000 3000 --chars 20000

Prints one JSON line per size and the ratio of the largest to the smallest peak.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def documents(sib200_dir: Path, n: int, chars: int) -> list[str]:
    """``n`` distinct documents of about ``chars`` characters."""
    sentences: list[str] = []
    for folder in sorted(p for p in sib200_dir.iterdir() if p.is_dir()):
        for split in ("train", "dev", "test"):
            with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as fh:
                sentences += [r["text"] for r in csv.DictReader(fh, delimiter="\t")]
    docs = []
    for i in range(n):
        parts, size, k = [f"Document {i}."], 0, (i * 37) % len(sentences)
        while size < chars:
            parts.append(sentences[k % len(sentences)])
            size += len(parts[-1]) + 1
            k += 1
        docs.append(" ".join(parts)[:chars])
    return docs


def worker(model: str, sib200_dir: Path, n: int, chars: int, max_length: int,
           threads: int, group_tokens: int | None = None) -> dict:
    import torch

    import skmoe.engine.windows as windows
    from skmoe.engine.memory import peak_rss_bytes
    from skmoe.estimator import MoEEmbeddingTransformer

    torch.set_num_threads(threads)
    if group_tokens:  # smaller groups show the bound on a corpus small enough for 2 cores
        windows.GROUP_TOKENS = group_tokens
    est = MoEEmbeddingTransformer(model, device="cpu", max_length=max_length,
                                  long_text="chunk", verbose=0).fit(["warm up"])
    est.transform(["warm up " * 400])  # load everything a run loads before the baseline
    docs = documents(sib200_dir, n, chars)
    baseline = peak_rss_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        est.embed_to(docs, Path(tmp) / "vectors.npy")
        seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    return {"documents": n, "chars": chars, "max_length": max_length,
            "group_tokens": windows.GROUP_TOKENS,
            "peak_rss_mb": round(peak / 2**20, 1),
            "above_baseline_mb": round((peak - baseline) / 2**20, 1),
            "corpus_mb": round(sum(len(d) for d in docs) / 2**20, 1),
            "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder (with tokenizer)")
    ap.add_argument("--sib200", type=Path, required=True,
                    help="a SIB-200 folder (tests/data/sib200 will do: sentences are reused)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--group-tokens", type=int,
                    help="window tokens per group (default: skmoe.engine.windows.GROUP_TOKENS)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.sib200, args.sizes[0], args.chars,
                                args.max_length, args.threads, args.group_tokens)))
        return
    results = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--worker", "--model", str(args.model), "--sizes", str(n),
               "--sib200", str(args.sib200), "--chars", str(args.chars),
               "--max-length", str(args.max_length), "--threads", str(args.threads)]
        if args.group_tokens:
            cmd += ["--group-tokens", str(args.group_tokens)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    peaks = [r["peak_rss_mb"] for r in results]
    print(f"peak RSS {peaks[-1]:.0f} MB after {args.sizes[-1]} documents vs {peaks[0]:.0f} MB "
          f"after {args.sizes[0]}: ratio {peaks[-1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
