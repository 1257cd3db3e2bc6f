"""The process-wide registry: one loaded copy per (model, revision, device, precision)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from sklearn.base import clone

from skmoe import registry
from skmoe.cache import EmbeddingCache
from skmoe.estimator import MoEEmbeddingTransformer


def test_key_normalises_folder_spellings(fast_moe, monkeypatch):
    monkeypatch.chdir(fast_moe.parent)
    keys = {
        registry.registry_key(p, None, "cpu", None)
        for p in (fast_moe, str(fast_moe), str(fast_moe) + "/", fast_moe.name, f"./{fast_moe.name}")
    }
    assert keys == {(str(fast_moe.resolve()), None, "cpu", "float32")}
    # Spellings of the same precision share one copy.
    assert {registry.registry_key(fast_moe, None, "cpu", p)[3] for p in (None, "auto", "fp32", "FLOAT32")} == {
        "float32"}
    # A hub id stays as written; revision, device and precision are part of the key.
    assert registry.registry_key("org/model", "abc", "cpu", "bfloat16") == ("org/model", "abc", "cpu", "bfloat16")


def test_loads_once_and_shares_one_object(fast_moe):
    registry.clear(fast_moe)
    before = sum(registry.LOAD_COUNTS.values())
    a = registry.get_encoder(fast_moe)
    b = registry.get_encoder(str(fast_moe) + "/")
    assert a is b
    assert sum(registry.LOAD_COUNTS.values()) - before == 1
    assert registry.registry_key(fast_moe, None, "cpu", None) in registry.loaded()


def test_precision_is_part_of_the_key(fast_moe):
    from skmoe.engine.precision import precision_of, supported_precisions

    fp32 = registry.get_encoder(fast_moe)
    assert registry.get_encoder(fast_moe, precision="float32") is fp32
    for mode in supported_precisions("cpu")[1:]:  # int8, and bf16 where the CPU has it
        other = registry.get_encoder(fast_moe, precision=mode)
        assert other is not fp32 and precision_of(other) == mode
    assert precision_of(fp32) == "float32"


def test_clear_one_model_keeps_the_others(fast_moe, tmp_path):
    other = Path(shutil.copytree(fast_moe, tmp_path / "other"))
    registry.get_encoder(fast_moe)
    registry.get_encoder(other)
    registry.clear(other)
    names = {k[0] for k in registry.loaded()}
    assert str(fast_moe.resolve()) in names and str(other.resolve()) not in names


def test_clones_share_the_weights_and_estimators_hold_none(fast_moe):
    est = MoEEmbeddingTransformer(str(fast_moe)).fit(["a"])
    twin = clone(est).fit(["b"])
    assert est.get_encoder() is twin.get_encoder()
    est.transform(["some text"])
    for value in vars(est).values():
        assert not isinstance(value, (torch.nn.Module, torch.Tensor))
    blob = pickle.dumps(est)
    assert len(blob) < 5_000 and b"torch" not in blob


def test_get_cache_is_one_object_per_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert registry.get_cache(None) is None
    first = registry.get_cache("emb.sqlite")
    assert registry.get_cache(tmp_path / "emb.sqlite") is first
    mine = EmbeddingCache(tmp_path / "mine.sqlite")
    assert registry.get_cache(mine) is mine


@pytest.mark.parametrize(("value", "error", "message"), [
    (":memory:", ValueError, "needs a file path"),
    ("", ValueError, "needs a file path"),
    (123, TypeError, "cache must be None, a path or an EmbeddingCache, got int"),
])
def test_get_cache_rejects_what_is_not_a_file_path(value, error, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        registry.get_cache(value)
    assert list(tmp_path.iterdir()) == []  # no stray ':memory:' files


def test_a_cache_object_is_shared_by_clones_not_copied(fast_moe, tmp_path):
    mine = EmbeddingCache(tmp_path / "shared.sqlite")
    est = MoEEmbeddingTransformer(str(fast_moe), cache=mine)
    twin = clone(est)
    assert twin.cache is mine
    twin.fit(["a"]).transform(["a", "b"])
    assert mine.stats().misses == 2


def test_model_source_names_and_fingerprints_without_loading(fast_moe, monkeypatch):
    registry.clear()

    def no_load(*args, **kwargs):
        raise AssertionError("model_source must not load the model")

    with monkeypatch.context() as m:
        m.setattr(registry, "load_encoder", no_load)
        source = registry.model_source(fast_moe)
    assert registry.loaded() == []
    encoder = registry.get_encoder(fast_moe, device="cpu")
    assert source == encoder.source
    assert registry.model_source(fast_moe) is encoder.source  # a loaded encoder's own source
    registry.clear()


def test_compile_is_refused_on_cpu_before_loading(tiny_moe_path):
    before = sum(registry.LOAD_COUNTS.values())
    with pytest.raises(ValueError, match="compile=True is for GPUs"):
        registry.get_encoder(tiny_moe_path, device="cpu", compile=True)
    assert sum(registry.LOAD_COUNTS.values()) == before
    assert not any(key[-1] == "compiled" for key in registry.loaded())  # none left behind


def test_revision_spellings_of_one_snapshot_share_one_copy(tiny_moe_path, tmp_path, monkeypatch):
    """None, "main" and the commit hash of one cached snapshot each loaded their own copy of the
    weights (2 x 1.9 GB for a pipeline pinning the commit beside one that does not)."""
    from _hub_cache import COMMIT, fake_hub_cache
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(fake_hub_cache(tmp_path, tiny_moe_path)))
    registry.clear("org/name")
    before = sum(registry.LOAD_COUNTS.values())
    first = registry.get_encoder("org/name", local_files_only=True)
    assert first.source.revision == COMMIT
    for revision in ("main", COMMIT):
        assert registry.get_encoder("org/name", revision=revision, local_files_only=True) is first
    assert sum(registry.LOAD_COUNTS.values()) - before == 1
    with pytest.raises(Exception, match="not at revision 'v9'"):  # no such snapshot: the load says
        registry.get_encoder("org/name", revision="v9", local_files_only=True)
    registry.clear("org/name")
