"""Peak RSS of a fresh process embedding N texts with the full-size model, per precision mode.

Each mode runs in its own fresh process (peak RSS is per process): import skmoe, build
``MoEEmbeddingTransformer(model, dtype=...)`` without a cache, ``fit_transform`` N SIB-200
sentences (all 32 languages), report ``ru_maxrss`` and the peak after loading. Modes:

- ``float32``, ``bfloat16``, ``int8``, ``int4``: the float checkpoint, converted at load;
- ``int8-folder``, ``int4-folder``: the pre-quantized folders ``skmoe quantize`` writes (built
  here once, timed, with their own peak).

The full-size checkpoint has random weights (speed and memory do not depend on their values),
built once from tests/data/nomic-moe-config with the XLM-R tokenizer (``--model`` reuses one).

    python benchmarks/quantized_memory.py --workdir /tmp/qmem --sib200 SIB200 [--n 64]

Prints one JSON line per mode and a Markdown table; "weights" is what the mode keeps: the float
file (fp32), half of it (bf16), the quantized folder's file (int8/int4; the int4 word-embedding
rows are read from the mapped file as texts need them).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("float32", "bfloat16", "int8", "int4", "int8-folder", "int4-folder")


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(model: str, dtype: str | None, sib200: Path, n: int, threads: int,
           path: str) -> dict:
    t0 = time.perf_counter()
    import torch

    sys.path.insert(0, str(HERE))
    from bench_common import PROMPT, sib200_corpus

    torch.set_num_threads(threads)
    texts = sib200_corpus(sib200, n)
    if path == "estimator":  # what a pipeline runs (imports scikit-learn: ~135 MB more)
        from skmoe.estimator import MoEEmbeddingTransformer

        imported = _vm_hwm_mb()
        est = MoEEmbeddingTransformer(model, device="cpu", dtype=dtype, cache=None, verbose=0)
        t1 = time.perf_counter()
        enc = est.get_encoder()
        loaded = _vm_hwm_mb()
        t2 = time.perf_counter()
        vectors = est.fit_transform(texts)
    else:  # the engine alone, as the registry loads it (benchmarks/int4_memory.py did this)
        from skmoe import load_encoder
        from skmoe.engine import Engine, apply_precision

        imported = _vm_hwm_mb()
        t1 = time.perf_counter()
        if dtype is None:  # a pre-quantized folder, as it is
            enc = load_encoder(model, device="cpu")
        else:
            enc = apply_precision(load_encoder(model, device="cpu", dtype="float32"), dtype)
        loaded = _vm_hwm_mb()
        t2 = time.perf_counter()
        vectors = Engine(enc).embed(texts, PROMPT)
    t3 = time.perf_counter()
    return {"precision": enc.precision, "texts": len(vectors), "import_mb": round(imported),
            "peak_after_load_mb": round(loaded),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "import_s": round(t1 - t0, 1), "load_s": round(t2 - t1, 1),
            "embed_s": round(t3 - t2, 1)}


def quantize(fp32: Path, out: Path, dtype: str) -> dict:
    """Run ``skmoe quantize`` in a fresh process (once), timing it and its peak."""
    if (out / "config.json").is_file():
        return {"mode": f"quantize {dtype}", "reused": str(out)}
    code = ("import resource, sys; from skmoe.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024); sys.exit(rc)")
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "quantize", str(fp32), "--dtype", dtype,
                           "-o", str(out)], capture_output=True, text=True, check=True)
    return {"mode": f"skmoe quantize --dtype {dtype}", "seconds": round(time.perf_counter() - t),
            "ru_maxrss_mb": int(done.stdout.split()[-1])}


def weights_mb(mode: str, fp32: Path, folders: dict[str, Path]) -> float:
    size = (fp32 / "model.safetensors").stat().st_size / 2**20
    if mode == "float32":
        return size
    if mode == "bfloat16":
        return size / 2
    base = mode.removesuffix("-folder")
    return (folders[base] / "model.safetensors").stat().st_size / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--sib200", type=Path, required=True, help="SIB-200 folder (per language)")
    ap.add_argument("--model", type=Path, help="full-size fp32 folder (default: build one)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", choices=("engine", "estimator"), default="engine",
                    help="engine: skmoe.load_encoder + Engine.embed; estimator: "
                         "MoEEmbeddingTransformer.fit_transform (imports scikit-learn)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        model, dtype = args.worker
        print(json.dumps(worker(model, None if dtype == "auto" else dtype, args.sib200, args.n,
                                args.threads, args.path)))
        return 0
    fp32 = args.model
    if fp32 is None:
        sys.path.insert(0, str(HERE))
        from bench_common import build_random_checkpoint
        from bench_engine import build_test_assets

        data = HERE.parent / "tests" / "data"
        tok = build_test_assets(args.workdir / "assets", model=False) / "xlmr-tokenizer"
        fp32 = build_random_checkpoint(data / "nomic-moe-config" / "config.json",
                                       args.workdir / "nomic-moe-full", data / "nomic-moe-tiny",
                                       tok)
    folders = {m: args.workdir / f"full-{m}" for m in ("int8", "int4")}
    for m, out in folders.items():
        if f"{m}-folder" in args.modes:
            print(json.dumps(quantize(fp32, out, m)), flush=True)
    rows = []
    for mode in args.modes:
        model, dtype = (str(folders[mode[:4]]), "auto") if mode.endswith("-folder") else (
            str(fp32), mode)
        done = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir),
                               "--sib200", str(args.sib200), "--n", str(args.n), "--threads",
                               str(args.threads), "--path", args.path, "--worker", model, dtype],
                              capture_output=True, text=True)
        if done.returncode:
            print(json.dumps({"mode": mode, "error": done.stderr.strip().splitlines()[-1:]}))
            continue
        row = {"mode": mode, "path": args.path, "weights_mb": round(weights_mb(mode, fp32, folders)),
               **json.loads(done.stdout.strip().splitlines()[-1])}
        row["peak_minus_weights_mb"] = row["ru_maxrss_mb"] - row["weights_mb"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| mode | weights MB | peak RSS MB (ru_maxrss) | peak - weights | after load | "
          "load s | embed s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['weights_mb']:,} | {r['ru_maxrss_mb']:,} | "
              f"{r['peak_minus_weights_mb']:,} | {r['peak_after_load_mb']:,} | {r['load_s']} | "
              f"{r['embed_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
