"""The parts of ``gpu_bench.py`` that run texts (not pre-tokenised ids) or change the model.

* **the road, texts -> vectors** in bf16 with tokenization included, through
  :class:`skmoe.embedding.Embedder` (what ``transform`` and ``skmoe embed`` run; no cache) on the
  distinct texts: as it is (a small first chunk, then chunks of ``CHUNK_SIZE``, the next one
  tokenized in a worker thread), with the first chunk full-size (as before 2026-12-04), and the
  tokenizer alone on the same texts (what the overlap can hide);
* **host syncs per batch**, counted by ``torch.cuda.set_sync_debug_mode("warn")`` over one pass;
* **``torch.compile``** of the layers (``NomicMoEModel.compile_layers``, dynamic token counts):
  the time of the first pass (compilation) and the steady speed.

Each piece reports a failure as a line of the table instead of ending the run (they first ran on
a GPU on 2026-12-04).
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_common import build_random_checkpoint, encoder_in, forward_ids

from skmoe.engine import Engine


def _log(line: str) -> str:
    print(line, file=sys.stderr, flush=True)
    return line


def road_lines(config: dict, folder: Path, tokenizer: Path | None, device: str,
               texts: list[str], prompt: str, clock, repeats: int) -> list[str]:
    """Texts/s of texts -> vectors in bf16 through the road, with the first chunk small (as it
    is) and full-size, and of tokenizing alone; skipped (with the reason) without a tokenizer
    folder. The tokenizer files are copied into the checkpoint ``folder``; a config whose
    vocabulary is smaller than the tokenizer's (the dry run's) gets a checkpoint of its own."""
    if tokenizer is None or not (Path(tokenizer) / "tokenizer.json").is_file():
        return [_log(f"Road rows skipped: no tokenizer folder at {tokenizer} (copy the XLM-R "
                     "tokenizer there and carry it)")]
    try:
        from skmoe import embedding
        from skmoe.encoder.tokenization import load_tokenizer

        tok = load_tokenizer(Path(tokenizer))
        if int(config["vocab_size"]) < len(tok):
            folder = build_random_checkpoint(dict(config, vocab_size=len(tok)),
                                             folder.parent / "road-moe")
        for f in Path(tokenizer).iterdir():
            if f.is_file():
                shutil.copy(f, folder / f.name)
        enc = encoder_in(folder, device)
        distinct = list(dict.fromkeys(texts))  # the road computes each text once

        def run() -> int:
            return len(embedding.Embedder.for_encoder(enc, prompt).embed(distinct))

        first = embedding.FIRST_CHUNK
        lines = []
        for label, first_chunk in (("first chunk small (as it is)", first),
                                   ("first chunk full-size (before)", embedding.CHUNK_SIZE)):
            embedding.FIRST_CHUNK = first_chunk
            try:
                run()  # warm-up
                sec, count = clock.median(run, repeats)
            finally:
                embedding.FIRST_CHUNK = first
            lines.append(_log(f"Texts -> vectors, bf16, tokenizing included (Embedder, chunks "
                              f"of {embedding.CHUNK_SIZE}, {label}): {count / sec:.0f} texts/s "
                              f"({count} distinct texts, {sec:.2f} s, median of {repeats})"))
        start = time.perf_counter()
        enc.tokenize([prompt + t for t in distinct])
        sec = time.perf_counter() - start
        lines.append(_log(f"Tokenizing alone (host, same texts): {len(distinct) / sec:.0f} texts/s"))
        return lines
    except Exception as exc:  # noqa: BLE001 - a finding, reported in the table
        return [_log(f"Road rows FAILED: {type(exc).__name__}: {exc}")]


def sync_lines(engine: Engine, ids: list[list[int]], device: str) -> list[str]:
    """Synchronizing operations per batch over one pass (CUDA only)."""
    if not device.startswith("cuda"):
        return [_log("Host syncs per batch: not counted (CUDA only)")]
    try:
        engine.stats.forward_calls = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                forward_ids(engine, ids)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
        where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})
        batches = max(1, engine.stats.forward_calls)
        return [_log(f"Host syncs flagged by torch.cuda.set_sync_debug_mode over {batches} "
                     f"batches: {len(syncs)} ({len(syncs) / batches:.2f} per batch) at "
                     f"{', '.join(where[:8]) or 'nowhere'}")]
    except Exception as exc:  # noqa: BLE001
        return [_log(f"Sync count FAILED: {type(exc).__name__}: {exc}")]


def compile_lines(folder: Path, device: str, ids: list[list[int]], clock, repeats: int,
                  ref: np.ndarray | None, cosine: Callable) -> list[str]:
    """bf16 with every layer under ``torch.compile(dynamic=True)``: first pass and steady
    speed, cosine to the fp32 reference."""
    try:
        enc = encoder_in(folder, device)
        enc.backbone.compile_layers()
        engine = Engine(enc)
        start = time.perf_counter()
        forward_ids(engine, ids[:512])
        first = time.perf_counter() - start
        sec, vec = clock.median(lambda: forward_ids(engine, ids), repeats)
        cos = cosine(vec[: len(ref)], ref[: len(vec)]) if ref is not None else np.ones(1)
        return [_log(f"bf16 + torch.compile (dynamic): {len(ids) / sec:.0f} texts/s, first "
                     f"pass of 512 texts {first:.1f} s (compilation), cos mean "
                     f"{float(cos.mean()):.5f}")]
    except Exception as exc:  # noqa: BLE001
        return [_log(f"torch.compile row FAILED: {type(exc).__name__}: {exc}")]
