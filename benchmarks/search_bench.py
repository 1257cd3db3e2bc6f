"""Time and peak memory of ``skmoe.search.search_vectors`` (exact, numpy, blocked).

Random float32 vectors (standard normal), cosine scoring, top 10. The peak is what the search
itself allocates (``tracemalloc``, which sees numpy's buffers), not counting the inputs; the full
``[queries, corpus]`` float32 score matrix is printed for comparison. Optionally times
``pynndescent`` (already installed as a UMAP dependency) on a corpus subset, to see whether an
approximate index would pay.

Run::

    python benchmarks/search_bench.py --corpus 1000000 --queries 1000 --dim 768
    python benchmarks/search_bench.py --corpus 1000000 --nndescent 100000
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from skmoe.search import CORPUS_BLOCK, QUERY_BLOCK, search_vectors


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--query-block", type=int, default=QUERY_BLOCK)
    p.add_argument("--corpus-block", type=int, default=CORPUS_BLOCK)
    p.add_argument("--nndescent", type=int, default=0,
                   help="also build a pynndescent index on this many corpus rows and time it")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    corpus = rng.standard_normal((args.corpus, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    print(f"data: {args.queries} x {args.corpus} x {args.dim} float32 "
          f"({corpus.nbytes / 2**30:.2f} GiB corpus), made in {time.perf_counter() - t:.1f} s")
    tracemalloc.start()
    t = time.perf_counter()
    idx, _ = search_vectors(queries, corpus, args.top_k, query_block=args.query_block,
                            corpus_block=args.corpus_block)
    took = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full = args.queries * args.corpus * 4
    print(f"search_vectors top {args.top_k}, blocks {args.query_block} x {args.corpus_block}: "
          f"{took:.1f} s ({1000 * took / args.queries:.1f} ms/query), peak allocated by the "
          f"search {peak / 2**20:.0f} MiB (full score matrix would be {full / 2**30:.2f} GiB); "
          f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if args.nndescent:
        from pynndescent import NNDescent

        sub = corpus[: args.nndescent]
        t = time.perf_counter()
        index = NNDescent(sub, metric="cosine", n_neighbors=15, random_state=0, n_jobs=-1)
        index.prepare()
        build = time.perf_counter() - t
        t = time.perf_counter()
        approx, _ = index.query(queries, k=args.top_k)
        query = time.perf_counter() - t
        exact, _ = search_vectors(queries, sub, args.top_k)
        recall = np.mean([len(set(a) & set(e)) / args.top_k for a, e in zip(approx, exact, strict=True)])
        print(f"pynndescent on {args.nndescent} rows: build {build:.1f} s, {args.queries} "
              f"queries {query:.1f} s, recall@{args.top_k} {recall:.3f} vs exact")
    assert idx.shape == (args.queries, min(args.top_k, args.corpus))


if __name__ == "__main__":
    main()
