"""The nomic-embed-text-v2-moe encoder (NomicBERT with sparse MoE FFNs), in plain PyTorch.

Reads top to bottom like the spec (``nomic-moe-architecture.md`` §3-§4): embeddings ->
embedding LayerNorm -> N post-norm blocks (fused Wqkv, rotary, attention, dense MLP or MoE).
Parameter names equal the checkpoint's tensor names, so ``load_state_dict(strict=True)`` works.

Three things go beyond the reference, none changes the numbers on real tokens (beyond float
rounding):

* **Unpadding.** Every token-wise op (projections, MLP, MoE, LayerNorm) runs on the real
  tokens only, packed as ``[T, H]``; only attention sees the padded ``[B, S, H]`` layout.
* **Expert-grouped dispatch.** Tokens are sorted by chosen expert and each active expert runs
  one matmul pair on exactly its tokens — no dense all-experts compute, no Python loop over
  tokens.
* **Rotary pairs side by side.** The q/k rows of Wqkv are held reordered so that each rotary
  pair is adjacent and the rotation is one complex multiply; ``state_dict()`` and
  ``load_state_dict()`` translate, so checkpoints keep the official layout.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import NomicMoEConfig

# --------------------------------------------------------------------------------------------
# Routing capture (off by default; when off the forward pays one attribute check per layer).


@dataclass
class RoutingRecord:
    """Router output of one MoE layer for the real tokens of one forward call.

    ``probs`` is the fp32 softmax over all experts ``[T, E]``; ``top_experts`` / ``top_weights``
    the chosen experts and their (un-renormalised unless configured) weights ``[T, K]``.
    Tokens are the real tokens of the forward call's batch in row-major order (the batch's row
    0, then its row 1, ...). The engine batches rows in its own (length-sorted) order: map
    records back to texts with the row positions ``Engine.iter_batches`` yields.
    """

    layer: int
    probs: torch.Tensor
    top_experts: torch.Tensor
    top_weights: torch.Tensor


@contextmanager
def capture_routing(model: nn.Module) -> Iterator[list[RoutingRecord]]:
    """Collect a :class:`RoutingRecord` per MoE layer per forward call inside the block.

    Only forward passes leave records: texts an estimator serves from its cache run none.
    :func:`skmoe.evaluation.routing_stats` always runs the model.

    >>> with capture_routing(encoder) as records:  # doctest: +SKIP
    ...     encoder(input_ids, attention_mask)
    """
    records: list[RoutingRecord] = []
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    if not moes:
        raise TypeError("capture_routing needs a Mixture-of-Experts model; this one has no MoE layer")
    for m in moes:
        m.routing_sink = records
    try:
        yield records
    finally:
        for m in moes:
            m.routing_sink = None


# --------------------------------------------------------------------------------------------
# Embeddings


class Embeddings(nn.Module):
    """Word embedding + the always-added token-type row 0 (no position table: rotary)."""

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.n_embd)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]


# --------------------------------------------------------------------------------------------
# Rotary position embedding (GPT-NeoX rotate-half layout)


def rotary_tables(
    seq_len: int, rotary_dim: int, base: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[S, rotary_dim]``: the rotary_dim/2 frequencies concatenated twice."""
    inv_freq = 1.0 / base ** (
        torch.arange(0, rotary_dim, 2, device=device, dtype=torch.float32) / rotary_dim
    )
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` features of the last axis of ``x`` (rest untouched).

    ``cos``/``sin`` broadcast against ``x[..., :rotary_dim]``; the rotation runs in fp32.
    """
    rd = cos.shape[-1]
    rot, rest = x[..., :rd], x[..., rd:]
    a, b = rot.float().chunk(2, dim=-1)
    half = rd // 2
    c1, c2, s1, s2 = cos[..., :half], cos[..., half:], sin[..., :half], sin[..., half:]
    # rot * cos + rotate_half(rot) * sin, with rotate_half(rot) = cat(-b, a), written per half
    out = torch.cat([a * c1 - b * s1, b * c2 + a * s2], dim=-1).to(x.dtype)
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out


def rotary_pair_order(cfg: NomicMoEConfig) -> torch.Tensor:
    """Row order of the fused Wqkv in which every rotary pair of q and k is adjacent.

    The checkpoint rotates feature ``j`` with feature ``j + rotary_dim/2`` of each head
    (rotate-half). Stored with the pair members side by side, the rotation is one in-place
    complex multiply instead of six strided passes (measured 9x faster on CPU). q and k get the
    same reordering within each head, so every q.k product, and so attention, is unchanged;
    v and the features past ``rotary_dim`` keep their places. ``internal = checkpoint[order]``.
    """
    H, Dh, rd = cfg.n_embd, cfg.head_dim, cfg.rotary_dim
    arange = functools.partial(torch.arange, device="cpu")  # also when built on "meta"
    head = arange(Dh)
    head[:rd] = torch.stack([arange(rd // 2), arange(rd // 2) + rd // 2], 1).reshape(-1)
    qk = (arange(2 * cfg.n_head)[:, None] * Dh + head).reshape(-1)
    return torch.cat([qk, arange(2 * H, 3 * H)])


def apply_rotary_pairs_(x: torch.Tensor, freqs: torch.Tensor) -> None:
    """Rotate, in place, the adjacent pairs of the last axis of ``x`` (``[..., rotary_dim]``,
    pairs side by side: see :func:`rotary_pair_order`) by the complex ``freqs``
    (``cos + i sin``, broadcasting against ``[..., rotary_dim / 2]``); the rotation runs in fp32."""
    if x.dtype == torch.float32:
        torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(freqs)
        return
    z = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous()).mul_(freqs)
    x.copy_(torch.view_as_real(z).flatten(-2))


# --------------------------------------------------------------------------------------------
# Attention


class Attention(nn.Module):
    """Fused Wqkv (three-major rows), rotary on q/k, bidirectional SDPA with a key padding mask."""

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.rotary_dim = cfg.n_head, cfg.head_dim, cfg.rotary_dim
        self.Wqkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.qkv_proj_bias)
        self.out_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.qkv_proj_bias)
        # Wqkv rows are held in rotary-pair order; state dicts keep the checkpoint's order.
        order = rotary_pair_order(cfg)
        self._pair_order, self._checkpoint_order = order, torch.argsort(order)
        self.register_load_state_dict_pre_hook(_wqkv_to_pair_order)
        self.register_state_dict_post_hook(_wqkv_to_checkpoint_order)

    def forward(self, x: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        """``x`` packed real tokens [T, H] -> attention output [T, H]."""
        T, H = x.shape
        qkv = self.Wqkv(x)  # [T, 3H], q and k in rotary-pair order
        # Rotary on the packed tokens (each token's own position): no work spent on padding.
        qk = qkv[:, : 2 * H].view(T, 2 * self.n_head, self.head_dim)
        apply_rotary_pairs_(qk[..., : self.rotary_dim], batch.token_rotary)
        if batch.runs is not None:
            return self.out_proj(self._attend_runs(qkv, batch.runs))
        q, k, v = batch.pad(qkv).unflatten(-1, (3, self.n_head, self.head_dim)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=batch.key_mask)  # [B, NH, S, Dh]
        return self.out_proj(batch.unpad_heads(out))

    def _attend_runs(self, qkv: torch.Tensor, runs: list[tuple[int, int, int]]) -> torch.Tensor:
        """Attention per run of consecutive equal-length rows, straight on the packed tokens.

        No padding is built or computed, and each row's result depends on that row alone (the
        same shapes whatever its batch-mates), which keeps int8 embeddings batch-independent.
        Written as two batched matmuls and a softmax: for the short rows of sentence
        embedding this is 1.3-2x faster than CPU SDPA's flash kernel (whose blocking is made
        for long sequences) and equal to it within float rounding.
        """
        T = qkv.shape[0]
        NH, Dh = self.n_head, self.head_dim
        scale = Dh**-0.5
        out = qkv.new_empty(T, NH * Dh)
        for start, rows, length in runs:
            stop = start + rows * length
            q, k, v = qkv[start:stop].view(rows, length, 3, NH, Dh).permute(2, 0, 3, 1, 4)
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)  # [rows, NH, L, L]
            o = torch.matmul(scores.softmax(dim=-1), v)  # [rows, NH, L, Dh]
            out[start:stop].view(rows, length, NH, Dh).copy_(o.transpose(1, 2))
        return out


def _reorder_wqkv(state: dict, prefix: str, order: torch.Tensor) -> None:
    for key in (prefix + "Wqkv.weight", prefix + "Wqkv.bias"):
        if key in state and state[key].shape[:1] == order.shape:
            state[key] = state[key].index_select(0, order.to(state[key].device))


def _wqkv_to_pair_order(module: Attention, state: dict, prefix: str, *args: object) -> None:
    _reorder_wqkv(state, prefix, module._pair_order)


def _wqkv_to_checkpoint_order(module: Attention, state: dict, prefix: str, *args: object) -> None:
    _reorder_wqkv(state, prefix, module._checkpoint_order)


# --------------------------------------------------------------------------------------------
# Feed-forward: dense MLP and MoE


# Rows per GELU call on CPU: all but the last few rows go through in slices of this one shape.
GELU_ROWS = 256


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU of a fresh 2-d ``x`` (a matmul's output), in place where that is faster.

    On CPU, ``F.gelu`` hands contiguous fp32 input to a oneDNN primitive that is JIT-compiled
    and cached *per shape*: fed every batch's and every expert's row count, the cache grows the
    process by tens of MB per thousand texts. So whole slices of ``GELU_ROWS`` rows (one shape)
    go through oneDNN in place, and the last ``< GELU_ROWS`` rows through torch's own kernel (a
    transposed view is not contiguous, so oneDNN is not used), which is about 1.6x slower than
    oneDNN's but caches nothing. In place: writing into memory already in use is cheaper than
    into fresh memory.
    """
    if x.device.type != "cpu" or x.dim() != 2 or x.dtype != torch.float32 or not x.is_contiguous():
        return F.gelu(x)
    whole = x.shape[0] - x.shape[0] % GELU_ROWS
    for start in range(0, whole, GELU_ROWS):
        part = x[start : start + GELU_ROWS]
        torch._C._nn.gelu(part, out=part)
    if whole < x.shape[0]:
        tail = x[whole:]
        tail.copy_(F.gelu(tail.t()).t())
    return x


class MLP(nn.Module):
    """fc1 -> exact GELU -> fc2 (the even, dense layers)."""

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=cfg.mlp_fc1_bias)
        self.fc2 = nn.Linear(cfg.n_inner, cfg.n_embd, bias=cfg.mlp_fc2_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_(self.fc1(x)))


class Router(nn.Module):
    """Linear router without bias; ``layer`` matches the checkpoint name ``router.layer``."""

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.layer = nn.Linear(cfg.n_embd, cfg.num_experts, bias=False)


class ExpertWeights(nn.Module):
    """Experts packed expert-major as in the checkpoint: w1, w2 both ``[E*F, H]``.

    Expert e owns rows ``e*F : (e+1)*F`` of both; w1 is used transposed (up), w2 as stored
    (down) — spec §4.5 and gotcha 4.
    """

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        rows = cfg.num_experts * cfg.n_inner
        self.w1 = nn.Parameter(torch.empty(rows, cfg.n_embd))
        self.w2 = nn.Parameter(torch.empty(rows, cfg.n_embd))


class Experts(nn.Module):
    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.ffn = cfg.n_inner
        self.mlp = ExpertWeights(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.n_embd))  # ONE shared output bias

    def grouped(self, x: torch.Tensor, token_of: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Expert outputs (unweighted, no bias) for token slots grouped by expert.

        Slot ``i`` is token ``token_of[i]`` of ``x`` [T, H]; the first ``counts[0]`` slots go to
        expert 0, the next ``counts[1]`` to expert 1, ... Each active expert runs one matmul
        pair on exactly its rows, written in place into the ``[N, H]`` result.
        """
        xs = x.index_select(0, token_of)
        w1, w2 = self.mlp.w1, self.mlp.w2
        y = torch.empty_like(xs)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            rows = slice(e * self.ffn, (e + 1) * self.ffn)
            h = gelu_(xs[start : start + n] @ w1[rows].t())
            torch.mm(h, w2[rows], out=y[start : start + n])
            start += n
        return y


class MoE(nn.Module):
    """Token-choice top-k MoE: fp32 softmax over all experts, then top-k (spec §4)."""

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.num_experts, self.top_k, self.ffn = cfg.num_experts, cfg.moe_top_k, cfg.n_inner
        self.normalize = cfg.moe_normalize_expert_weights
        self.router = Router(cfg)
        self.experts = Experts(cfg)
        self.layer_index = -1
        self.routing_sink: list[RoutingRecord] | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Router in fp32 whatever the model dtype: near-ties flip experts in bf16 (gotcha 13).
        w = self.router.layer.weight
        logits = x.float() @ w.float().t()
        probs = logits.softmax(dim=-1)
        top_w, top_e = probs.topk(self.top_k, dim=-1)
        if self.normalize:  # a number q means: divide by the q-norm of the chosen weights
            q = float(self.normalize)
            top_w = top_w / top_w.norm(p=q, dim=-1, keepdim=True)
        return probs, top_w, top_e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs, top_w, top_e = self.route(x)
        if self.routing_sink is not None:
            self.routing_sink.append(
                RoutingRecord(self.layer_index, probs.detach().cpu(), top_e.cpu(), top_w.cpu())
            )
        return self.dispatch(x, top_w, top_e)

    def dispatch(self, x: torch.Tensor, top_w: torch.Tensor, top_e: torch.Tensor) -> torch.Tensor:
        """Group the T*K (token, expert) assignments by expert; one matmul pair per expert."""
        flat_e = top_e.reshape(-1)
        order = flat_e.argsort(stable=True)
        token_of = order // self.top_k  # which token each sorted slot belongs to
        counts = torch.bincount(flat_e, minlength=self.num_experts).tolist()
        y = self.experts.grouped(x, token_of, counts)
        y.mul_(top_w.reshape(-1)[order].to(y.dtype).unsqueeze(1))
        out = self.experts.bias.to(y.dtype).expand_as(x).clone()
        return out.index_add_(0, token_of, y)


# --------------------------------------------------------------------------------------------
# Block and model


class Block(nn.Module):
    """Post-norm block: h = LN1(x + Attn(x)); x = LN2(h + FFN(h))."""

    def __init__(self, cfg: NomicMoEConfig, moe: bool) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.norm1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp: nn.Module = MoE(cfg) if moe else MLP(cfg)
        self.norm2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        # Residuals added in place into the sublayer's fresh output: one big buffer fewer each.
        h = self.norm1(self.attn(x, batch).add_(x))
        return self.norm2(self.mlp(h).add_(h))


class Encoder(nn.Module):
    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg, cfg.is_moe_layer(i)) for i in range(cfg.n_layer))
        for i, layer in enumerate(self.layers):
            if isinstance(layer.mlp, MoE):
                layer.mlp.layer_index = i


@dataclass
class PackedBatch:
    """Where the real tokens of a padded batch sit, for moving between ``[T, H]`` and ``[B, S, H]``."""

    index: torch.Tensor  # flat positions (b*S + s) of the real tokens, [T]
    shape: tuple[int, int]  # (B, S)
    key_mask: torch.Tensor | None  # additive [B, 1, 1, S] (dtype-min at padding); None: no padding
    token_rotary: torch.Tensor  # complex cos + i sin at each token's position [T, 1, rd/2]
    # (first token, rows, length) of each run of consecutive equal-length rows, when attention
    # runs per run on the packed tokens; None: attention on the padded layout with key_mask.
    runs: list[tuple[int, int, int]] | None = None

    @classmethod
    def from_mask(
        cls, attention_mask: torch.Tensor, cfg: NomicMoEConfig, dtype: torch.dtype,
        packed_attention: bool = False,
    ) -> PackedBatch:
        """Describe a batch; ``packed_attention`` asks for per-run attention (needs right padding)."""
        mask = attention_mask.bool()
        B, S = mask.shape
        index = mask.reshape(-1).nonzero().squeeze(1)
        cos, sin = rotary_tables(S, cfg.rotary_dim, cfg.rotary_emb_base, mask.device)
        half = cfg.rotary_dim // 2
        rotary = torch.complex(cos[:, :half], sin[:, :half])[index % S].unsqueeze(1)
        right_padded = S < 2 or bool((mask[:, 1:] <= mask[:, :-1]).all())
        if packed_attention and right_padded:
            return cls(index, (B, S), None, rotary, runs=_equal_length_runs(mask.sum(1).tolist()))
        key_mask = None
        if index.numel() < B * S:
            key_mask = torch.zeros(B, 1, 1, S, dtype=dtype, device=mask.device)
            key_mask.masked_fill_(~mask[:, None, None, :], torch.finfo(dtype).min)
        return cls(index, (B, S), key_mask, rotary)

    @property
    def padded(self) -> bool:
        return self.index.numel() < self.shape[0] * self.shape[1]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        B, S = self.shape
        if not self.padded:
            return x.view(B, S, -1)
        out = x.new_zeros(B * S, x.shape[-1])
        out.index_copy_(0, self.index, x)
        return out.view(B, S, -1)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return flat if not self.padded else flat.index_select(0, self.index)

    def unpad_heads(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output ``[B, NH, S, Dh]`` -> real tokens ``[T, NH*Dh]`` (one copy)."""
        B, NH, S, Dh = x.shape
        tokens = x.transpose(1, 2)  # [B, S, NH, Dh] view
        if not self.padded:
            return tokens.reshape(B * S, NH * Dh)
        # Gather the real (row, position) pairs straight from the strided view: one copy.
        return tokens[self.index // S, self.index % S].view(-1, NH * Dh)


def _equal_length_runs(lengths: list[int]) -> list[tuple[int, int, int]]:
    """Runs of consecutive rows with the same (non-zero) length: (first token, rows, length)."""
    runs: list[tuple[int, int, int]] = []
    token = 0
    for length in lengths:
        if length and runs and runs[-1][2] == length:
            start, rows, _ = runs[-1]
            runs[-1] = (start, rows + 1, length)
        elif length:
            runs.append((token, 1, length))
        token += length
    return runs


class NomicMoEModel(nn.Module):
    """nomic-embed-text-v2-moe encoder. ``model(input_ids, attention_mask)`` -> ``[B, S, H]``.

    Positions with ``attention_mask == 0`` are returned as zeros: their values are meaningless
    in the reference too (it masks keys only) and pooling must ignore them.

    ``attention`` picks how attention sees the batch: ``"packed"`` runs it per run of
    equal-length rows on the packed tokens (no padding computed; each row's result independent of
    its batch-mates), ``"padded"`` runs one SDPA call on the padded layout with a key mask (one
    kernel launch: better on GPU), ``"auto"`` (default) packed on CPU, padded elsewhere.
    """

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.attention = "auto"
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.emb_ln = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.encoder = Encoder(cfg)

    @property
    def hidden_size(self) -> int:
        return self.config.n_embd

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        dtype = self.emb_ln.weight.dtype
        packed = self.attention == "packed" or (
            self.attention == "auto" and attention_mask.device.type == "cpu"
        )
        batch = PackedBatch.from_mask(attention_mask, self.config, dtype, packed_attention=packed)
        x = self.emb_ln(self.embeddings(input_ids.reshape(-1)[batch.index]))
        for layer in self.encoder.layers:
            x = layer(x, batch)
        return batch.pad(x)


def count_parameters(cfg: NomicMoEConfig) -> tuple[int, int]:
    """(total, active-per-token) parameter counts, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = NomicMoEModel(cfg)
    total = sum(p.numel() for p in model.parameters())
    idle_experts = cfg.num_experts - cfg.moe_top_k
    per_expert = 2 * cfg.n_inner * cfg.n_embd
    active = total - len(cfg.moe_layers) * idle_experts * per_expert
    return total, active


def flops_per_token(cfg: NomicMoEConfig, seq_len: float) -> float:
    """Forward FLOPs per real token (2 per multiply-add), spec §8: projections + attention."""
    H, F_, L = cfg.n_embd, cfg.n_inner, cfg.n_layer
    attn_proj = 4 * H * H
    dense = 2 * H * F_
    moe = cfg.moe_top_k * 2 * H * F_ + H * cfg.num_experts
    macs = sum(attn_proj + (moe if cfg.is_moe_layer(i) else dense) for i in range(L))
    return 2.0 * macs + L * 4 * H * seq_len


def init_random_weights(model: NomicMoEModel, seed: int = 0, std: float = 0.02) -> NomicMoEModel:
    """Fill every parameter (experts included: upstream leaves them uninitialised) reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "emb_ln.weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model
