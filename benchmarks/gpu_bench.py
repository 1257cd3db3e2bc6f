"""GPU benchmark of the packed engine: MFU against the measured bf16 GEMM peak and the datasheet.

The GPU machine has no ``../shared``: first, on a machine that has it, export the inputs (SIB-200
train texts of all 32 languages with the ``classification: `` prompt, their XLM-R token ids, and
the real model's config) into a folder inside the repository, which travels with the tree:

    python benchmarks/gpu_bench.py --export benchmarks/gpu_inputs \\
        --sib200 ../shared/data/sib200 --tokenizer ../shared/fixtures/xlmr-tokenizer \\
        --config ../shared/fixtures/nomic-moe-config/config.json

then, on the GPU (one call, a few minutes):

    python benchmarks/gpu_bench.py --inputs benchmarks/gpu_inputs --out $OUT

What it measures, in one process on one card, with CUDA events:

* the bf16/fp16/fp32 GEMM peaks with the model's own matmul shapes (each timing >= 50 ms);
* ``--texts`` (default 65,536) texts sampled with replacement, equally from the 32 languages,
  through our engine in bf16 (the GPU default) and fp16 on packed tokens; our fp32 and the
  **standard path** on the first ``--standard-texts`` of them. The standard path is *our
  re-implementation* of how the official code is driven (sentence-transformers: character-sorted
  batches of 32 padded to their longest row, every padded token through every layer, the official
  per-expert ``where``/``index_add_`` loop), in bf16: the official code is not in this repository;
* per row: texts/s, real tokens/s, model TFLOP/s on real tokens (spec §8), % of the measured bf16
  GEMM peak and of the datasheet bf16 dense peak, cosines to our fp32 vectors, peak memory;
* the torchao modes ``int8wo`` and ``fp8`` (experts stay bf16) when torchao is installed
  (``pip install 'skmoe[torchao]'``) and, for fp8, the card has compute capability >= 8.9; each
  is skipped with its reason printed otherwise;
* the attention kernel actually used, a profiler breakdown (top ops by device time), the latency of
  one short text, and batch invariance on the device (a text alone vs inside a batch);
* host syncs per batch, ``torch.compile`` of the layers, and texts -> vectors with tokenization
  included, the next chunk tokenized in a worker thread or not (``gpu_road.py``; the road rows
  need the XLM-R tokenizer in ``--tokenizer-dir``, default ``benchmarks/gpu_inputs/tokenizer``,
  git-ignored: copy it there and carry it);
* writes ``gpu_results.md``/``.json`` to ``--out`` and appends the table to
  ``benchmarks/RESULTS.md`` (unless ``--no-append``); ``gpu_partial.json`` in ``--out`` holds
  what is measured so far after every row, and the optional sections (torchao, texts -> vectors,
  compile) are skipped once ``--budget-s`` (default 420 s) is spent, so a run cut off by the
  device's 10-minute limit still brings rows back.

``--dry-run`` runs every piece on a tiny config and a synthetic corpus (``--device cpu`` works):
numbers meaningless, for checking the script without a GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import (  # noqa: E402
    MODEL_SHAPES,
    PROMPT,
    build_random_checkpoint,
    cosine_rows,
    encoder_in,
    forward_ids,
    model_flops,
    standard_embed,
)
from gpu_road import compile_lines, road_lines, sync_lines  # noqa: E402

from skmoe.encoder import load_encoder  # noqa: E402
from skmoe.encoder.packing import _varlen_kernel, attention_backend  # noqa: E402
from skmoe.engine import Engine, apply_precision  # noqa: E402

#: Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, no sparsity).
DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "B200": 2250.0,
                         "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
TINY_CONFIG = {
    "model_type": "nomic_bert", "vocab_size": 1024, "n_embd": 64, "n_head": 4, "n_inner": 256,
    "n_layer": 4, "num_experts": 8, "moe_top_k": 2, "moe_every_n_layers": 2, "n_positions": 2048,
    "rotary_emb_fraction": 1.0, "rotary_emb_base": 10000, "layer_norm_epsilon": 1e-5,
    "type_vocab_size": 1, "pad_token_id": 1, "prenorm": False, "activation_function": "gelu",
    "qkv_proj_bias": True, "mlp_fc1_bias": True, "mlp_fc2_bias": True, "causal": False,
    "moe_normalize_expert_weights": False, "rotary_emb_interleaved": False,
}


# --------------------------------------------------------------------------------------------
# Timing


class Clock:
    """Wall time of a stretch of device work: CUDA events on CUDA, perf_counter elsewhere."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def time(self, fn: Callable[[], object]) -> tuple[float, object]:
        if not self.cuda:
            t = time.perf_counter()
            out = fn()
            return time.perf_counter() - t, out
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3, out

    def median(self, fn: Callable[[], object], repeats: int) -> tuple[float, object]:
        """Median of ``repeats`` timings after one warm-up run."""
        out = fn()
        times = []
        for _ in range(repeats):
            sec, out = self.time(fn)
            times.append(sec)
        return float(np.median(times)), out


def gemm_peaks(clock: Clock, device: str, kinds: tuple[str, ...], rows: int,
               min_seconds: float = 0.05) -> dict[str, tuple[float, str]]:
    """Best FLOP/s per dtype over the model's matmul shapes; each timing lasts >= min_seconds."""
    peaks = {}
    gen = torch.Generator().manual_seed(0)
    for kind in kinds:
        best, where = 0.0, ""
        for k, n in MODEL_SHAPES:
            dtype = getattr(torch, kind)
            a = torch.randn(rows, k, generator=gen).to(device=device, dtype=dtype)
            b = torch.randn(k, n, generator=gen).to(device=device, dtype=dtype)
            once, _ = clock.time(lambda a=a, b=b: a @ b)
            reps = max(1, math.ceil(min_seconds / max(once, 1e-6)))

            def run(a=a, b=b, reps=reps):
                for _ in range(reps):
                    a @ b

            for _ in range(3):
                sec, _ = clock.time(run)
                rate = 2.0 * rows * k * n * reps / sec
                if rate > best:
                    best, where = rate, f"{rows}x{k} @ {k}x{n}"
        peaks[kind] = (best, where)
    return peaks


# --------------------------------------------------------------------------------------------
# Inputs


def export_inputs(out: Path, sib200: Path, tokenizer: Path, config: Path, split: str = "train") -> Path:
    """Write ``corpus.json`` (every text of ``split`` with the prompt, ids, language) and
    ``config.json`` into ``out``: what the GPU run needs, without ``../shared``."""
    import csv

    from skmoe.encoder.tokenization import load_tokenizer, tokenize

    tok = load_tokenizer(Path(tokenizer))
    texts, langs = [], []
    for folder in sorted(p for p in Path(sib200).iterdir() if p.is_dir()):
        with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as fh:
            rows = [r["text"] for r in csv.DictReader(fh, delimiter="\t")]
        texts += rows
        langs += [folder.name] * len(rows)
    ids, _ = tokenize(tok, [PROMPT + t for t in texts], 2048)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.json").write_text(json.dumps(
        {"prompt": PROMPT, "texts": texts, "langs": langs,
         "ids": [list(map(int, r)) for r in ids]}, ensure_ascii=False))
    (out / "config.json").write_text(Path(config).read_text())
    return out


def synthetic_inputs(n_per_lang: int = 16, langs: int = 32, seed: int = 0) -> dict:
    """A stand-in corpus for --dry-run: random ids of SIB-200-like lengths, 32 'languages'."""
    rng = np.random.default_rng(seed)
    n = n_per_lang * langs
    lengths = rng.integers(6, 60, n)
    ids = [[0, *rng.integers(5, TINY_CONFIG["vocab_size"], m - 2).tolist(), 2] for m in lengths]
    return {"texts": ["x" * int(m * 4) for m in lengths], "ids": ids,
            "langs": [f"lang{i % langs:02d}" for i in range(n)]}


def sample_by_language(corpus: dict, n: int, seed: int = 0) -> tuple[list[str], list[list[int]]]:
    """``n`` texts drawn with replacement, an equal share from each language, then shuffled."""
    rng = np.random.default_rng(seed)
    langs = np.asarray(corpus["langs"])
    groups = [np.flatnonzero(langs == lang) for lang in sorted(set(corpus["langs"]))]
    per = -(-n // len(groups))
    picks = np.concatenate([rng.choice(g, per, replace=True) for g in groups])
    picks = rng.permutation(picks)[:n]
    return [corpus["texts"][i] for i in picks], [corpus["ids"][i] for i in picks]


# --------------------------------------------------------------------------------------------
# Extras: attention kernel, profile, latency, batch invariance


def attention_used(enc) -> str:
    backbone = enc.backbone
    backend = attention_backend(backbone.attention, enc.device, backbone.emb_ln.weight.dtype)
    if backend == "varlen":
        kernel = _varlen_kernel()
        name = getattr(kernel, "func", kernel)
        bound = ", ".join(f"{k}={v}" for k, v in getattr(kernel, "keywords", {}).items())
        return f"varlen ({name.__module__}.{name.__name__}{', ' + bound if bound else ''})"
    if backend == "padded":
        return "padded SDPA on a device-built [B, S] layout (torch picks the SDPA kernel)"
    return "runs of equal-length texts (CPU path)"


def top_ops(engine: Engine, ids: list[list[int]], device: str, k: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        forward_ids(engine, ids)
    key = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=k)


def one_text_latency_ms(clock: Clock, engine: Engine, row: list[int], repeats: int = 20) -> float:
    sec, _ = clock.median(lambda: forward_ids(engine, [row]), repeats)
    return 1e3 * sec


def batch_invariance(engine: Engine, ids: list[list[int]], alone: int = 32) -> tuple[float, int]:
    """(max-abs difference, texts bitwise equal) between texts inside one batch and alone."""
    together = forward_ids(engine, ids)
    alone = min(alone, len(ids))
    single = np.stack([forward_ids(engine, [ids[i]])[0] for i in range(alone)])
    diff = np.abs(together[:alone] - single)
    return float(diff.max()), int((diff.max(axis=1) == 0).sum())


# --------------------------------------------------------------------------------------------
# The run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=Path, default=HERE / "gpu_inputs",
                    help="folder with corpus.json and config.json (see --export)")
    ap.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="write the inputs into DIR (needs --sib200, --tokenizer, --config) and stop")
    ap.add_argument("--sib200", type=Path)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--texts", type=int, default=65536)
    ap.add_argument("--standard-texts", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny config, synthetic corpus, small sizes: checks the script, not speed")
    ap.add_argument("--tokenizer-dir", type=Path, default=HERE / "gpu_inputs" / "tokenizer",
                    help="XLM-R tokenizer files for the texts -> vectors rows (git-ignored; "
                         "carry it to the GPU machine)")
    ap.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                    help="time bf16 under torch.compile, last (auto: on CUDA only; inductor "
                         "compiles for minutes on a small CPU)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="after this many seconds the optional sections still to come (torchao, "
                         "texts -> vectors, compile) are skipped, each with a line saying so: "
                         "the device call has a 10-minute limit")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    started = time.monotonic()
    if args.export is not None:
        if not (args.sib200 and args.tokenizer and args.config):
            raise SystemExit("--export needs --sib200, --tokenizer and --config")
        print(export_inputs(args.export, args.sib200, args.tokenizer, args.config))
        return []
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --device cpu --dry-run to check the script)")
    if args.dry_run:
        corpus, config = synthetic_inputs(), TINY_CONFIG
        n, n_std, repeats, gemm_rows = min(args.texts, 256), min(args.standard_texts, 64), 1, 64
    else:
        if not (args.inputs / "corpus.json").is_file():
            raise SystemExit(f"no {args.inputs / 'corpus.json'}: write it first with --export "
                             "(see this script's docstring), or check the script with --dry-run")
        corpus = json.loads((args.inputs / "corpus.json").read_text())
        config = json.loads((args.inputs / "config.json").read_text())
        n, n_std, repeats, gemm_rows = args.texts, args.standard_texts, args.repeats, 16384
    texts, ids = sample_by_language(corpus, n)
    lengths = np.array([len(r) for r in ids])
    clock = Clock(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        card = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
        sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in props.name), None)
    else:
        card, sheet = f"{device} (dry run: numbers meaningless)", None
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="skmoe-gpu-"))
    folder = build_random_checkpoint(config, workdir / "nomic-moe")
    kinds = ("bfloat16", "float16", "float32") if device.startswith("cuda") else ("float32",)
    peaks = gemm_peaks(clock, device, kinds, gemm_rows)
    bf16_peak = peaks.get("bfloat16", peaks["float32"])[0]
    log("GEMM peaks:", {k: f"{v[0] / 1e12:.1f} TFLOP/s" for k, v in peaks.items()})

    rows: list[dict] = []
    extras: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def save_partial() -> None:
        """What is measured so far, in --out: a run cut off by the device's time limit still
        brings its rows back."""
        (args.out / "gpu_partial.json").write_text(json.dumps(
            {"card": card, "peaks": {k: v[0] for k, v in peaks.items()}, "rows": rows,
             "extras": extras, "seconds": time.monotonic() - started}, indent=1))

    def within_budget(section: str) -> bool:
        spent = time.monotonic() - started
        if spent <= args.budget_s:
            return True
        extras.append(f"{section} skipped: {spent:.0f} s spent, past --budget-s {args.budget_s:.0f}")
        log(extras[-1])
        return False

    def record(name: str, sec: float, count: int, vectors: np.ndarray, ref: np.ndarray | None,
               mem: float) -> None:
        flops = model_flops(fp32_cfg, lengths[:count])
        cos = cosine_rows(vectors[: len(ref)], ref[: len(vectors)]) if ref is not None else np.ones(1)
        rows.append({"mode": name, "texts": count, "seconds": sec, "texts_per_s": count / sec,
                     "tokens_per_s": float(lengths[:count].sum()) / sec,
                     "tflops": flops / sec / 1e12, "pct_measured": 100 * flops / sec / bf16_peak,
                     "pct_datasheet": None if sheet is None else 100 * flops / sec / (sheet * 1e12),
                     "cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "mem_gb": mem})
        log(json.dumps(rows[-1]))
        save_partial()

    def memory_gb() -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")

    def reset() -> None:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    fp32 = load_encoder(folder, device=device, dtype="float32")
    fp32_cfg = fp32.moe_config
    pad_id = int(config.get("pad_token_id", 1))
    reset()
    sec, ref = clock.time(lambda: forward_ids(Engine(fp32), ids[:n_std]))
    record("ours float32 (reference vectors)", sec, n_std, ref, None, memory_gb())
    fp32.backbone.to(torch.bfloat16)  # the official code's bf16: everything cast, router too
    reset()
    sec, (vec, _) = clock.median(
        lambda: standard_embed(fp32.backbone, texts[:n_std], ids[:n_std], pad_id, 32), repeats)
    record("standard path bf16 (our re-implementation: char-sorted padded batches of 32, "
           "per-expert loop)", sec, n_std, vec, ref, memory_gb())
    fp32 = None
    for mode in ("bfloat16", "float16"):
        enc = encoder_in(folder, device, mode)
        engine = Engine(enc)
        reset()
        sec, vec = clock.median(lambda engine=engine: forward_ids(engine, ids), repeats)
        record(f"ours {mode} (packed)", sec, n, vec, ref, memory_gb())
        if mode == "bfloat16":
            extras.append(f"Attention kernel: {attention_used(enc)}")
            short = min(ids, key=len)
            extras.append(f"One short text ({len(short)} tokens): "
                          f"{one_text_latency_ms(clock, engine, short):.2f} ms (median of 20)")
            mx, same = batch_invariance(engine, ids[:256])
            extras.append(f"Batch invariance (bf16, {min(32, n)} texts alone vs in a batch of "
                          f"{min(256, n)}): max-abs {mx:.3g}, {same} bitwise equal")
            extras += sync_lines(engine, ids[:4096], device)
            extras += ["", "Top ops (bf16, 4096 texts):", "```",
                       top_ops(engine, ids[:4096], device), "```"]
        enc = engine = None
        reset()
    save_partial()
    if within_budget("torchao rows"):
        extras += torchao_rows(folder, device, ids, n, repeats, clock, ref, record, memory_gb,
                               reset)
        save_partial()
    if within_budget("Texts -> vectors rows"):
        extras += road_lines(config, folder, args.tokenizer_dir, device, texts,
                             corpus.get("prompt", PROMPT), clock, repeats)
        reset()
        save_partial()
    if not (args.compile == "yes" or (args.compile == "auto" and device.startswith("cuda"))):
        extras.append(f"torch.compile row skipped (--compile {args.compile} on {device})")
    elif within_budget("torch.compile row"):
        extras += compile_lines(folder, device, ids, clock, repeats, ref, cosine_rows)
        save_partial()

    when = dt.datetime.now().astimezone()
    lines = [
        f"## {when:%Y-%m-%d %H:%M %Z} — GPU: gpu_bench.py",
        "",
        f"Device: {card}, torch {torch.__version__}. Command: "
        f"`python benchmarks/gpu_bench.py {shlex.join(argv if argv is not None else sys.argv[1:])}`",
        f"Corpus: {n} SIB-200 texts sampled with replacement equally from "
        f"{len(set(corpus['langs']))} languages, {int(lengths.sum())} real tokens (mean "
        f"{lengths.mean():.1f}); fp32 reference and standard path on the first {n_std}.",
        "GEMM peaks (model shapes, >= 50 ms per timing, best): " + ", ".join(
            f"{k} {v[0] / 1e12:.1f} TFLOP/s ({v[1]})" for k, v in peaks.items())
        + (f"; datasheet bf16 dense {sheet:.0f} TFLOP/s" if sheet else "; datasheet: unknown"),
        "",
        "| mode | texts | texts/s | real tokens/s | model TFLOP/s | % measured bf16 peak "
        "| % datasheet | cos mean | cos min | peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sheet_pct = "n/a" if r["pct_datasheet"] is None else f"{r['pct_datasheet']:.1f}%"
        lines.append(f"| {r['mode']} | {r['texts']} | {r['texts_per_s']:.0f} | "
                     f"{r['tokens_per_s']:.0f} | {r['tflops']:.2f} | {r['pct_measured']:.1f}% | "
                     f"{sheet_pct} | {r['cos_mean']:.5f} | {r['cos_min']:.5f} | {r['mem_gb']:.1f} |")
    lines += ["", *extras, ""]
    report = "\n".join(lines)
    print(report)
    (args.out / "gpu_results.md").write_text(report)
    (args.out / "gpu_results.json").write_text(json.dumps(
        {"peaks": {k: v[0] for k, v in peaks.items()}, "rows": rows, "extras": extras}, indent=1))
    if not args.no_append and not args.dry_run:
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write("\n" + report)
    return lines


def torchao_rows(folder: Path, device: str, ids: list, n: int, repeats: int, clock, ref: np.ndarray,
                 record: Callable, memory_gb: Callable, reset: Callable) -> list[str]:
    """The torchao modes (int8wo, fp8; experts stay bf16) where torchao and the card allow,
    each skipped with its printed reason otherwise. A CPU dry run puts int8wo through the
    conversion path (:func:`skmoe.engine.precision.to_torchao`) when torchao imports."""
    from skmoe.engine.precision import to_torchao
    from skmoe.engine.torchao_modes import TORCHAO_PRECISIONS, refusal, torchao_available

    lines: list[str] = []
    for mode in TORCHAO_PRECISIONS:
        why = refusal(mode, device)
        dry_cpu = why is not None and not device.startswith("cuda") and mode == "int8wo" \
            and torchao_available()
        if why is not None and not dry_cpu:
            lines.append(f"{mode} (torchao) skipped: {why}")
            print(lines[-1], file=sys.stderr, flush=True)
            continue
        try:  # never tried on a GPU before: a failure is a finding, not the end of the run
            enc = load_encoder(folder, device=device, dtype="float32")
            enc = to_torchao(enc, mode) if dry_cpu else apply_precision(enc, mode)
            engine = Engine(enc)
            reset()
            sec, vec = clock.median(lambda engine=engine: forward_ids(engine, ids), repeats)
            label = "CPU conversion path, dry run" if dry_cpu else "eager, no torch.compile"
            record(f"ours {mode} (torchao, experts bf16; {label})", sec, n, vec, ref, memory_gb())
            mx, same = batch_invariance(engine, ids[:256])
            lines.append(f"Batch invariance ({mode}, {min(32, n)} texts alone vs in a batch of "
                         f"{min(256, n)}): max-abs {mx:.3g}, {same} bitwise equal")
        except Exception as exc:  # noqa: BLE001 - reported in the table
            lines.append(f"{mode} (torchao) FAILED: {type(exc).__name__}: {exc}")
            print(lines[-1], file=sys.stderr, flush=True)
        enc = engine = None
        reset()
    return lines


if __name__ == "__main__":
    main()
