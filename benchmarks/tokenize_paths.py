"""Tokenizing: ``skmoe``'s path (the ``tokenizers`` backend asked directly, slices of up to
2,048 texts) against what it replaced (the ``transformers`` wrapper's ``__call__`` on slices of
256 texts), same texts.

Both must return the same ids (checked); interleaved rounds, medians. The prompt is prepended as
the road does. Usage::

    python benchmarks/tokenize_paths.py --tokenizer DIR [--corpus benchmarks/gpu_inputs/corpus.json]
        [--texts 8192] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench_common import PROMPT, cpu_description

from skmoe.encoder.tokenization import load_tokenizer, tokenize

HERE = Path(__file__).resolve().parent
FORMER_SLICE = 256


def wrapper(tok, texts: list[str], max_length: int) -> list[list[int]]:
    """The former path: the wrapper's ``__call__`` per slice (rows cut to ``max_length + 1``)."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), FORMER_SLICE):
        ids += tok(texts[start : start + FORMER_SLICE], add_special_tokens=True, truncation=True,
                   max_length=max_length + 1, verbose=False)["input_ids"]
    return ids


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=HERE / "gpu_inputs" / "corpus.json")
    ap.add_argument("--texts", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    tok = load_tokenizer(args.tokenizer)
    texts = [PROMPT + t for t in json.loads(args.corpus.read_text())["texts"][: args.texts]]
    paths = {"transformers wrapper": lambda: wrapper(tok, texts, 512),
             "skmoe (backend)": lambda: tokenize(tok, texts, 512)[0]}
    # the wrapper keeps rows of 513 tokens; cut them as tokenize does before comparing
    first = [r if len(r) <= 512 else r[:511] + r[-1:] for r in paths["transformers wrapper"]()]
    assert first == paths["skmoe (backend)"](), "the two paths give different ids"
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"{len(texts)} texts, identical ids; {cpu_description()}")
    base = statistics.median(times["transformers wrapper"])
    for name, t in times.items():
        med = statistics.median(t)
        print(f"| {name} | {len(texts) / med:,.0f} texts/s | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
