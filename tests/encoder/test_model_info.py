"""model_info / format_model_info: sizes and parameter counts from config.json alone."""

from __future__ import annotations

import json
import shutil

import pytest

from skmoe import load_encoder
from skmoe.encoder import ModelNotAvailableError, NomicMoEConfig, UnsupportedConfigError
from skmoe.encoder.info import format_model_info, model_info

TOTAL, ACTIVE = 475_292_928, 305_423_616


@pytest.fixture(scope="module")
def real_config(nomic_config_path):
    return nomic_config_path


def check_real(info):
    assert info["total_parameters"] == TOTAL and info["active_parameters"] == ACTIVE
    assert info["moe_layers"] == [1, 3, 5, 7, 9, 11]
    assert (info["experts"], info["top_k"], info["hidden_size"], info["layers"]) == (8, 2, 768, 12)
    assert info["vocab_size"] == 250048 and info["model_type"] == "nomic_bert"


def test_real_config_file_folder_and_object(real_config, tmp_path):
    for_file = model_info(real_config)
    check_real(for_file)
    assert for_file["weights"] is False and for_file["revision"] is None and for_file["fingerprint"] is None
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(real_config, folder / "config.json")
    check_real(model_info(folder))
    check_real(model_info(NomicMoEConfig.from_file(real_config)))


def test_format_prints_total_and_active(real_config):
    text = format_model_info(model_info(real_config))
    assert "475,292,928" in text and "305,423,616" in text
    assert "1, 3, 5, 7, 9, 11" in text and "top-2" in text
    assert "not present" in text


def test_folder_with_weights_reports_revision_and_fingerprint(tiny_moe_path):
    info = model_info(tiny_moe_path)
    assert info["weights"] and info["revision"] == "local"
    assert info["fingerprint"] == load_encoder(tiny_moe_path).source.fingerprint
    assert info["total_parameters"] == 724_928  # fixtures/nomic-moe-tiny/reference_summary.json
    assert info["fingerprint"] in format_model_info(info)


def test_other_spacing_changes_active_count(real_config, tmp_path):
    raw = json.loads(real_config.read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(raw, moe_every_n_layers=3, num_experts=4, moe_top_k=1)))
    info = model_info(path)
    assert info["moe_layers"] == [1, 4, 7, 10]
    per_expert = 2 * 3072 * 768
    assert info["total_parameters"] - info["active_parameters"] == 4 * 3 * per_expert


def test_dense_model(minilm_path, minilm_encoder):
    info = model_info(minilm_path)
    assert info["experts"] == 0 and info["moe_layers"] == []
    assert info["hidden_size"] == 384 and info["layers"] == 6
    loaded = sum(p.numel() for p in minilm_encoder.backbone.parameters())
    assert info["total_parameters"] == info["active_parameters"] == loaded
    assert "experts" not in format_model_info(info)


def test_errors(tmp_path, real_config):
    with pytest.raises(ModelNotAvailableError):
        model_info(tmp_path / "nothing" / "here" / "x")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(dict(json.loads(real_config.read_text()), prenorm=True)))
    with pytest.raises(UnsupportedConfigError, match="'prenorm'"):
        model_info(bad)
