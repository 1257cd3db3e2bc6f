"""The nomic-embed-text-v2-moe encoder (NomicBERT with sparse MoE FFNs), in plain PyTorch.

Reads top to bottom like the spec (``nomic-moe-architecture.md`` §3-§4): embeddings ->
embedding LayerNorm -> N post-norm blocks (fused Wqkv, rotary, attention, dense MLP or MoE).
Parameter names equal the checkpoint's tensor names, so ``load_state_dict(strict=True)`` works.

Three things go beyond the reference, none changes the numbers on real tokens (beyond float
rounding):

* **Packed tokens.** The entry point is :meth:`NomicMoEModel.forward_packed`: the real tokens
  of a batch back to back ``[T]`` plus ``cu_seqlens`` (:mod:`skmoe.encoder.packing`). Every op
  runs on real tokens only; attention runs per text (per run of equal-length texts on CPU, a
  varlen kernel on GPU). Off the CPU nothing is read back to the host.
* **Expert-grouped dispatch on the device.** Slots are sorted by chosen expert, counted and
  offset on the device, and the experts run as one grouped GEMM per projection; outputs return
  by the inverse permutation and are summed over the top-k (no atomics: deterministic).
* **Rotary pairs side by side.** The q/k rows of Wqkv are held reordered so that each rotary
  pair is adjacent and the rotation is real-valued and in place, in the model's dtype;
  ``state_dict()`` and ``load_state_dict()`` translate, so checkpoints keep the official layout.

The parts a precision mode may replace are declared by :meth:`NomicMoEModel.replaceable_parts`
(:mod:`skmoe.encoder.parts`).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .config import NomicMoEConfig
from .packing import PackedBatch, pack_padded
from .parts import ExpertKernel, Part, gelu_
from .rotary import (  # noqa: F401 (rotary_tables, apply_rotary: re-exported, as before)
    apply_rotary,
    apply_rotary_pairs_,
    rotary_pair_order,
    rotary_tables,
    token_rotary,
)
from .routing_capture import (  # noqa: F401 (RoutingRecord, capture_routing: re-exported)
    RoutingRecord,
    RoutingSink,
    capture_routing,
)

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
# Attention (its rotary position embedding: skmoe.encoder.rotary)


class Attention(nn.Module):
    """Fused Wqkv (three-major rows), rotary on q/k, bidirectional attention within each text."""

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
        qk = qkv[:, : 2 * H].view(T, 2 * self.n_head, self.head_dim)
        apply_rotary_pairs_(qk[..., : self.rotary_dim], batch.cos, batch.sin, batch.freqs)
        return self.out_proj(batch.attend(qkv, self.n_head, self.head_dim))


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


#: ``torch._grouped_mm`` probed per (device, dtype) in eager mode; read, never probed, while
#: compiling (dynamo would trace the probe into every graph).
_GROUPED_MM_PROBED: dict[tuple[torch.device, torch.dtype], bool] = {}


def _grouped_mm_probe(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` runs for ``dtype`` on an accelerator (tried once, tiny)."""
    key = (device, dtype)
    if key not in _GROUPED_MM_PROBED:
        try:
            x = torch.zeros(16, 16, device=device, dtype=dtype)
            w = torch.zeros(2, 16, 16, device=device, dtype=dtype)
            torch._grouped_mm(x, w, offs=torch.tensor([8, 16], device=device, dtype=torch.int32))
            _GROUPED_MM_PROBED[key] = True
        except (RuntimeError, NotImplementedError, TypeError):
            _GROUPED_MM_PROBED[key] = False
    return _GROUPED_MM_PROBED[key]


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """``torch._grouped_mm`` for these inputs: on CPU for float32/bfloat16/float16, on the meta
    device (and CUDA's kernel) for bfloat16; other devices are probed once, eagerly. Under
    ``torch.compile`` bfloat16 only (the op's fake kernel refuses other dtypes), and the probe's
    eager answer is read (:meth:`NomicMoEModel.compile_layers` probes before compiling; unprobed
    counts as supported)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    compiling = torch.compiler.is_compiling()
    if compiling and dtype != torch.bfloat16:
        return False
    if device.type == "cpu":
        return dtype in (torch.float32, torch.bfloat16, torch.float16)
    if device.type == "meta":
        return dtype == torch.bfloat16
    if compiling:
        return _GROUPED_MM_PROBED.get((device, dtype), True)
    return _grouped_mm_probe(device, dtype)


def grouped_experts(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the experts run as one grouped GEMM per projection (no host sync): on
    accelerators and under ``torch.compile`` where :func:`grouped_mm_supported`. On CPU a loop
    over experts instead: reading the offsets costs nothing there, it runs as fast (loop /
    grouped 0.93-1.04 from 256 to 4,096 tokens at the real sizes, fp32 and bf16:
    benchmarks/expert_kernels.py), and each expert's GELU slices its own rows, as the engine
    always has, so CPU vectors stay the same bit for bit."""
    if device.type == "cpu" and not torch.compiler.is_compiling():
        return False
    return grouped_mm_supported(device, dtype)


class Experts(nn.Module):
    """The experts of one MoE layer (an :class:`~skmoe.encoder.parts.ExpertKernel`)."""

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.num_experts, self.ffn = cfg.num_experts, cfg.n_inner
        self.mlp = ExpertWeights(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.n_embd))  # ONE shared output bias

    def expert_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(up [E, F, H], down [E, H, F])``, ``out x in`` views of the stored weights."""
        E, F_ = self.num_experts, self.ffn
        return self.mlp.w1.view(E, F_, -1), self.mlp.w2.view(E, F_, -1).transpose(1, 2)

    def grouped(self, x: torch.Tensor, token_of: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """See :class:`~skmoe.encoder.parts.ExpertKernel`: one grouped GEMM per projection over
        all experts (no host sync), or, on CPU and where the device lacks one, a loop over
        experts that reads ``offsets`` back to the host (:func:`grouped_experts` decides)."""
        xs = x.index_select(0, token_of)
        up, down = self.expert_weights()
        if grouped_experts(xs.device, xs.dtype):
            h = gelu_(torch._grouped_mm(xs, up.transpose(1, 2), offs=offsets))
            return torch._grouped_mm(h, down.transpose(1, 2), offs=offsets)
        y = torch.empty_like(xs)
        start = 0
        for e, end in enumerate(offsets.tolist()):
            if end > start:
                h = gelu_(xs[start:end] @ up[e].t())
                torch.mm(h, down[e].t(), out=y[start:end])
            start = end
        return y


class MoE(nn.Module):
    """Token-choice top-k MoE: fp32 softmax over all experts, then top-k (spec §4)."""

    def __init__(self, cfg: NomicMoEConfig) -> None:
        super().__init__()
        self.num_experts, self.top_k, self.ffn = cfg.num_experts, cfg.moe_top_k, cfg.n_inner
        self.normalize = cfg.moe_normalize_expert_weights
        self.router = Router(cfg)
        self.experts: ExpertKernel = Experts(cfg)
        self.layer_index = -1
        # None unless a capture_routing block covers this layer (in any thread); see
        # skmoe.encoder.routing_capture
        self.routing_sink: RoutingSink | None = None

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
        sink = self.routing_sink
        if sink is not None:  # a capture covers this layer, in some thread: the sink records
            sink.record(self, probs, top_e, top_w)  # for this call's own captures only
        return self.dispatch(x, top_w, top_e)

    def dispatch(self, x: torch.Tensor, top_w: torch.Tensor, top_e: torch.Tensor) -> torch.Tensor:
        """Group the T*K (token, expert) slots by expert, on the device: a stable ``argsort``
        orders them, ``scatter_add_`` counts each expert's slots and ``cumsum`` makes the group
        offsets. The weighted expert outputs go back to their tokens by the inverse permutation
        and are added to the bias one k at a time, in ascending expert order (the order of the
        former ``index_add_`` combine, so results are unchanged bit for bit): no atomics, so a
        token's result is the same in any run."""
        T, K = top_e.shape
        flat_e = top_e.reshape(-1)
        order = flat_e.argsort(stable=True)
        counts = torch.zeros(self.num_experts, dtype=torch.int64, device=x.device)
        counts.scatter_add_(0, flat_e, torch.ones_like(flat_e))
        offsets = counts.cumsum(0).to(torch.int32)
        y = self.experts.grouped(x, order // K, offsets)
        y.mul_(top_w.reshape(-1)[order].to(y.dtype).unsqueeze(1))
        inverse = torch.empty_like(order).scatter_(
            0, order, torch.arange(T * K, device=order.device))
        # each token's K slots, in sorted position order = ascending expert id
        y = y.index_select(0, inverse.view(T, K).sort(dim=1).values.reshape(-1)).view(T, K, -1)
        out = self.experts.bias.to(y.dtype).expand(T, -1).clone()
        for k in range(K):
            out.add_(y[:, k])
        return out


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


class NomicMoEModel(nn.Module):
    """nomic-embed-text-v2-moe encoder.

    :meth:`forward_packed` ``(input_ids [T], cu_seqlens [B+1], max_seqlen)`` -> ``[T, H]`` is the
    entry point: packed real tokens in, their hidden states out. ``model(input_ids,
    attention_mask)`` -> ``[B, S, H]`` packs a padded batch and calls it (positions with
    ``attention_mask == 0`` come back as zeros: pooling must ignore them).

    ``attention`` picks the attention kernel (see :class:`~skmoe.encoder.packing.PackedBatch`):
    ``"runs"`` (per run of equal-length texts, on the host-known lengths; CPU), ``"varlen"``
    (FlashAttention's varlen kernel on the packed tokens; CUDA, and the meta device),
    ``"padded"`` (SDPA on a padded layout built on the device), or ``"auto"`` (default: runs on
    CPU, varlen where the kernel exists, else padded). Off the CPU no path reads a value back to
    the host.
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

    def forward_packed(
        self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int
    ) -> torch.Tensor:
        """Hidden states ``[T, H]`` of packed tokens: ``input_ids`` [T], text ``b`` being tokens
        ``cu_seqlens[b]:cu_seqlens[b+1]`` (int32 ``[B+1]``), ``max_seqlen`` the longest text
        (an upper bound is fine)."""
        cfg = self.config
        dtype = self.emb_ln.weight.dtype
        batch = PackedBatch.build(cu_seqlens, max_seqlen, input_ids.shape[0], dtype,
                                  self.attention, functools.partial(
                                      token_rotary, rotary_dim=cfg.rotary_dim,
                                      base=cfg.rotary_emb_base, dtype=dtype))
        x = self.emb_ln(self.embeddings(input_ids))
        for layer in self.encoder.layers:
            x = layer(x, batch)
        return x

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        B, S = attention_mask.shape
        ids, cu, max_seqlen, index = pack_padded(input_ids, attention_mask)
        x = self.forward_packed(ids, cu, max_seqlen)
        out = x.new_zeros(B * S, x.shape[-1])
        return out.index_copy_(0, index, x).view(B, S, -1)

    def get_input_embeddings(self) -> nn.Module:
        """The token-embedding table (the transformers name; int4 stores it as int8 rows)."""
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, module: nn.Module) -> None:
        self.embeddings.word_embeddings = module

    # -- what precision modes may replace (skmoe.encoder.parts) --------------------------------
    def replaceable_parts(self) -> list[Part]:
        """Every replaceable submodule with its kind; see :mod:`skmoe.encoder.parts`."""
        parts: list[Part] = []
        for i, layer in enumerate(self.encoder.layers):
            p = f"encoder.layers.{i}."
            parts += [Part(p + "attn.Wqkv", "projection", layer.attn.Wqkv),
                      Part(p + "attn.out_proj", "projection", layer.attn.out_proj)]
            if isinstance(layer.mlp, MoE):
                parts += [Part(p + "mlp.router.layer", "router", layer.mlp.router.layer),
                          Part(p + "mlp.experts", "experts", layer.mlp.experts)]
            else:
                parts.append(Part(p + "mlp", "feed_forward", layer.mlp))
        return parts

    def replace_part(self, name: str, module: nn.Module) -> nn.Module:
        """Put ``module`` in place of the part ``name``; return the old one."""
        known = {p.name: p for p in self.replaceable_parts()}
        if name not in known:
            raise KeyError(f"{name!r} is not a replaceable part of this model")
        if known[name].kind == "router":
            raise ValueError(f"{name!r} is a router: it stays float32 in every mode")
        parent, _, attr = name.rpartition(".")
        setattr(self.get_submodule(parent), attr, module)
        return known[name].module

    def compile_layers(self, **options: object) -> NomicMoEModel:
        """Compile every block with ``torch.compile`` (``dynamic=True`` by default: token counts
        vary per batch); ``options`` go to ``torch.compile``. Returns the model."""
        options.setdefault("dynamic", True)
        weight = self.emb_ln.weight
        grouped_mm_supported(weight.device, weight.dtype)  # probed eagerly, read while compiling
        for layer in self.encoder.layers:
            layer.compile(**options)
        return self


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
