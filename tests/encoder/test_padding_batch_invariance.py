"""Internal consistency for the fixture and other configs of the family: a real token's state
and routing depend on its own row only, not on padding amount, side, or batch-mates."""

from __future__ import annotations

import pytest
import torch
from _random_models import CONFIGS, ragged_batch, write_random_moe

from skmoe import capture_routing, load_encoder

TOL = 1e-5
LENGTHS = [11, 5, 1, 8]


@pytest.fixture(scope="module", params=["fixture", *sorted(CONFIGS)])
def encoder(request, tiny_moe_path, tmp_path_factory):
    if request.param == "fixture":
        folder = tiny_moe_path
    else:
        folder = write_random_moe(tmp_path_factory.mktemp("inv"), seed=11, **CONFIGS[request.param])
    return load_encoder(folder, device="cpu", dtype="float32")


def run(enc, ids, mask):
    with torch.inference_mode(), capture_routing(enc) as records:
        hidden = enc(ids, mask)
    return hidden, records


def real_rows(hidden, mask):
    """Each row's real-token states, in token order."""
    return [hidden[b][mask[b].bool()] for b in range(hidden.shape[0])]


def per_row_routing(records, mask):
    """Split each record's row-major real tokens back into rows: {layer: [experts of row b]}."""
    counts = mask.sum(1).tolist()
    return {r.layer: list(torch.split(r.top_experts, counts)) for r in records}


def test_batch_vs_single_rows(encoder):
    vocab = encoder.backbone.config.vocab_size
    ids, mask = ragged_batch(LENGTHS, vocab, seed=2)
    hidden, records = run(encoder, ids, mask)
    batch_rows, batch_routes = real_rows(hidden, mask), per_row_routing(records, mask)
    for b, n in enumerate(LENGTHS):
        alone, alone_records = run(encoder, ids[b : b + 1, :n], mask[b : b + 1, :n])
        assert (alone[0] - batch_rows[b]).abs().max() < TOL
        for r in alone_records:
            assert torch.equal(r.top_experts, batch_routes[r.layer][b])


def test_extra_padding_changes_nothing(encoder):
    vocab = encoder.backbone.config.vocab_size
    ids, mask = ragged_batch(LENGTHS, vocab, seed=4)
    padded_ids = torch.cat([ids, torch.full((len(LENGTHS), 6), 1)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(len(LENGTHS), 6, dtype=mask.dtype)], dim=1)
    h1, r1 = run(encoder, ids, mask)
    h2, r2 = run(encoder, padded_ids, padded_mask)
    assert (h1 - h2[:, : ids.shape[1]]).abs().max() < TOL
    assert (h2[:, ids.shape[1] :] == 0).all()
    for a, b in zip(r1, r2, strict=True):
        assert torch.equal(a.top_experts, b.top_experts)
        assert (a.probs - b.probs).abs().max() < 1e-6


def test_left_vs_right_padding(encoder):
    vocab = encoder.backbone.config.vocab_size
    right_ids, right_mask = ragged_batch(LENGTHS, vocab, seed=6)
    left_ids, left_mask = ragged_batch(LENGTHS, vocab, seed=6, left=True)
    hr, rr = run(encoder, right_ids, right_mask)
    hl, rl = run(encoder, left_ids, left_mask)
    for a, b in zip(real_rows(hr, right_mask), real_rows(hl, left_mask), strict=True):
        assert (a - b).abs().max() < TOL  # rotary sees only position differences
    for a, b in zip(rr, rl, strict=True):
        assert torch.equal(a.top_experts, b.top_experts)
    pooled_r, pooled_l = encoder.pool(hr, right_mask), encoder.pool(hl, left_mask)
    assert (pooled_r - pooled_l).abs().max() < TOL


def test_no_attention_mask_means_all_real(encoder):
    vocab = encoder.backbone.config.vocab_size
    ids, mask = ragged_batch([7, 7], vocab, seed=8)
    with torch.inference_mode():
        assert torch.equal(encoder(ids), encoder(ids, mask))
