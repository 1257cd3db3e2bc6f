"""Throughput of ``skmoe.distributed.embed_dask`` with 1 vs 2 Dask workers on one machine.

Each configuration starts a ``LocalCluster`` of worker processes (1 thread each; Dask's nanny
sets ``OMP_NUM_THREADS=1`` in them, so torch uses one core per worker), preloads the model in
every worker with :class:`skmoe.distributed.PreloadEncoder` (load time is not counted), then
times ``embed_dask(...).compute()`` on the same texts, without a cache. A single-process
``transform`` (torch's default thread count) is timed too, for reference.

Example::

    python benchmarks/bench_dask.py --model /path/to/me5-small-q4deq --prompt "query: " \
        --sib200 PATH/sib-200/data/annotated --n-texts 2000 --workers 1 2 --repeats 2

Texts: SIB-200 sentences (English, then Spanish, ... until ``--n-texts``) from ``--sib200``
(the full data set's ``data/annotated`` folder, required; ``tests/data/sib200`` is a sample).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

LANGS = ("eng_Latn", "spa_Latn", "fra_Latn", "deu_Latn")


def load_texts(sib200: Path, n: int) -> list[str]:
    texts: list[str] = []
    for lang in LANGS:
        for split in ("train", "dev", "test"):
            with open(sib200 / lang / f"{split}.tsv", encoding="utf-8", newline="") as fh:
                texts.extend(r["text"] for r in csv.DictReader(fh, delimiter="\t"))
        if len(texts) >= n:
            break
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} texts available, asked for {n}")
    return texts[:n]


def time_single_process(transformer, texts: list[str], repeats: int) -> list[float]:
    import torch

    transformer.transform(texts[:32])  # load + warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        transformer.transform(texts)
        out.append(time.perf_counter() - t0)
    print(f"single process ({torch.get_num_threads()} torch threads): "
          f"{[round(len(texts) / s, 1) for s in out]} texts/s", flush=True)
    return out


def time_cluster(transformer, texts: list[str], n_workers: int, npartitions: int,
                 repeats: int) -> tuple[list[float], dict]:
    import dask.bag as db
    from distributed import Client, LocalCluster

    from skmoe.distributed import PreloadEncoder, embed_dask, worker_load_counts

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(PreloadEncoder(transformer))
        bag = db.from_sequence(texts, npartitions=npartitions)
        embed_dask(db.from_sequence(texts[:64], npartitions=n_workers), transformer).compute()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            arr = embed_dask(bag, transformer).compute()
            out.append(time.perf_counter() - t0)
            assert arr.shape[0] == len(texts)
        loads = worker_load_counts(client)
        threads = client.run(lambda: __import__("torch").get_num_threads())
    print(f"{n_workers} worker(s): {[round(len(texts) / s, 1) for s in out]} texts/s, "
          f"model loads per worker {sorted(loads.values())}, torch threads {sorted(threads.values())}",
          flush=True)
    return out, {"loads": sorted(loads.values()), "torch_threads": sorted(threads.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--prompt", default=None, help="raw prompt prefix (e5: 'query: ')")
    parser.add_argument("--n-texts", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--npartitions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sib200", type=Path, required=True,
                        help="the full SIB-200 data/annotated folder (tests/data/sib200 is a sample)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    from skmoe.estimator import MoEEmbeddingTransformer

    texts = load_texts(args.sib200, args.n_texts)
    transformer = MoEEmbeddingTransformer(args.model, prompt=args.prompt).fit(texts[:1])
    load_before = os.getloadavg()
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "model": str(args.model), "n_texts": len(texts), "npartitions": args.npartitions,
        "loadavg_before": [round(x, 2) for x in load_before],
    }
    single = time_single_process(transformer, texts, args.repeats)
    result["single_process_texts_per_s"] = round(len(texts) / min(single), 1)
    for n in args.workers:
        secs, info = time_cluster(transformer, texts, n, args.npartitions, args.repeats)
        result[f"workers_{n}"] = {
            "texts_per_s_best": round(len(texts) / min(secs), 1),
            "texts_per_s_median": round(len(texts) / statistics.median(secs), 1),
            **info,
        }
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
