"""A deliberately slow reference for the NomicBERT-MoE forward, written from the spec alone.

``docs/nomic-moe-architecture.md`` §3-§4 step by step, in float64, on the padded layout with
positions 0..S-1 and an additive key mask, one row and one head at a time, and the MoE as a
Python loop over tokens. It shares no code with ``skmoe.encoder.nomic_moe``: it reads the raw
checkpoint tensors by name.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mean) / torch.sqrt(var + eps) * w + b


def gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # exact erf GELU


def rotate(u: Tensor, rotary_dim: int, base: float) -> Tensor:
    """Rotate-half rotary of one head's vectors ``u`` [S, Dh] at positions 0..S-1 (spec §3.4.2).

    theta[p, j] = p * base^(-2j / rotary_dim); dim j pairs with dim j + rotary_dim/2.
    """
    half = rotary_dim // 2
    S = u.shape[0]
    theta = torch.tensor(
        [[p * base ** (-2.0 * j / rotary_dim) for j in range(half)] for p in range(S)],
        dtype=torch.float64,
    )
    a, b = u[:, :half], u[:, half:rotary_dim]
    out = u.clone()
    out[:, :half] = a * theta.cos() - b * theta.sin()
    out[:, half:rotary_dim] = b * theta.cos() + a * theta.sin()
    return out


def moe_token(t: Tensor, sd: dict[str, Tensor], prefix: str, cfg: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MoE of one token (spec §4): softmax over all experts, top-k, optional q-norm, bias once."""
    E, K, F = cfg["num_experts"], cfg["moe_top_k"], cfg["n_inner"]
    R = sd[f"{prefix}.router.layer.weight"]
    p = torch.softmax(R @ t, dim=0)
    order = sorted(range(E), key=lambda e: -float(p[e]))[:K]
    w = torch.stack([p[e] for e in order])
    q = cfg.get("moe_normalize_expert_weights")
    if q:
        q = 1.0 if q is True else float(q)
        w = w / (w.abs() ** q).sum() ** (1.0 / q)
    w1, w2 = sd[f"{prefix}.experts.mlp.w1"], sd[f"{prefix}.experts.mlp.w2"]
    y = torch.zeros_like(t)
    for weight, e in zip(w, order, strict=True):
        A = w1[e * F : (e + 1) * F]  # [F, H], used transposed
        B = w2[e * F : (e + 1) * F]  # [F, H], used as stored
        y = y + weight * (gelu(A @ t) @ B)
    return y + sd[f"{prefix}.experts.bias"], p, torch.tensor(order), w


def naive_forward(
    sd: dict[str, Tensor], cfg: dict, input_ids: Tensor, attention_mask: Tensor
) -> tuple[Tensor, dict[int, dict[str, Tensor]]]:
    """Return (hidden [B, S, H] float64, routing per MoE layer for the real tokens, row-major)."""
    sd = {k: v.double() for k, v in sd.items()}
    H, NH, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    Dh = H // NH
    rotary_dim = int(Dh * cfg.get("rotary_emb_fraction", 1.0))
    base = float(cfg.get("rotary_emb_base", 10000.0))
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    every = cfg.get("moe_every_n_layers", 0)
    moe_layers = [i for i in range(L) if cfg.get("num_experts") and every and i % every == 1]
    B, S = input_ids.shape
    routing: dict[int, dict[str, list]] = {i: {"probs": [], "experts": [], "weights": []} for i in moe_layers}
    outs = []
    for b in range(B):
        ids, mask = input_ids[b], attention_mask[b]
        x = sd["embeddings.word_embeddings.weight"][ids] + sd["embeddings.token_type_embeddings.weight"][0]
        x = layer_norm(x, sd["emb_ln.weight"], sd["emb_ln.bias"], eps)
        bias = torch.zeros(S, dtype=torch.float64).masked_fill(~mask.bool(), torch.finfo(torch.float64).min)
        for i in range(L):
            pre = f"encoder.layers.{i}"
            qkv = x @ sd[f"{pre}.attn.Wqkv.weight"].T + sd[f"{pre}.attn.Wqkv.bias"]
            q, k, v = qkv[:, :H], qkv[:, H : 2 * H], qkv[:, 2 * H :]
            heads = []
            for h in range(NH):
                cols = slice(h * Dh, (h + 1) * Dh)
                qh = rotate(q[:, cols], rotary_dim, base)
                kh = rotate(k[:, cols], rotary_dim, base)
                scores = qh @ kh.T / math.sqrt(Dh) + bias  # masks keys only
                heads.append(torch.softmax(scores, dim=-1) @ v[:, cols])
            a = torch.cat(heads, dim=-1) @ sd[f"{pre}.attn.out_proj.weight"].T + sd[f"{pre}.attn.out_proj.bias"]
            h1 = layer_norm(x + a, sd[f"{pre}.norm1.weight"], sd[f"{pre}.norm1.bias"], eps)
            if i in moe_layers:
                f = torch.zeros_like(h1)
                for s in range(S):
                    f[s], p, e, w = moe_token(h1[s], sd, f"{pre}.mlp", cfg)
                    if mask[s]:
                        routing[i]["probs"].append(p)
                        routing[i]["experts"].append(e)
                        routing[i]["weights"].append(w)
            else:
                hid = gelu(h1 @ sd[f"{pre}.mlp.fc1.weight"].T + sd[f"{pre}.mlp.fc1.bias"])
                f = hid @ sd[f"{pre}.mlp.fc2.weight"].T + sd[f"{pre}.mlp.fc2.bias"]
            x = layer_norm(h1 + f, sd[f"{pre}.norm2.weight"], sd[f"{pre}.norm2.bias"], eps)
        outs.append(x)
    stacked = {
        i: {k: torch.stack(v) for k, v in r.items()} for i, r in routing.items()
    }
    return torch.stack(outs), stacked
