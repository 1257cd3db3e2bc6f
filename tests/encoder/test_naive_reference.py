"""skmoe's NomicBERT-MoE against a slow per-token reference written from the spec (§3-§4).

The reference is first checked against the official outputs, then used as the oracle for other
configs of the family (widths, depths, expert counts, top-k, MoE spacing, renormalisation).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _naive_nomic_moe import naive_forward
from _random_models import CONFIGS, ragged_batch, write_random_moe
from safetensors.torch import load_file

from skmoe import capture_routing, load_encoder


def test_naive_reference_reproduces_official_outputs(tiny_moe_path):
    ref = np.load(tiny_moe_path / "reference_outputs.npz")
    cfg = json.loads((tiny_moe_path / "config.json").read_text())
    hidden, routing = naive_forward(
        load_file(tiny_moe_path / "model.safetensors"), cfg,
        torch.from_numpy(ref["input_ids"]).long(), torch.from_numpy(ref["attention_mask"]).long(),
    )
    real = ref["attention_mask"].astype(bool)
    assert np.abs(hidden.numpy()[real] - ref["last_hidden_state"][real]).max() < 1e-5
    assert sorted(routing) == [1, 3]
    for layer, r in routing.items():
        key = f"cap.layer{layer}.router"
        np.testing.assert_array_equal(r["experts"].numpy(), ref[f"{key}.top_experts"][real.reshape(-1)])
        assert np.abs(r["probs"].numpy() - ref[f"{key}.probs"][real.reshape(-1)]).max() < 1e-6


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def random_checkpoint(request, tmp_path_factory):
    overrides = CONFIGS[request.param]
    folder = write_random_moe(tmp_path_factory.mktemp(request.param), seed=7, **overrides)
    return folder, json.loads((folder / "config.json").read_text())


def test_random_config_matches_naive_reference(random_checkpoint):
    folder, cfg = random_checkpoint
    enc = load_encoder(folder, device="cpu", dtype="float32")
    ids, mask = ragged_batch([9, 4, 1, 7], cfg["vocab_size"], seed=3)
    with torch.inference_mode(), capture_routing(enc) as records:
        hidden = enc(ids, mask)
    ref_hidden, ref_routing = naive_forward(load_file(folder / "model.safetensors"), cfg, ids, mask)

    real = mask.bool()
    assert (hidden[real].double() - ref_hidden[real]).abs().max() < 1e-5
    assert [r.layer for r in records] == sorted(ref_routing) == enc.moe_config.moe_layers
    for r in records:
        ref = ref_routing[r.layer]
        assert torch.equal(r.top_experts, ref["experts"])
        assert (r.probs.double() - ref["probs"]).abs().max() < 1e-6
        assert (r.top_weights.double() - ref["weights"]).abs().max() < 1e-6


@pytest.mark.parametrize("q", [1, 2.0])
def test_normalize_expert_weights(q, tmp_path):
    """Renormalisation happens only when configured, as the q-norm of the chosen weights."""
    shape = dict(n_embd=32, n_head=2, n_inner=48, n_layer=2, num_experts=4, moe_top_k=2)
    plain = write_random_moe(tmp_path / "plain", seed=5, **shape)
    normed = write_random_moe(tmp_path / "normed", seed=5, moe_normalize_expert_weights=q, **shape)
    ids, mask = ragged_batch([6, 3], 1024, seed=1)

    outs = {}
    for name, folder in (("plain", plain), ("normed", normed)):
        enc = load_encoder(folder, device="cpu")
        with torch.inference_mode(), capture_routing(enc) as records:
            outs[name] = (enc(ids, mask), records[0])
    (h_plain, r_plain), (h_norm, r_norm) = outs["plain"], outs["normed"]

    # same router, same choices; only the weights differ
    assert torch.equal(r_plain.top_experts, r_norm.top_experts)
    assert torch.allclose(r_plain.probs, r_norm.probs)
    assert (r_plain.top_weights.sum(-1) < 1 - 1e-3).all()
    norms = torch.linalg.vector_norm(r_norm.top_weights, ord=q, dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    expected = r_plain.top_weights / torch.linalg.vector_norm(r_plain.top_weights, ord=q, dim=-1, keepdim=True)
    assert torch.allclose(r_norm.top_weights, expected, atol=1e-6)
    # and it changes the model's output
    assert (h_plain - h_norm)[mask.bool()].abs().max() > 1e-3

    cfg = json.loads((normed / "config.json").read_text())
    ref_hidden, _ = naive_forward(load_file(normed / "model.safetensors"), cfg, ids, mask)
    assert (h_norm[mask.bool()].double() - ref_hidden[mask.bool()]).abs().max() < 1e-5
