"""Pieces shared by the CPU benchmark (``bench_engine.py``) and its GPU variant (``gpu_bench.py``).

* the full-size checkpoint with random weights, written as safetensors and read back through the
  normal loader (speed does not depend on weight values);
* the corpus: SIB-200 sentences from all 32 languages, tokenized once and stored in a JSON file
  that the GPU machine (which has no ``../shared``) can read;
* the *standard path* baseline: what sentence-transformers does with the official code — sort by
  character length, fixed batches padded to their longest row, every token (padding included)
  through every layer, the per-expert gather loop over all tokens — written over *our* fp32
  weights (the official forward's arithmetic, not a download of its code);
* GEMM peaks measured with the model's own matmul shapes, and the spec's FLOP count (§8).
"""

from __future__ import annotations

import csv
import json
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from skmoe.encoder.config import NomicMoEConfig
from skmoe.encoder.nomic_moe import MoE, NomicMoEModel, apply_rotary, flops_per_token, rotary_tables

PROMPT = "classification: "


# --------------------------------------------------------------------------------------------
# Model


def build_random_checkpoint(config: Path | dict, folder: Path, side_files: Path | None = None,
                            tokenizer: Path | None = None, seed: int = 0) -> Path:
    """Write ``config.json`` + random-weight ``model.safetensors`` (+ side files) into ``folder``.

    ``config`` is a ``config.json`` path or its parsed dict. Skips the work when ``folder``
    already holds a checkpoint built from the same config.
    """
    from safetensors.torch import save_file

    from skmoe.encoder.nomic_moe import init_random_weights

    raw = config if isinstance(config, dict) else json.loads(Path(config).read_text())
    marker = folder / "bench_build.json"
    stamp = {"config": raw, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == stamp and (
            folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cfg = NomicMoEConfig.from_dict(raw)
    with torch.device("meta"):
        model = NomicMoEModel(cfg)
    model = model.to_empty(device="cpu")
    init_random_weights(model, seed=seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    del model
    (folder / "config.json").write_text(json.dumps(raw, indent=1))
    if side_files is not None:
        for name in ("config_sentence_transformers.json", "sentence_bert_config.json",
                     "modules.json"):
            if (side_files / name).is_file():
                shutil.copy(side_files / name, folder / name)
        if (side_files / "1_Pooling").is_dir():
            shutil.copytree(side_files / "1_Pooling", folder / "1_Pooling", dirs_exist_ok=True)
    if tokenizer is not None:
        for f in Path(tokenizer).iterdir():
            if f.is_file():
                shutil.copy(f, folder / f.name)
    marker.write_text(json.dumps(stamp))
    return folder


def small_moe_with_xlmr(folder: Path, side_files: Path, tokenizer: Path) -> Path:
    """The tiny fixture's config with the real 250,048-row vocabulary and the XLM-R tokenizer."""
    raw = json.loads((side_files / "config.json").read_text())
    raw["vocab_size"] = 250048
    return build_random_checkpoint(raw, folder, side_files, tokenizer)


# --------------------------------------------------------------------------------------------
# Corpus


def sib200_corpus(sib200_dir: Path, n: int, split: str = "train") -> list[str]:
    """``n`` sentences, languages interleaved (every language equally represented)."""
    per_lang = []
    for folder in sorted(p for p in Path(sib200_dir).iterdir() if p.is_dir()):
        with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as fh:
            per_lang.append([r["text"] for r in csv.DictReader(fh, delimiter="\t")])
    mixed = [t for group in zip(*per_lang, strict=False) for t in group]
    if n > len(mixed):
        raise SystemExit(f"the {split} split has {len(mixed)} texts; asked for {n}")
    return mixed[:n]


def save_corpus(path: Path, texts: Sequence[str], ids: Sequence[Sequence[int]]) -> None:
    """Texts (with the prompt) and their token ids, for machines without the tokenizer."""
    path.write_text(json.dumps({"prompt": PROMPT, "texts": list(texts),
                                "ids": [list(map(int, r)) for r in ids]}, ensure_ascii=False))


def load_corpus(path: Path) -> tuple[list[str], list[list[int]]]:
    data = json.loads(Path(path).read_text())
    return data["texts"], data["ids"]


def model_flops(cfg: NomicMoEConfig, lengths: Sequence[int]) -> float:
    """Spec §8 forward FLOPs of these texts on real tokens (attention term at each text's length)."""
    return float(sum(n * flops_per_token(cfg, n) for n in lengths))


# --------------------------------------------------------------------------------------------
# The standard path (baseline)


def char_sorted_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """sentence-transformers' order: longest text (in characters) first, fixed-size batches."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded_batch(ids: Sequence[Sequence[int]], rows: np.ndarray, pad_id: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    S = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), S), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), S), dtype=torch.long)
    for j, r in enumerate(rows):
        input_ids[j, : len(ids[r])] = torch.as_tensor(ids[r])
        mask[j, : len(ids[r])] = 1
    return input_ids, mask


def official_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The official pure-torch MoE: route every token, then per expert a `where` over all tokens,
    a gather, the expert MLP, and an index_add of the weighted outputs."""
    probs = (x @ moe.router.layer.weight.t().to(x.dtype)).float().softmax(dim=-1)
    top_w, top_e = probs.topk(moe.top_k, dim=-1)
    out = torch.zeros_like(x)
    E, Fi = moe.num_experts, moe.ffn
    w1 = moe.experts.mlp.w1.view(E, Fi, -1)
    w2 = moe.experts.mlp.w2.view(E, Fi, -1)
    for e in range(E):
        token_idx, k_idx = torch.where(top_e == e)
        if token_idx.numel() == 0:
            continue
        y = F.gelu(x[token_idx] @ w1[e].t()) @ w2[e]
        out.index_add_(0, token_idx, y * top_w[token_idx, k_idx, None].to(x.dtype))
    return out + moe.experts.bias


def checkpoint_wqkv(model: NomicMoEModel) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each layer's fused Wqkv (weight, bias) in the checkpoint's row order (rotate-half pairs;
    our model holds the rows reordered, see ``rotary_pair_order``)."""
    state = model.state_dict()
    return [(state[f"encoder.layers.{i}.attn.Wqkv.weight"],
             state.get(f"encoder.layers.{i}.attn.Wqkv.bias")) for i in range(model.config.n_layer)]


@torch.inference_mode()
def standard_forward(model: NomicMoEModel, input_ids: torch.Tensor, mask: torch.Tensor,
                     wqkv: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None
                     ) -> torch.Tensor:
    """Padded forward: every position of the [B, S] batch through every layer (official order)."""
    cfg = model.config
    wqkv = wqkv if wqkv is not None else checkpoint_wqkv(model)
    B, S = input_ids.shape
    x = model.emb_ln(model.embeddings(input_ids.reshape(-1)))
    dtype = x.dtype
    key_mask = torch.zeros(B, 1, 1, S, dtype=dtype, device=x.device)
    key_mask.masked_fill_(~mask.bool()[:, None, None, :], torch.finfo(dtype).min)
    cos, sin = rotary_tables(S, cfg.rotary_dim, cfg.rotary_emb_base, x.device)
    for layer, (w, b) in zip(model.encoder.layers, wqkv, strict=True):
        attn = layer.attn
        qkv = F.linear(x, w, b).view(B, S, 3, attn.n_head, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = apply_rotary(qkv[0], cos, sin), apply_rotary(qkv[1], cos, sin), qkv[2]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        h = layer.norm1(x + attn.out_proj(o.transpose(1, 2).reshape(B * S, -1)))
        if isinstance(layer.mlp, MoE):
            f = official_moe(layer.mlp, h)
        else:
            f = layer.mlp.fc2(F.gelu(layer.mlp.fc1(h)))
        x = layer.norm2(h + f)
    return x.view(B, S, -1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1)


def standard_embed(model: NomicMoEModel, texts: Sequence[str], ids: Sequence[Sequence[int]],
                   pad_id: int, batch_size: int = 32) -> tuple[np.ndarray, int]:
    """Embeddings by the standard path, in input order; also the padded token count."""
    device = next(model.parameters()).device
    out = np.empty((len(texts), model.config.n_embd), dtype=np.float32)
    padded = 0
    wqkv = checkpoint_wqkv(model)
    for rows in char_sorted_batches(texts, batch_size):
        input_ids, mask = padded_batch(ids, rows, pad_id)
        padded += input_ids.numel()
        input_ids, mask = input_ids.to(device), mask.to(device)
        hidden = standard_forward(model, input_ids, mask, wqkv)
        out[rows] = mean_pool(hidden, mask).cpu().numpy()
    return out, padded


def encoder_in(folder: Path, device: str, mode: str = "bfloat16") -> Any:
    """The checkpoint in ``folder`` loaded on ``device`` and converted to precision ``mode`` (a
    low-precision float mode the CPU would only emulate is allowed: dry runs check scripts)."""
    from skmoe.encoder import load_encoder
    from skmoe.engine import apply_precision

    return apply_precision(load_encoder(folder, device=device, dtype="float32"), mode,
                           allow_slow=not device.startswith("cuda"))


def forward_ids(engine: Any, ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Our engine's pooled vectors of pre-tokenised rows, in input order: batch planning and the
    forward alone (``Engine.iter_batches``), without the tokenising, de-duplication and cache of
    the text road (:class:`skmoe.embedding.Embedder`)."""
    out = np.empty((len(ids), engine.encoder.embedding_dim), dtype=np.float32)
    for rows, vectors in engine.iter_batches(ids):
        out[rows] = vectors
    return out


# --------------------------------------------------------------------------------------------
# Peaks, timing, machine


MODEL_SHAPES = [(768, 3072), (3072, 768), (768, 2304), (768, 768)]  # (in, out) of the matmuls


def gemm_peak(kind: str, rows: int = 4096, repeats: int = 5, device: str = "cpu",
              sync: Callable[[], None] = lambda: None) -> tuple[float, str]:
    """Best FLOP/s over ``repeats`` runs of each model matmul shape [rows, in] x [in, out]."""
    from skmoe.engine.precision import _int8_mm, _pack

    best, best_shape = 0.0, ""
    gen = torch.Generator().manual_seed(0)
    for k, n in MODEL_SHAPES:
        if kind == "int8":
            a = torch.randint(0, 256, (rows, k), dtype=torch.uint8, generator=gen)
            packed, scale = _pack(torch.randint(-63, 64, (n, k), dtype=torch.int8, generator=gen)), torch.ones(n)

            def run(a=a, packed=packed, scale=scale):
                return _int8_mm(a, packed, scale)
        else:
            dt = getattr(torch, kind)
            a = torch.randn(rows, k, generator=gen).to(device=device, dtype=dt)
            b = torch.randn(k, n, generator=gen).to(device=device, dtype=dt)

            def run(a=a, b=b):
                return a @ b
        run()
        sync()
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            sync()
            rate = 2.0 * rows * k * n / (time.perf_counter() - t)
            if rate > best:
                best, best_shape = rate, f"{rows}x{k} @ {k}x{n}"
    return best, best_shape


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0) so a later peak excludes earlier phases."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024.0
    return peak_rss_mb()


def cpu_description() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    import os

    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                       "amx_int8", "avx_vnni") if f in flags]
    return (f"{model}, {os.cpu_count()} logical CPUs, ISA: {' '.join(isa) or 'n/a'}; "
            f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
            f"Python {sys.version.split()[0]}")


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def splice_docs(doc: Path, block: str, start: str, end: str, *, after: str | None = None) -> None:
    """Put ``block`` (which begins with ``start`` and ends with ``end``) into ``doc``: in place of
    the block there, else after the line ``after`` (else at the end)."""
    text = doc.read_text(encoding="utf-8")
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    elif after is not None and after in text:
        text = text.replace(after, after + "\n\n" + block, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")
