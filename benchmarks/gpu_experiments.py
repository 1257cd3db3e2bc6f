"""GPU experiments for the next speed steps, one device call: what the road and the kernels
would gain from each candidate change, each against a baseline measured in the same run.

* **the road** (texts -> vectors, bf16, tokenizing included, prefetch on): each variant in a
  fresh subprocess (``RAYON_NUM_THREADS`` is read once per process): the default; chunks of
  32,768 texts instead of 8,192; the tokenizer's pool at 12 and 8 threads; tokenizing slices of
  2,048 texts instead of 256; and the serial order (prefetch off) for reference;
* **the forward** (pre-tokenized ids, bf16): eager as it is; the in-place rotary compiled on its
  own (``torch.compile`` of ``apply_rotary_pairs_``: what one fused rotary kernel would gain);
  ``compile_layers`` in torch's default mode and in ``max-autotune-no-cudagraphs``;
* **batch invariance** (a text alone vs inside a batch of 256) as it is, with cuBLAS's
  reduced-precision bf16 reductions switched off, and with the dense projections in fp32.

Usage (the tokenizer folder as for ``gpu_bench.py``)::

    python benchmarks/gpu_experiments.py --out $OUT [--texts 32768] [--device cuda]
    python benchmarks/gpu_experiments.py --dry-run --device cpu    # checks the script (~8 min:
                                                                   # compiling on a CPU is slow)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import PROMPT, build_random_checkpoint, encoder_in, forward_ids  # noqa: E402
from gpu_bench import TINY_CONFIG, Clock, batch_invariance, sample_by_language  # noqa: E402

from skmoe.encoder import tokenization  # noqa: E402
from skmoe.engine import Engine  # noqa: E402

ROAD_VARIANTS = {  # name: (environment, chunk, tokenize slice, prefetch)
    "default (chunks 8192, slices 256, all threads)": ({}, 8192, 256, True),
    "serial (prefetch off)": ({}, 8192, 256, False),
    "chunks of 32768": ({}, 32768, 256, True),
    "tokenizer slices of 2048": ({}, 8192, 2048, True),
    "RAYON_NUM_THREADS=12": ({"RAYON_NUM_THREADS": "12"}, 8192, 256, True),
    "RAYON_NUM_THREADS=8": ({"RAYON_NUM_THREADS": "8"}, 8192, 256, True),
}


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def road_child(args: argparse.Namespace) -> None:
    """One road variant (this process's environment is the variant's): prints one JSON line."""
    texts = json.loads(Path(args.texts_file).read_text())
    tokenization.TOKENIZE_SLICE = args.slice
    enc = encoder_in(Path(args.folder), args.device)
    chunks = [texts[i : i + args.chunk] for i in range(0, len(texts), args.chunk)]

    def run() -> None:
        engine = Engine(enc)
        for _ in engine.iter_embed_chunks(chunks, PROMPT, prefetch=args.prefetch):
            pass

    sec = Clock(args.device).median(run, args.repeats)[0]
    print(json.dumps({"texts_per_s": len(texts) / sec, "seconds": sec}))


def road_rows(folder: Path, texts: list[str], device: str, repeats: int, work: Path) -> list[str]:
    texts_file = work / "road_texts.json"
    texts_file.write_text(json.dumps(texts))
    rows = []
    for name, (env, chunk, slice_, prefetch) in ROAD_VARIANTS.items():
        cmd = [sys.executable, __file__, "--road-child", "--folder", str(folder), "--texts-file",
               str(texts_file), "--chunk", str(chunk), "--slice", str(slice_), "--device", device,
               "--repeats", str(repeats)] + (["--prefetch"] if prefetch else [])
        done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=240)
        if done.returncode != 0:
            rows.append(f"| {name} | FAILED: {done.stderr.strip().splitlines()[-1:]} |")
        else:
            got = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(f"| {name} | {got['texts_per_s']:,.0f} |")
        log(rows[-1])
    return [f"Texts -> vectors, bf16, tokenizing included, {len(texts)} texts, median of "
            f"{repeats} after a warm-up, each variant in a fresh process:", "",
            "| variant | texts/s |", "|---|---|", *rows, ""]


def forward_rows(folder: Path, ids: list[list[int]], device: str, repeats: int) -> list[str]:
    from skmoe.encoder import nomic_moe

    enc = encoder_in(folder, device)
    engine = Engine(enc)
    lines = [f"Forward alone, bf16, {len(ids)} pre-tokenized texts, median of {repeats}:", "",
             "| variant | texts/s | max-abs vs eager |", "|---|---|---|"]
    eager = forward_ids(engine, ids)
    sec = Clock(device).median(lambda: forward_ids(engine, ids), repeats)[0]
    lines.append(f"| eager (as it is) | {len(ids) / sec:,.0f} | 0 |")
    log(lines[-1])
    original = nomic_moe.apply_rotary_pairs_
    try:
        nomic_moe.apply_rotary_pairs_ = torch.compile(original, dynamic=True)
        start = time.perf_counter()
        out = forward_ids(engine, ids[:256])
        first = time.perf_counter() - start
        out = forward_ids(engine, ids)
        sec = Clock(device).median(lambda: forward_ids(engine, ids), repeats)[0]
        lines.append(f"| rotary compiled alone (first pass {first:.1f} s) | {len(ids) / sec:,.0f} "
                     f"| {float(np.abs(out - eager).max()):.3g} |")
    except Exception as exc:  # noqa: BLE001 - a finding
        lines.append(f"| rotary compiled alone | FAILED: {type(exc).__name__}: {exc} | |")
    finally:
        nomic_moe.apply_rotary_pairs_ = original
    log(lines[-1])
    lines += compiled_rows(folder, ids, device, repeats, eager)
    lines.append("")
    for reduced in (True, False):
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = reduced
        worst, equal = batch_invariance(engine, ids[:256])
        lines.append(f"Batch invariance (bf16, allow_bf16_reduced_precision_reduction={reduced}): "
                     f"max-abs {worst:.3g}, {equal} of 32 bitwise equal")
        log(lines[-1])
    with fp32_projections():
        worst, equal = batch_invariance(engine, ids[:256])
    lines.append(f"Batch invariance (bf16, the nn.Linear projections computed in fp32): max-abs "
                 f"{worst:.3g}, {equal} of 32 bitwise equal (equal rows here point at the bf16 "
                 "GEMMs' kernel choice by row count)")
    log(lines[-1])
    return lines


class fp32_projections:  # noqa: N801 - used as a context manager
    """Every ``nn.Linear`` in fp32 (inputs and weights upcast, output back to the input dtype)."""

    def __enter__(self) -> None:
        self.original = torch.nn.Linear.forward

        def forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
            bias = None if module.bias is None else module.bias.float()
            return torch.nn.functional.linear(x.float(), module.weight.float(), bias).to(x.dtype)

        torch.nn.Linear.forward = forward

    def __exit__(self, *exc: object) -> None:
        torch.nn.Linear.forward = self.original


def compiled_rows(folder: Path, ids: list[list[int]], device: str, repeats: int,
                  eager: np.ndarray) -> list[str]:
    """``compile_layers`` with torch's default mode and with max-autotune (no CUDA graphs)."""
    lines = []
    for mode in ("default", "max-autotune-no-cudagraphs"):
        try:
            enc = encoder_in(folder, device)
            enc.backbone.compile_layers(mode=mode)
            engine = Engine(enc)
            start = time.perf_counter()
            forward_ids(engine, ids[:512])
            first = time.perf_counter() - start
            out = forward_ids(engine, ids)
            sec = Clock(device).median(lambda engine=engine: forward_ids(engine, ids), repeats)[0]
            lines.append(f"| compile_layers(mode={mode!r}) (first pass {first:.1f} s) | "
                         f"{len(ids) / sec:,.0f} | {float(np.abs(out - eager).max()):.3g} |")
        except Exception as exc:  # noqa: BLE001 - a finding
            lines.append(f"| compile_layers(mode={mode!r}) | FAILED: {type(exc).__name__}: {exc} | |")
        log(lines[-1])
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=Path, default=HERE / "gpu_inputs")
    ap.add_argument("--tokenizer-dir", type=Path, default=HERE / "gpu_inputs" / "tokenizer")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--texts", type=int, default=32768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--road-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--texts-file", help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, default=8192, help=argparse.SUPPRESS)
    ap.add_argument("--slice", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--prefetch", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.road_child:
        return road_child(args)
    corpus = json.loads((args.inputs / "corpus.json").read_text())
    config = TINY_CONFIG if args.dry_run else json.loads((args.inputs / "config.json").read_text())
    n, repeats = (256, 1) if args.dry_run else (args.texts, args.repeats)
    texts, ids = sample_by_language(corpus, n)
    torch.backends.cuda.matmul.allow_tf32 = False
    work = Path(tempfile.mkdtemp(prefix="skmoe-gpu-exp-"))
    from skmoe.encoder.tokenization import load_tokenizer

    vocab = len(load_tokenizer(args.tokenizer_dir))
    folder = build_random_checkpoint(dict(config, vocab_size=max(vocab, config["vocab_size"])),
                                     work / "moe", tokenizer=args.tokenizer_dir)
    if args.dry_run:
        ids = [[i % config["vocab_size"] for i in row] for row in ids]
    started = time.perf_counter()
    lines = [f"Device: {torch.cuda.get_device_name(0) if args.device.startswith('cuda') else args.device}, "
             f"torch {torch.__version__}, {os.cpu_count()} host CPUs" + (
                 " (dry run: numbers meaningless)" if args.dry_run else ""), ""]
    lines += road_rows(folder, texts, args.device, repeats, work)
    lines += forward_rows(folder, ids, args.device, repeats)
    lines.append(f"\n({time.perf_counter() - started:.0f} s)")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_experiments.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
