"""Tiny random checkpoints of the NomicBERT-MoE family with other shapes, written to disk."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from skmoe.encoder.config import NomicMoEConfig
from skmoe.encoder.nomic_moe import NomicMoEModel, init_random_weights

FIXTURE_CONFIG = Path(__file__).resolve().parents[1] / "data" / "nomic-moe-tiny" / "config.json"

# Other widths, depths, expert counts, top-k, MoE spacing, renormalisation and rotary settings.
CONFIGS: dict[str, dict] = {
    "E4-top1-every2": dict(n_embd=32, n_head=2, n_inner=48, n_layer=3, num_experts=4, moe_top_k=1),
    "E6-top3-every3": dict(
        n_embd=48, n_head=3, n_inner=40, n_layer=5, num_experts=6, moe_top_k=3, moe_every_n_layers=3
    ),
    "E3-top2-L1norm": dict(
        n_embd=64, n_head=4, n_inner=32, n_layer=2, num_experts=3, moe_top_k=2,
        moe_normalize_expert_weights=1,
    ),
    "E5-top2-L2norm-halfrotary": dict(
        n_embd=32, n_head=4, n_inner=64, n_layer=3, num_experts=5, moe_top_k=2,
        moe_normalize_expert_weights=2.0, rotary_emb_fraction=0.5, rotary_emb_base=500,
    ),
    "E2-top2-vocab100": dict(
        n_embd=16, n_head=2, n_inner=24, n_layer=4, num_experts=2, moe_top_k=2, vocab_size=100
    ),
}


def raw_config(**overrides) -> dict:
    """The fixture's full config.json (every upstream field) with ``overrides``."""
    raw = json.loads(FIXTURE_CONFIG.read_text())
    raw.update(overrides)
    return raw


def random_state(raw: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random weights with a decisive router and a non-negligible expert branch.

    ``init_random_weights``' std 0.02 leaves router probabilities nearly uniform; scaling the
    router and experts up makes routing and renormalisation visibly change the outputs.
    """
    model = init_random_weights(NomicMoEModel(NomicMoEConfig.from_dict(raw)), seed=seed)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for k in state:
        if k.endswith("router.layer.weight"):
            state[k] *= 25.0
        elif k.endswith(("experts.mlp.w1", "experts.mlp.w2")):
            state[k] *= 5.0
    return state


def write_random_moe(folder: Path, seed: int = 0, **overrides) -> Path:
    """config.json + model.safetensors (real names and packing) for the given overrides."""
    raw = raw_config(**overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(raw, indent=1))
    save_file(random_state(raw, seed), str(folder / "model.safetensors"))
    return folder


def ragged_batch(lengths: list[int], vocab: int, seed: int, pad_id: int = 1, left: bool = False):
    """Random ids (avoiding the pad id) padded to the longest row, right or left."""
    gen = torch.Generator().manual_seed(seed)
    S = max(lengths)
    ids = torch.full((len(lengths), S), pad_id, dtype=torch.long)
    mask = torch.zeros(len(lengths), S, dtype=torch.long)
    for b, n in enumerate(lengths):
        row = torch.randint(3, vocab, (n,), generator=gen)
        cols = slice(S - n, S) if left else slice(0, n)
        ids[b, cols] = row
        mask[b, cols] = 1
    return ids, mask
