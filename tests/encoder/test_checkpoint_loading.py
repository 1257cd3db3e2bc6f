"""Strict loading from local folders: what is refused, with which message, and what loads."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from skmoe import capture_routing, load_encoder
from skmoe.encoder import CheckpointError
from skmoe.encoder.dense import load_dense


@pytest.fixture(scope="module")
def tiny_state(tiny_moe_path):
    return load_file(tiny_moe_path / "model.safetensors")


def checkpoint(folder, tiny_moe_path, tensors=None):
    """A copy of the tiny fixture's config with the given tensors (default: the fixture's)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_moe_path / "config.json", folder / "config.json")
    if tensors is not None:
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


def forward(enc, ids=None):
    ids = torch.tensor([[0, 5, 17, 99, 2], [0, 8, 2, 1, 1]]) if ids is None else ids
    mask = (ids != 1).long()
    with torch.inference_mode():
        return enc(ids, mask)


def test_missing_tensor(tiny_moe_path, tiny_state, tmp_path):
    state = dict(tiny_state)
    del state["encoder.layers.3.mlp.experts.bias"]
    folder = checkpoint(tmp_path / "m", tiny_moe_path, state)
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\): encoder\.layers\.3\.mlp\.experts\.bias"):
        load_encoder(folder)


def test_extra_tensor(tiny_moe_path, tiny_state, tmp_path):
    # a router on a dense layer: what an off-by-one MoE placement would produce
    state = dict(tiny_state, **{"encoder.layers.0.mlp.router.layer.weight": torch.zeros(8, 64)})
    folder = checkpoint(tmp_path / "x", tiny_moe_path, state)
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\): encoder\.layers\.0\.mlp\.router"):
        load_encoder(folder)


def test_wrong_shape(tiny_moe_path, tiny_state, tmp_path):
    state = dict(tiny_state)
    w2 = "encoder.layers.1.mlp.experts.mlp.w2"
    state[w2] = state[w2].reshape(8, 256, 64).transpose(1, 2).reshape(8 * 64, 256).contiguous()
    folder = checkpoint(tmp_path / "s", tiny_moe_path, state)
    with pytest.raises(CheckpointError, match=r"wrong shape: encoder\.layers\.1\.mlp\.experts\.mlp\.w2: "
                       r"checkpoint \(512, 256\) vs model \(2048, 64\)"):
        load_encoder(folder)


def test_config_that_disagrees_with_weights(tiny_moe_path, tmp_path):
    folder = tmp_path / "wider"
    checkpoint(folder, tiny_moe_path)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(raw, n_inner=128)))
    shutil.copy(tiny_moe_path / "model.safetensors", folder)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_encoder(folder)


def test_pickle_only_folder_is_refused_without_unpickling(tiny_moe_path, tmp_path):
    folder = checkpoint(tmp_path / "p", tiny_moe_path)
    # not a valid pickle: if skmoe tried to unpickle it, the error would be a different one
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model\.bin\).*safetensors"):
        load_encoder(folder)


def test_folder_without_weights_or_config(tiny_moe_path, tmp_path):
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_encoder(checkpoint(tmp_path / "w", tiny_moe_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_encoder(empty)


def test_sharded_index_loads(tiny_moe_path, tiny_state, tmp_path):
    folder = checkpoint(tmp_path / "sharded", tiny_moe_path)
    names = sorted(tiny_state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tiny_state[k] for k in keys}, str(folder / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    sharded = load_encoder(folder, device="cpu")
    single = load_encoder(tiny_moe_path, device="cpu")
    for (ka, a), (kb, b) in zip(sharded.state_dict().items(), single.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b)
    assert (forward(sharded) - forward(single)).abs().max() < 1e-6
    assert sharded.source.fingerprint != single.source.fingerprint  # different files


def test_single_file_wins_over_shards_as_in_transformers(minilm_path, tmp_path):
    """transformers loads model.safetensors before an index: skmoe fingerprinted the shards while
    the dense model ran the single file, so replacing that file served stale cached vectors."""
    folder = tmp_path / "both"
    folder.mkdir()
    for f in minilm_path.iterdir():
        (folder / f.name).symlink_to(f.resolve())
    state = load_file(str(minilm_path / "model.safetensors"))
    names = sorted(state)
    (folder / "model-00001-of-00001.safetensors").unlink(missing_ok=True)
    save_file({k: v + 0.5 for k, v in state.items()}, str(folder / "model-00001-of-00001.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": dict.fromkeys(names, "model-00001-of-00001.safetensors")}))
    both, single = load_encoder(folder, device="cpu"), load_encoder(minilm_path, device="cpu")
    ids = torch.tensor([[101, 7592, 2088, 102]])
    mask = torch.ones_like(ids)
    assert torch.equal(both(ids, mask), single(ids, mask))  # the single file ran ...
    assert both.source.fingerprint == single.source.fingerprint  # ... and is what is fingerprinted


def test_folder_without_tokenizer(fast_moe, minilm_path, tmp_path):
    weights = tmp_path / "weights-only"
    weights.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(fast_moe / name, weights / name)
    enc = load_encoder(weights, device="cpu")
    assert enc.tokenizer is None
    assert forward(enc).shape == (2, 5, enc.embedding_dim)  # ids in, states out: no tokenizer
    with pytest.raises(RuntimeError, match="no tokenizer files; pass tokenizer=PATH"):
        enc.tokenize(["hello"])
    # tokenizer=PATH takes the tokenizer from another folder (a small BERT one here: fast to load)
    with_tok = load_encoder(weights, device="cpu", tokenizer=minilm_path)
    ids, truncated = with_tok.tokenize(["hello world"])
    assert ids == [[101, 7592, 2088, 102]] and truncated == []


def test_moe_config_never_reaches_automodel(tiny_moe_path, tmp_path, monkeypatch):
    raw = json.loads((tiny_moe_path / "config.json").read_text())
    with pytest.raises(ValueError, match="native model, not transformers.AutoModel"):
        load_dense(tiny_moe_path, raw)
    # any config with num_experts is refused, whatever its model_type says
    with pytest.raises(ValueError, match="native model"):
        load_dense(tmp_path, {"model_type": "bert", "num_experts": 4})
    # and load_encoder builds the native model without touching AutoModel at all
    import transformers

    def boom(*args, **kwargs):
        raise AssertionError("AutoModel must not be used for a MoE checkpoint")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", boom)
    assert load_encoder(tiny_moe_path).is_moe


def test_fingerprint_tracks_weights(tiny_moe_path, tiny_state, tmp_path):
    same = shutil.copytree(tiny_moe_path, tmp_path / "same")  # weights, config and side files
    changed = dict(tiny_state)
    changed["emb_ln.bias"] = changed["emb_ln.bias"] + 1e-3
    other = checkpoint(tmp_path / "other", tiny_moe_path, changed)
    fp = load_encoder(tiny_moe_path).source.fingerprint
    assert load_encoder(same).source.fingerprint == fp
    assert load_encoder(other).source.fingerprint != fp
    assert load_encoder(tiny_moe_path).source.revision == "local"


def test_bfloat16_keeps_router_in_fp32(tiny_moe_path):
    enc = load_encoder(tiny_moe_path, device="cpu", dtype="bfloat16")
    assert enc.dtype == torch.bfloat16
    with capture_routing(enc) as records:
        hidden = forward(enc)
    assert hidden.dtype == torch.bfloat16
    assert all(r.probs.dtype == torch.float32 for r in records)
    ref = forward(load_encoder(tiny_moe_path, device="cpu", dtype="float32"))
    assert (hidden.float() - ref).abs().max() < 0.1  # same model, lower precision


def test_bad_dtype_name(tiny_moe_path):
    with pytest.raises(ValueError, match="dtype must be one of float32, .*int4.* got 'int3'"):
        load_encoder(tiny_moe_path, dtype="int3")
    # skmoe.load_encoder takes the quantized modes too (the float loader of skmoe.encoder not)
    assert load_encoder(tiny_moe_path, dtype="int8").precision == "int8"
    from skmoe.encoder import load_encoder as load_float

    with pytest.raises(ValueError, match="dtype must be one of"):
        load_float(tiny_moe_path, dtype="int8")


@pytest.fixture(scope="module")
def minilm_state(minilm_path):
    return load_file(minilm_path / "model.safetensors")


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", r"missing tensor\(s\): encoder\.layer\.2\.attention\.self\.query\.weight"),
        ("shape", r"wrong shape: encoder\.layer\.2\.attention\.self\.query\.weight: checkpoint \(384, 383\)"),
        ("extra", r"unexpected tensor\(s\): encoder\.layer\.9\.attention\.self\.query\.weight"),
    ],
)
def test_dense_checkpoint_errors(case, pattern, minilm_path, minilm_state, tmp_path):
    folder = tmp_path / case
    shutil.copytree(minilm_path, folder)
    state = dict(minilm_state)
    name = "encoder.layer.2.attention.self.query.weight"
    if case == "missing":
        del state[name]
    elif case == "shape":
        state[name] = torch.zeros(384, 383)
    else:  # a layer the 6-layer config does not have
        state["encoder.layer.9.attention.self.query.weight"] = state[name].clone()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=pattern):
        load_encoder(folder)


def test_dense_ignores_heads_of_other_tasks(minilm_path, minilm_state, tmp_path):
    folder = tmp_path / "with-head"
    shutil.copytree(minilm_path, folder)
    state = dict(minilm_state, **{"cls.predictions.bias": torch.zeros(30522)})  # pooler is there too
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    assert not load_encoder(folder).is_moe
