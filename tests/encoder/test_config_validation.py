"""config.json parsing: unsupported values name their field, MoE placement follows upstream,
absent fields take upstream's defaults, parameter counts of the real config."""

from __future__ import annotations

import json

import pytest
from _random_models import raw_config

from skmoe.encoder import NomicMoEConfig, UnsupportedConfigError, count_parameters, load_encoder


@pytest.mark.parametrize(
    "field, value",
    [
        ("prenorm", True),
        ("rotary_emb_interleaved", True),
        ("expert_choice_router", True),
        ("num_shared_experts", 1),
        ("causal", True),
        ("parallel_block", True),
        ("use_rms_norm", True),
        ("rotary_emb_scale_base", 512),
        ("rotary_scaling_factor", 2.0),
        ("activation_function", "swiglu"),
        ("activation_function", "geglu"),
        ("add_pooling_layer", True),
        ("model_type", "bert"),
        ("rotary_emb_fraction", 0.0),
        ("rotary_emb_fraction", 1.5),
        ("n_head", 5),
        ("moe_top_k", 9),
        ("moe_top_k", 0),
        ("moe_normalize_expert_weights", -1),
        ("type_vocab_size", 0),
        ("num_heads_kv", 2),
        ("rotary_head_dim", True),
    ],
)
def test_unsupported_value_names_the_field(field, value):
    with pytest.raises(UnsupportedConfigError, match=repr(field)):
        NomicMoEConfig.from_dict(raw_config(**{field: value}))


def test_unsupported_field_refused_at_load_time(tiny_moe_path, tmp_path):
    folder = tmp_path / "prenorm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(raw_config(prenorm=True)))
    (folder / "model.safetensors").symlink_to(tiny_moe_path / "model.safetensors")
    with pytest.raises(UnsupportedConfigError, match="'prenorm' = True"):
        load_encoder(folder)


@pytest.mark.parametrize(
    "every, layers, expected",
    [
        (2, 12, [1, 3, 5, 7, 9, 11]),  # the released model: layer 0 is dense
        (2, 4, [1, 3]),
        (3, 12, [1, 4, 7, 10]),
        (3, 5, [1, 4]),
        (4, 9, [1, 5]),
        (1, 6, []),  # upstream's i % 1 == 1 never holds
        (0, 6, []),  # upstream: no MoE layers when moe_every_n_layers <= 0
    ],
)
def test_moe_layers_follow_upstream_rule(every, layers, expected):
    cfg = NomicMoEConfig.from_dict(raw_config(moe_every_n_layers=every, n_layer=layers))
    assert cfg.moe_layers == expected
    assert [i for i in range(layers) if cfg.is_moe_layer(i)] == expected


def test_no_experts_means_dense():
    cfg = NomicMoEConfig.from_dict(raw_config(num_experts=0))
    assert not cfg.is_moe and cfg.moe_layers == []


def test_real_config(nomic_config_path):
    cfg = NomicMoEConfig.from_file(nomic_config_path)
    assert (cfg.n_embd, cfg.n_head, cfg.n_inner, cfg.n_layer) == (768, 12, 3072, 12)
    assert (cfg.num_experts, cfg.moe_top_k, cfg.vocab_size) == (8, 2, 250048)
    assert cfg.moe_layers == [1, 3, 5, 7, 9, 11]
    assert not cfg.moe_normalize_expert_weights
    assert count_parameters(cfg) == (475_292_928, 305_423_616)
    # the dataclass defaults are the released model
    assert count_parameters(NomicMoEConfig()) == (475_292_928, 305_423_616)


def test_absent_fields_take_upstream_defaults():
    raw = raw_config()
    for name in ("n_inner", "type_vocab_size", "rotary_emb_base", "moe_normalize_expert_weights"):
        del raw[name]
    cfg = NomicMoEConfig.from_dict(raw)
    assert cfg.n_inner == 4 * cfg.n_embd
    assert cfg.type_vocab_size == 2
    assert cfg.rotary_emb_base == 1000
    assert not cfg.moe_normalize_expert_weights
    # absent spacing -> upstream builds no MoE layer at all
    raw = raw_config()
    del raw["moe_every_n_layers"]
    assert NomicMoEConfig.from_dict(raw).moe_layers == []
    # absent rotary fraction -> upstream's 0.0 (learned positions), which skmoe does not implement
    raw = raw_config()
    del raw["rotary_emb_fraction"]
    with pytest.raises(UnsupportedConfigError, match="'rotary_emb_fraction'"):
        NomicMoEConfig.from_dict(raw)


def test_gelu_names_all_mean_exact_gelu():
    """Upstream's encoder blocks use exact erf GELU for every non-gated activation name."""
    for name in ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        assert NomicMoEConfig.from_dict(raw_config(activation_function=name)).n_embd == 64


def test_vocab_rounded_up_like_upstream():
    cfg = NomicMoEConfig.from_dict(raw_config(vocab_size=250002, pad_vocab_size_multiple=64))
    assert cfg.vocab_size == 250048


def test_normalize_true_means_l1():
    assert NomicMoEConfig.from_dict(raw_config(moe_normalize_expert_weights=True)).moe_normalize_expert_weights == 1.0


def test_unknown_fields_are_kept_not_fatal():
    cfg = NomicMoEConfig.from_dict(raw_config(some_future_field=3))
    assert cfg.extra["some_future_field"] == 3
    assert cfg.to_dict()["some_future_field"] == 3
    assert NomicMoEConfig.from_dict(cfg.to_dict()) == cfg
