"""``skmoe info`` on sentence-transformers folders with Dense modules: the head's parameters are
counted, and a hub id reports the head's width (its small files are fetched, never weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_dense_modules import variant, write_dense, write_modules

from skmoe.cli import main
from skmoe.encoder.info import model_info

HEAD = [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense"),
        ("Dense", "3_Dense"), ("Normalize", "4_Normalize")]


@pytest.fixture
def moe(tmp_path: Path, fast_moe: Path) -> Path:
    """The tiny random MoE (64-d) with Dense 64->24 (bias) and Dense 24->16 (no bias)."""
    folder = variant(fast_moe, tmp_path / "moe")
    write_dense(folder / "2_Dense", 64, 24)
    write_dense(folder / "3_Dense", 24, 16, bias=False)
    write_modules(folder, HEAD)
    return folder


def test_dense_parameters_are_counted(moe, fast_moe, capsys):
    bare, info = model_info(fast_moe), model_info(moe)
    head = 64 * 24 + 24 + 24 * 16
    assert info["total_parameters"] == bare["total_parameters"] + head
    assert info["active_parameters"] == bare["active_parameters"] + head
    assert (info["hidden_size"], info["embedding_dim"]) == (64, 16)
    assert main(["info", str(moe), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_parameters"] == info["total_parameters"]


def test_hub_id_reports_the_dense_width_and_parameters(moe, fast_moe, tmp_path, monkeypatch):
    """A hub download writes only the files asked for into the snapshot: the modules' configs
    must be asked for, or the hidden size is taken for the output width."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    plain = variant(fast_moe, tmp_path / "plain")
    (plain / "modules.json").unlink(missing_ok=True)
    remote = {"org/moe-with-dense": moe, "org/plain": plain}
    asked: list[str] = []

    def download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False):
        asked.append(filename)
        src, snapshot = remote[repo_id] / filename, tmp_path / repo_id / "snapshots" / "0123abcd"
        if not src.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, snapshot / filename)
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    info = model_info("org/moe-with-dense")
    assert (info["hidden_size"], info["embedding_dim"]) == (64, 16)
    assert info["total_parameters"] == model_info(moe)["total_parameters"]
    assert info["revision"] is None and info["modules"].startswith("mean pooling -> Dense 64->24")
    assert not any(name.endswith(".safetensors") for name in asked)
    # a model without modules.json: only config.json and the (absent) modules.json are asked for
    asked.clear()
    assert model_info("org/plain")["embedding_dim"] == 64
    assert asked == ["config.json", "modules.json"]
