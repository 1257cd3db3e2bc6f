"""Pre-quantized folders (skmoe.engine.quantized_io): the round trip is bit for bit the in-memory
model, a tampered folder is refused naming the tensor, dtype conflicts are refused, the cache
namespace records method, bits and group size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import skmoe
from skmoe.encoder import load_encoder as load_float_encoder
from skmoe.encoder.checkpoint import CheckpointError
from skmoe.engine.int4 import int4_available
from skmoe.engine.precision import apply_precision, precision_label, supported_precisions
from skmoe.engine.quantized_io import load_encoder, quantization_of, quantize_folder

pytestmark = pytest.mark.skipif(
    not int4_available() or "int8" not in supported_precisions("cpu"),
    reason="this torch lacks the int4 or int8 CPU kernels")

WQKV = "encoder.layers.0.attn.Wqkv"


def _vectors(enc, tiny_moe_path: Path) -> torch.Tensor:
    ref = np.load(tiny_moe_path / "reference_outputs.npz")
    ids = torch.from_numpy(ref["input_ids"]).long()
    mask = torch.from_numpy(ref["attention_mask"]).long()
    with torch.inference_mode():
        return enc.pool(enc(ids, mask), mask)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_moe_path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quantized")
    return {mode: quantize_folder(tiny_moe_path, root / mode, mode) for mode in ("int4", "int8")}


@pytest.mark.parametrize("mode", ["int4", "int8"])
def test_folder_round_trip_is_bitwise_the_in_memory_model(folders, tiny_moe_path, mode):
    loaded = skmoe.load_encoder(folders[mode])
    in_memory = apply_precision(load_float_encoder(tiny_moe_path, device="cpu"), mode)
    got, want = _vectors(loaded, tiny_moe_path), _vectors(in_memory, tiny_moe_path)
    assert torch.equal(got, want)  # bitwise: the same codes, packed by the same kernel op
    fp32 = _vectors(load_float_encoder(tiny_moe_path, device="cpu"), tiny_moe_path)
    assert not torch.equal(got, fp32)  # really quantized
    assert loaded.precision == mode
    assert precision_label(loaded) == precision_label(in_memory)
    assert {type(m).__name__ for m in loaded.backbone.modules()} == {
        type(m).__name__ for m in in_memory.backbone.modules()}


def test_folder_records_the_quantization_and_stores_portable_tensors(folders, tiny_moe_path):
    q = quantization_of(folders["int4"])
    assert (q["precision"], q["bits"], q["group_size"], q["format_version"]) == ("int4", 4, 32, 1)
    assert q["rounding"] == "mse"
    assert [WQKV, "linear"] in q["modules"]
    assert any(kind == "experts" for _, kind in q["modules"])
    assert any(kind == "embedding" for _, kind in q["modules"])
    tensors = load_file(str(folders["int4"] / "model.safetensors"))
    fp32 = load_file(str(tiny_moe_path / "model.safetensors"))
    out_f, in_f = fp32[WQKV + ".weight"].shape
    assert tensors[WQKV + ".qweight"].dtype == torch.uint8
    assert tensors[WQKV + ".qweight"].shape == (out_f, in_f // 2)
    assert tensors[WQKV + ".scales"].dtype == torch.bfloat16
    assert tensors[WQKV + ".zeros"].shape == (out_f, in_f // 32)
    assert not any(k.endswith(".weight") and k.startswith(WQKV) for k in tensors)
    assert "encoder.layers.1.mlp.router.layer.weight" in tensors  # routers stay float32
    q8 = quantization_of(folders["int8"])
    assert q8["precision"] == "int8" and q8["group_size"] is None and q8["bits"] in (7, 8)
    assert load_file(str(folders["int8"] / "model.safetensors"))[WQKV + ".qweight"].dtype == torch.int8
    for side in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (folders["int4"] / side).is_file(), side


def _tampered(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("case, edit, message", [
    ("missing scale", lambda t: t.pop(WQKV + ".scales"),
     rf"missing tensor\(s\): {WQKV}\.scales"),
    ("wrong shape", lambda t: t.__setitem__(WQKV + ".zeros", t[WQKV + ".zeros"][:-1].clone()),
     rf"wrong shape: {WQKV}\.zeros"),
    ("wrong dtype", lambda t: t.__setitem__(WQKV + ".qweight", t[WQKV + ".qweight"].to(torch.int32)),
     rf"wrong dtype: {WQKV}\.qweight: checkpoint I32 vs model uint8"),
    ("float scale", lambda t: t.__setitem__(WQKV + ".scales", t[WQKV + ".scales"].float()),
     rf"wrong dtype: {WQKV}\.scales: checkpoint F32 vs model bfloat16"),
    ("extra tensor", lambda t: t.__setitem__("encoder.layers.0.attn.extra", torch.zeros(3)),
     r"unexpected tensor\(s\): encoder\.layers\.0\.attn\.extra"),
    ("float weight left", lambda t: t.__setitem__(WQKV + ".weight", torch.zeros(3)),
     rf"unexpected tensor\(s\): {WQKV}\.weight"),
])
def test_tampered_folder_is_refused_naming_the_tensor(folders, tmp_path, case, edit, message):
    bad = _tampered(folders["int4"], tmp_path / "bad", edit)
    with pytest.raises(CheckpointError, match=message):
        load_encoder(bad)


def test_nan_scale_is_refused_naming_the_tensor(folders, tmp_path):
    def edit(t):
        t[WQKV + ".scales"][0, 0] = float("nan")

    bad = _tampered(folders["int4"], tmp_path / "nan", edit)
    with pytest.raises(CheckpointError, match=rf"{WQKV}\.scales.*NaN/inf"):
        load_encoder(bad)


def test_recorded_modules_and_version_are_checked(folders, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folders["int4"], bad)
    raw = json.loads((bad / "config.json").read_text())
    raw["quantization_config"]["modules"] = raw["quantization_config"]["modules"][1:]
    (bad / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="recorded quantized modules differ"):
        load_encoder(bad)
    raw["quantization_config"]["format_version"] = 99
    (bad / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_encoder(bad)


def test_folder_without_rounding_loads_as_min_max_and_unknown_rounding_is_refused(
        folders, tmp_path):
    """Folders written before the ``rounding`` key (same layout, min/max scales) still load, under
    their own cache label; a rounding this skmoe does not know is refused, naming it."""
    old = tmp_path / "old"
    shutil.copytree(folders["int4"], old)
    raw = json.loads((old / "config.json").read_text())
    del raw["quantization_config"]["rounding"]
    (old / "config.json").write_text(json.dumps(raw))
    enc, new = load_encoder(old), load_encoder(folders["int4"])
    assert precision_label(enc) == "int4/rtn-asym-g32" != precision_label(new)
    assert skmoe.MoEEmbeddingTransformer(model=str(old))._embedder(
        enc, "", open_cache=False).labels["precision"] == "int4/rtn-asym-g32"
    raw["quantization_config"]["rounding"] = "gptq"
    (old / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="int4 rounding must be one of .*'gptq'"):
        load_encoder(old)


def test_dtype_follows_the_folder_and_a_conflict_is_refused(folders):
    assert load_encoder(folders["int8"], dtype="auto").precision == "int8"
    assert load_encoder(folders["int8"], dtype="int8").precision == "int8"
    with pytest.raises(ValueError, match=r"holds int4 weights .*dtype='float32' conflicts"):
        load_encoder(folders["int4"], dtype="float32")
    with pytest.raises(ValueError, match=r"dtype='int8' conflicts"):
        skmoe.MoEEmbeddingTransformer(model=str(folders["int4"]), dtype="int8").fit_transform(["a"])


def test_float_loader_points_to_the_quantized_one(folders):
    with pytest.raises(CheckpointError, match=r"pre-quantized folder \(int4.*skmoe\.load_encoder"):
        load_float_encoder(folders["int4"])


def test_quantizing_twice_or_into_a_used_folder_is_refused(folders, tiny_moe_path, tmp_path):
    with pytest.raises(ValueError, match="already quantized"):
        quantize_folder(folders["int4"], tmp_path / "again", "int4")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        quantize_folder(tiny_moe_path, tmp_path / "used", "int4")
    with pytest.raises(ValueError, match="int4 or int8"):
        quantize_folder(tiny_moe_path, tmp_path / "f", "bfloat16")


def test_estimator_loads_the_folder_and_the_namespace_records_the_quantization(
        fast_moe, tmp_path):
    texts = ["a first sentence", "another one, longer than the first", "x"]
    g64 = quantize_folder(fast_moe, tmp_path / "g64", "int4", group_size=64)
    g32 = quantize_folder(fast_moe, tmp_path / "g32", "int4")
    folder = skmoe.MoEEmbeddingTransformer(model=str(g32)).fit(texts)
    memory = skmoe.MoEEmbeddingTransformer(model=str(fast_moe), dtype="int4").fit(texts)
    np.testing.assert_array_equal(folder.transform(texts), memory.transform(texts))
    enc = folder.get_encoder()
    labels = [m._embedder(m.get_encoder(), "", open_cache=False).labels["precision"]
              for m in (folder, memory, skmoe.MoEEmbeddingTransformer(model=str(g64)),
                        skmoe.MoEEmbeddingTransformer(model=str(fast_moe)))]
    assert sorted(labels) == ["float32", "int4/mse-asym-g32", "int4/mse-asym-g32",
                                       "int4/mse-asym-g64"]
    # the estimator's (load-free) label is the loaded encoder's own
    assert folder._embedder(enc, "", open_cache=False).labels["precision"] == precision_label(enc)
    ns = {m.cache_namespace(m.get_encoder(), "") for m in (
        folder, memory, skmoe.MoEEmbeddingTransformer(model=str(g64)))}
    assert len(ns) == 3


def test_loading_a_folder_never_quantizes_nor_reads_float_weights(folders, monkeypatch):
    """The modules come from the stored codes: quantizing a real (non-meta) float matrix while
    loading is an error here; only the meta model's shapes are computed."""
    from skmoe.engine import int4, int8

    def refuse(real):
        def wrapped(w, *args, **kwargs):
            assert w.is_meta, "a float weight was quantized while loading a quantized folder"
            return real(w, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(int4, "quantize_int4", refuse(int4.quantize_int4))
    monkeypatch.setattr(int8, "quantize_weight", refuse(int8.quantize_weight))
    for mode in ("int4", "int8"):
        enc = load_encoder(folders[mode])
        kept = ("router", "token_type") + (("word_embeddings",) if mode == "int8" else ())
        floats = [n for n, t in enc.backbone.state_dict().items() if t.dim() == 2
                  and t.is_floating_point() and not any(k in n for k in kept)]
        assert floats == [], floats  # no float matrix but those the mode keeps float32


def test_file_rows_gather_the_stored_rows(folders):
    from skmoe.engine.row_embedding import FileRows, Int8RowEmbedding

    enc = load_encoder(folders["int4"])
    table = next(m for m in enc.backbone.modules() if isinstance(m, Int8RowEmbedding))
    assert isinstance(table.rows_file, FileRows)
    ids = torch.tensor([5, 0, 5, table.num_embeddings - 1, 17])
    assert torch.equal(table.rows_file.gather(ids), table.q.index_select(0, ids))
    assert table.rows_file.gather(ids[:0]).shape == (0, table.embedding_dim)
    with pytest.raises(IndexError, match="out of range"):
        table.rows_file.gather(torch.tensor([table.num_embeddings]))


def test_dense_models_are_refused_clearly(minilm_path, tmp_path):
    with pytest.raises(ValueError, match="MoE model .* only; quantize dense models at load"):
        quantize_folder(minilm_path, tmp_path / "dense", "int8")


def _modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix() or ".": p.stat().st_mode & 0o777
            for p in [folder, *folder.rglob("*")]}


def test_a_write_that_fails_midway_leaves_no_folder_and_a_rerun_succeeds(
        tiny_moe_path, tmp_path, monkeypatch):
    """`skmoe quantize` wrote model.safetensors, config.json and the side files straight into
    --output: killed midway, the folder blocked the rerun ("not an empty folder") and loaded as
    a confusing half model. It is now written in a folder of its own, renamed when complete."""
    import os

    from skmoe.engine import quantized_io

    def broken(src, dst):  # after model.safetensors is written
        assert (dst / "model.safetensors").is_file() and dst.name.endswith(".partial")
        raise OSError(28, "No space left on device")

    out = tmp_path / "q4"
    monkeypatch.setattr(quantized_io, "_side_files", broken)
    with pytest.raises(OSError, match="No space left"):
        quantize_folder(tiny_moe_path, out, "int4")
    assert list(tmp_path.iterdir()) == []  # neither out nor its partial folder
    monkeypatch.undo()
    old = os.umask(0o027)
    try:
        assert quantize_folder(tiny_moe_path, out, "int4") == out
    finally:
        os.umask(old)
    assert quantization_of(out)["precision"] == "int4" and list(tmp_path.iterdir()) == [out]
    # the folder and its files follow the umask (safetensors writes 0600, mkdtemp 0700)
    modes = _modes(out)
    assert modes["."] == 0o750 and modes["model.safetensors"] == 0o640, modes
    assert set(modes.values()) <= {0o750, 0o640}, modes


def test_a_killed_runs_partial_folder_never_loads_and_does_not_block_a_rerun(
        tiny_moe_path, tmp_path):
    """A SIGKILLed run leaves OUT.<host>.<pid>.<random>.partial: refused as a model (it says what
    it is), removed by the next run (its process is gone), never in the way of OUT."""
    import subprocess
    import sys

    from skmoe._partial_files import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f"q8.{_HOST}.{dead.pid}.abc.partial"
    killed.mkdir()
    shutil.copy(tiny_moe_path / "model.safetensors", killed / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unfinished output of a `skmoe quantize` run"):
        load_encoder(killed)
    out = quantize_folder(tiny_moe_path, tmp_path / "q8", "int8")
    assert not killed.exists() and list(tmp_path.iterdir()) == [out]
    assert load_encoder(out).precision == "int8"


def test_an_existing_empty_folder_is_filled_in_place(tiny_moe_path, tmp_path):
    """An existing empty output (a mounted volume whose parent is read-only, a link to a folder)
    was refused after every tensor was quantized once the output was renamed into place: it is
    written inside the folder and its files moved up, config.json last. A killed run's leftover
    inside it does not count as content; a model folder merely named *.partial still loads."""
    import subprocess
    import sys

    from skmoe._partial_files import _HOST

    target = tmp_path / "volume"
    target.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (target / f".skmoe-quantize.{_HOST}.{dead.pid}.abc.partial").mkdir()  # a killed run's
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    assert quantize_folder(tiny_moe_path, link, "int8") == link
    assert link.is_symlink() and not [p for p in target.iterdir() if p.name.startswith(".")]
    assert (target / "config.json").is_file() and load_encoder(link).precision == "int8"
    named = tmp_path / "e5.partial"  # a user's name, not a run's
    shutil.copytree(tiny_moe_path, named)
    assert load_encoder(named).precision is None


def test_an_output_that_cannot_be_written_is_refused_before_quantizing(tiny_moe_path, tmp_path,
                                                                      monkeypatch):
    """A read-only destination failed only after every tensor was quantized, naming the
    partial folder rather than --output. (Root may write anywhere: os.access is stubbed.)"""
    import skmoe.engine.quantized_io as qio

    monkeypatch.setattr(qio.os, "access", lambda path, mode: False)
    monkeypatch.setattr(qio, "load_float_encoder", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(qio.QuantizeRequestError, match=r"--output .*q8: .* is not writable"):
        quantize_folder(tiny_moe_path, tmp_path / "new" / "q8", "int8")


def test_a_full_disk_while_saving_the_weights_is_an_os_error_naming_the_file(tiny_moe_path,
                                                                             tmp_path,
                                                                             monkeypatch):
    """safetensors says a full disk in a SafetensorError (no OSError): the CLI called it "a bug
    in skmoe" and Python callers catching OSError missed it. The partial folder is removed."""
    import errno

    import safetensors.torch

    def full(*args, **kwargs):
        raise safetensors.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match=r"cannot write .*q8.model\.safetensors: No space") as caught:
        quantize_folder(tiny_moe_path, tmp_path / "q8", "int8")
    assert caught.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []

