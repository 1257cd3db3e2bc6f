"""The model fingerprint covers every weight byte, the tokenizer files and the parsed config,
and a warm run reads no file again (issue 19, item 1)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from skmoe import registry
from skmoe.encoder import fingerprint as fp
from skmoe.encoder.loading import safetensors_files, weights_fingerprint
from skmoe.estimator import MoEEmbeddingTransformer, WeightsChangedError


@pytest.fixture(autouse=True)
def private_memo(tmp_path, monkeypatch):
    monkeypatch.setenv("SKMOE_FINGERPRINT_MEMO", str(tmp_path / "memo" / "file-digests.json"))
    fp.forget_memo()
    yield
    fp.forget_memo()


@pytest.fixture
def model(random_moe_xlmr_path: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(random_moe_xlmr_path, folder)
    return folder


def _fingerprint(folder: Path) -> fp.ModelFingerprint:
    return fp.model_fingerprint(folder, safetensors_files(folder))


def test_rewriting_every_tensor_of_one_layer_in_place_changes_it(model):
    before = _fingerprint(model)
    path = model / "model.safetensors"
    tensors = load_file(path)
    layer = sorted(k for k in tensors if ".layers.1." in k or ".layer.1." in k)
    assert layer, sorted(tensors)[:10]
    size = path.stat().st_size
    for name in layer:
        tensors[name] = (tensors[name] * np.float32(0.9)).astype(tensors[name].dtype)
    save_file(tensors, str(path))
    assert path.stat().st_size == size  # same shapes, same layout: only the data differ
    after = _fingerprint(model)
    assert after.weights != before.weights
    assert (after.tokenizer, after.config) == (before.tokenizer, before.config)
    assert fp.changed_parts(str(before), str(after)) == ["weights"]


def test_an_in_place_rewrite_with_its_mtime_restored_is_seen(model):
    """size, inode and mtime_ns kept (``touch -r``, ``cp -p``, ``rsync -t --inplace``): the memo
    served the old digest, and the cache the old model's vectors."""
    import os
    import time

    before = _fingerprint(model)
    path = model / "model.safetensors"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(64)  # the end of the last tensor, in place
    time.sleep(0.05)  # past the kernel's coarse timestamp clock (a few ms)
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = path.stat()
    assert (now.st_size, now.st_ino, now.st_mtime_ns) == (st.st_size, st.st_ino, st.st_mtime_ns)
    assert _fingerprint(model).weights != before.weights


def test_swapping_tokenizer_files_changes_it(model):
    before = _fingerprint(model)
    tok = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    vocab[5], vocab[6] = vocab[6], vocab[5]  # two pieces swap ids: other token ids, same size
    (model / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    after = _fingerprint(model)
    assert fp.changed_parts(str(before), str(after)) == ["tokenizer"]


def test_reindented_config_does_not_change_it_but_a_value_does(model):
    before = str(_fingerprint(model))
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    (model / "config.json").write_text(json.dumps(cfg, indent=7, sort_keys=False), encoding="utf-8")
    assert str(_fingerprint(model)) == before
    cfg["layer_norm_epsilon"] = 1e-3
    (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    assert fp.changed_parts(before, str(_fingerprint(model))) == ["config"]


def test_a_warm_fingerprint_reads_no_file_even_in_a_new_process(model, monkeypatch):
    reads: list[str] = []
    real = fp._hash_file

    def counting(path):
        reads.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(fp, "_hash_file", counting)
    first = weights_fingerprint(model, safetensors_files(model))
    assert "model.safetensors" in reads and "tokenizer.json" in reads
    reads.clear()
    assert weights_fingerprint(model, safetensors_files(model)) == first
    fp.forget_memo()  # a new process: only the memo file remains
    assert weights_fingerprint(model, safetensors_files(model)) == first
    assert reads == []
    (model / "model.safetensors").touch()  # new mtime: that file (only) is read again
    assert weights_fingerprint(model, safetensors_files(model)) == first
    assert reads == ["model.safetensors"]


def test_an_unwritable_memo_is_said_once(model, monkeypatch, tmp_path):
    """A HOME the process cannot write (a service user, a read-only container) kept no memo,
    silently: every new process hashed the weights and loaded the model although the cache
    held every text."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("SKMOE_FINGERPRINT_MEMO", str(blocker / "file-digests.json"))
    fp.forget_memo()
    with pytest.warns(fp.MemoUnavailableWarning, match=r"cannot write its file-digest memo "
                                                       r".*SKMOE_FINGERPRINT_MEMO"):
        first = weights_fingerprint(model, safetensors_files(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        fp.remember_card(first, {"width": 8})
    assert fp.known_card(first) == {"width": 8}  # kept in the process


def test_a_read_only_memo_that_holds_everything_is_not_warned_about(model, monkeypatch,
                                                                      tmp_path):
    """A memo baked into an image (complete, read-only) warned in every process that the
    weights would be hashed again: the card was rewritten although the file held it."""
    memo = tmp_path / "memo" / "file-digests.json"
    monkeypatch.setenv("SKMOE_FINGERPRINT_MEMO", str(memo))
    fp.forget_memo()
    first = weights_fingerprint(model, safetensors_files(model))
    fp.remember_card(first, {"width": 8})
    fp.forget_memo()  # a new process
    monkeypatch.setattr(fp, "_write_file", lambda *a: pytest.fail("rewrote a complete memo"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert weights_fingerprint(model, safetensors_files(model)) == first
        fp.remember_card(first, {"width": 8})
        assert fp.known_card(first) == {"width": 8}


def test_memo_can_be_turned_off_and_survives_a_broken_file(model, monkeypatch, tmp_path):
    memo = tmp_path / "broken.json"
    memo.write_text("{not json", encoding="utf-8")
    monkeypatch.setenv("SKMOE_FINGERPRINT_MEMO", str(memo))
    fp.forget_memo()
    first = weights_fingerprint(model, safetensors_files(model))
    assert json.loads(memo.read_text(encoding="utf-8"))["version"] == 1
    monkeypatch.setenv("SKMOE_FINGERPRINT_MEMO", "off")
    fp.forget_memo()
    assert fp.memo_path() is None
    assert weights_fingerprint(model, safetensors_files(model)) == first


def test_weights_changed_error_says_what_changed(model):
    est = MoEEmbeddingTransformer(str(model)).fit(["x"])
    registry.clear()
    tok = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    vocab[5], vocab[6] = vocab[6], vocab[5]
    (model / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    with pytest.raises(WeightsChangedError, match=r"The tokenizer of .* differ"):
        est.transform(["x"])
    registry.clear()


def test_learned_pooling_says_what_changed_too(model):
    """LearnedPooling compared fingerprints with its own bare message ("the weights ... differ")
    whatever had changed; it shares the transformer's check now."""
    from skmoe import LearnedPooling

    pooling = LearnedPooling(str(model), max_iter=1, verbose=0).fit(
        ["a cat", "a dog", "the sea", "the sky"], [0, 0, 1, 1])
    registry.clear()
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    cfg["layer_norm_epsilon"] = 1e-3
    (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(WeightsChangedError, match=r"The config of .* this LearnedPooling was "
                                                  r"fitted with"):
        pooling.transform(["a cat"])
    registry.clear()


def test_a_cached_transform_refuses_changed_files_before_serving_vectors(model, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    est = MoEEmbeddingTransformer(str(model), cache=cache)
    est.fit_transform(["a", "b"])
    registry.clear()
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    cfg["layer_norm_epsilon"] = 1e-3
    (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(WeightsChangedError, match="The config of"):
        est.transform(["a", "b"])  # every text is cached, under the old files
    registry.clear()


def test_estimators_fitted_with_the_legacy_fingerprint_still_work(model):
    est = MoEEmbeddingTransformer(str(model)).fit(["x"])
    est.model_fingerprint_ = fp.legacy_fingerprint(model, safetensors_files(model))
    registry.clear()
    assert est.transform(["x"]).shape == (1, est.n_features_out_)
    est.model_fingerprint_ = "0" * 16
    registry.clear()
    with pytest.raises(WeightsChangedError, match="The weights of"):
        est.transform(["x"])
    registry.clear()
