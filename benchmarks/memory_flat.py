"""Peak RSS of streaming N texts to disk as users do: does memory stay flat as N grows?

Each size runs in a fresh subprocess (peak RSS is per process) that embeds N distinct SIB-200
sentences (all 32 languages, train+dev+test: up to 32,128 distinct texts) through what
``skmoe embed`` runs: ``MoEEmbeddingTransformer(cache=...).embed_to`` (the road in
``skmoe.embedding``: cache lookup and writes, chunks, ``.npy`` through a memory map), or with
``--path transform`` through what a pipeline runs (one ``transform`` call with a cache), and
reports ``ru_maxrss``. A small model keeps this
cheap: the random-weight MoE with the real 250,048-row vocabulary and the XLM-R tokenizer
(the full model would take hours on 2 cores; memory per text does not depend on its width).

    python benchmarks/memory_flat.py --model PATH --sib200 SIB200 --sizes 2000 20000

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


def corpus(sib200_dir: Path, n: int) -> list[str]:
    """``n`` distinct sentences, languages interleaved (all 32 appear in any prefix of 32)."""
    per_lang = []
    for folder in sorted(p for p in sib200_dir.iterdir() if p.is_dir()):
        texts = []
        for split in ("train", "dev", "test"):
            with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as fh:
                texts += [r["text"] for r in csv.DictReader(fh, delimiter="\t")]
        per_lang.append(texts)
    mixed = list(dict.fromkeys(t for group in zip(*per_lang, strict=False) for t in group))
    if n > len(mixed):
        raise SystemExit(f"only {len(mixed)} distinct texts available, asked for {n}")
    return mixed[:n]


def worker(model: str, sib200_dir: Path, n: int, chunk_size: int, threads: int,
           path: str = "embed") -> dict:
    import torch

    from skmoe.engine.memory import peak_rss_bytes
    from skmoe.estimator import MoEEmbeddingTransformer

    torch.set_num_threads(threads)
    texts = corpus(sib200_dir, n)
    with tempfile.TemporaryDirectory() as tmp:
        est = MoEEmbeddingTransformer(model, device="cpu", cache=str(Path(tmp) / "cache.sqlite"),
                                      verbose=0).fit(texts[:1])
        t0 = time.perf_counter()
        if path == "embed":  # what `skmoe embed` runs: chunks streamed into a .npy memmap
            out = Path(tmp) / "vectors.npy"
            est.embed_to(texts, out, chunk_size=chunk_size)
            size = out.stat().st_size
        else:  # what a pipeline runs: one transform call holding the result in memory
            size = est.transform(texts).nbytes
        misses = est.cache_stats().misses
    return {"texts": n, "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
            "seconds": round(time.perf_counter() - t0, 1), "npy_bytes": size,
            "computed": misses, "chunk_size": chunk_size, "path": path}


def measure(model: str, sizes: list[int], sib200_dir: Path, chunk_size: int = 2048,
            threads: int = 2, path: str = "embed") -> list[dict]:
    """Run one subprocess per size; return their reports."""
    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--worker", "--model", str(model), "--sizes", str(n),
               "--sib200", str(sib200_dir), "--chunk-size", str(chunk_size),
               "--threads", str(threads), "--path", path]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder (with tokenizer)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--sib200", type=Path, required=True,
                    help="the full SIB-200 data/annotated folder (github.com/dadelani/sib-200); tests/data/sib200 is only a sample")
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", choices=("embed", "transform"), default="embed",
                    help="embed: MoEEmbeddingTransformer.embed_to a .npy (skmoe embed); transform: "
                         "one transform call with a cache (a pipeline)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.sib200, args.sizes[0], args.chunk_size,
                                args.threads, args.path)))
        return
    results = measure(args.model, args.sizes, args.sib200, args.chunk_size, args.threads,
                      args.path)
    for r in results:
        print(json.dumps(r))
    peaks = [r["peak_rss_mb"] for r in results]
    print(f"peak RSS {peaks[-1]:.0f} MB after {args.sizes[-1]} texts vs {peaks[0]:.0f} MB after "
          f"{args.sizes[0]}: ratio {peaks[-1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
