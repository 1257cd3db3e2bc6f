"""Hub ids resolve through huggingface_hub against a local folder laid out as the hub cache;
nothing here touches the network (HF_HUB_OFFLINE=1 and local_files_only)."""

from __future__ import annotations

import pytest
from _hub_cache import COMMIT, fake_hub_cache
from huggingface_hub.utils import filter_repo_objects

from skmoe import load_encoder
from skmoe.encoder import ModelNotAvailableError
from skmoe.encoder import loading as loading_mod
from skmoe.encoder.info import model_info


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tiny_moe_path):
    return fake_hub_cache(tmp_path_factory.mktemp("hub"), tiny_moe_path)


def test_hub_id_resolves_from_cache_and_records_revision(hub_cache, tiny_moe_path):
    enc = load_encoder("org/name", cache_dir=hub_cache, local_files_only=True, device="cpu")
    assert enc.source.name == "org/name"
    assert enc.source.revision == COMMIT
    assert enc.source.path.endswith(f"snapshots/{COMMIT}")
    assert enc.is_moe
    # same bytes as the fixture folder -> same fingerprint
    assert enc.source.fingerprint == load_encoder(tiny_moe_path).source.fingerprint
    # HF_HUB_OFFLINE=1 (set for the test session) alone also keeps it local
    assert load_encoder("org/name", cache_dir=hub_cache, revision="main").source.revision == COMMIT


def test_hub_id_not_cached_offline_says_how_to_provide_weights(tmp_path):
    with pytest.raises(ModelNotAvailableError) as err:
        load_encoder("nomic-ai/nomic-embed-text-v2-moe", cache_dir=tmp_path, local_files_only=True)
    msg = str(err.value)
    assert "'nomic-ai/nomic-embed-text-v2-moe'" in msg
    assert "without network" in msg
    assert "hf download nomic-ai/nomic-embed-text-v2-moe --local-dir FOLDER" in msg
    assert "local folder" in msg and "config.json" in msg and "model.safetensors" in msg


def test_unknown_revision_offline_lists_what_the_cache_holds(hub_cache):
    """A revision the cache lacks said 'not in the Hugging Face cache ... hf download (1.9 GB)'
    although the model was cached."""
    with pytest.raises(ModelNotAvailableError, match=r"'org/name' is in the Hugging Face cache "
                       r".*but not at revision 'v9'\. Cached: branches/tags main; commits "
                       r"0123456789ab \(LocalEntryNotFoundError\)"):
        load_encoder("org/name", cache_dir=hub_cache, revision="v9", local_files_only=True)
    with pytest.raises(ModelNotAvailableError, match="a short commit hash cannot be resolved"):
        load_encoder("org/name", cache_dir=hub_cache, revision=COMMIT[:7], local_files_only=True)


def test_incomplete_snapshot_says_so(hub_cache, monkeypatch):
    errors = pytest.importorskip("huggingface_hub.errors")
    if not hasattr(errors, "IncompleteSnapshotError"):
        pytest.skip("this huggingface_hub does not track incomplete snapshots")
    import huggingface_hub

    def stopped(*args, **kwargs):  # what huggingface_hub raises for a download that stopped
        raise errors.IncompleteSnapshotError("1 file(s) are missing (model.safetensors)", "x")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", stopped)
    with pytest.raises(ModelNotAvailableError, match=r"holds an incomplete snapshot of 'org/name' "
                       r"\(IncompleteSnapshotError: 1 file\(s\) are missing \(model\.safetensors\)"
                       r"\): its download stopped"):
        load_encoder("org/name", cache_dir=hub_cache, local_files_only=True)


def test_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="neither an existing folder nor a hub id"):
        load_encoder(str(tmp_path / "missing" / "deeper" / "model"))


def test_dotted_hub_ids_are_hub_ids():
    assert loading_mod.is_hub_id("nomic-ai/nomic-embed-text-v1.5")
    assert not loading_mod.is_hub_id("./model")
    assert not loading_mod.is_hub_id("a/b/c")


def test_snapshot_download_never_fetches_pickles_or_code(monkeypatch, tiny_moe_path):
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tiny_moe_path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    folder, _ = loading_mod.resolve_model_path("org/name", revision="v1", cache_dir="/c")
    assert folder == tiny_moe_path
    repo_id, kwargs = calls[0]
    assert repo_id == "org/name" and kwargs["revision"] == "v1" and kwargs["cache_dir"] == "/c"
    assert kwargs["local_files_only"] is True  # HF_HUB_OFFLINE=1 in the test session
    repo_files = [
        "config.json", "model.safetensors", "model-00001-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
        "sentencepiece.bpe.model", "special_tokens_map.json", "modules.json",
        "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
        "vocab.txt",
        # never:
        "pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "model.pt", "model.ckpt",
        "modeling_hf_nomic_bert.py", "configuration_hf_nomic_bert.py", "onnx/model.onnx",
        "tf_model.h5", "flax_model.msgpack", "handler.py",
    ]
    fetched = set(filter_repo_objects(repo_files, allow_patterns=kwargs["allow_patterns"]))
    assert fetched == set(repo_files[:13])


def test_model_info_from_hub_cache(hub_cache):
    info = model_info("org/name", cache_dir=hub_cache, local_files_only=True)
    assert info["revision"] == COMMIT and info["weights"] and info["fingerprint"]
    assert info["moe_layers"] == [1, 3]
