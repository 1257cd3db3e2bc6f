"""Broken model folders are refused at load, naming the file and the problem (issue 19, 3 and 4).

Every case tampers with a copy of a fast test model in tmp_path. Size problems are refused before
the sizes are allocated (checked with the process's peak RSS) and before modules are built.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

import pytest
import torch
from _moe_factory import make_random_moe
from safetensors.torch import load_file, save_file

from skmoe import load_encoder
from skmoe.encoder import CheckpointError, UnsupportedConfigError
from skmoe.encoder.checkpoint import NonFiniteOutputError, check_finite_output


def copy_of(folder: Path, tmp_path: Path, name: str = "model") -> Path:
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


def edit_config(folder: Path, **changes) -> None:
    raw = json.loads((folder / "config.json").read_text())
    raw.update(changes)
    (folder / "config.json").write_text(json.dumps(raw))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_with_more_ids_than_the_embedding_table_is_refused(tmp_path, bert_tokenizer):
    folder = make_random_moe(tmp_path / "small-vocab", tokenizer=bert_tokenizer, vocab_size=1024)
    with pytest.raises(CheckpointError, match=r"ids up to 30,521.*1,024 rows") as info:
        load_encoder(folder, device="cpu")
    assert str(folder) in str(info.value)


def test_a_tokenizer_without_its_vocabulary_is_refused(tmp_path, fast_moe, bert_tokenizer):
    """tokenizer_config.json without tokenizer.json loaded as a tokenizer of its 5 special
    tokens: every word became <unk> ('hello world' -> [0, 3, 3, 2]), unwarned."""
    from skmoe import MoEEmbeddingTransformer

    folder = copy_of(fast_moe, tmp_path)
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink()
    assert load_encoder(folder, device="cpu").tokenizer is None
    with pytest.raises(ValueError, match="has no tokenizer files"):
        MoEEmbeddingTransformer(folder).fit(["hello world"])
    big = make_random_moe(tmp_path / "big-vocab", tokenizer=bert_tokenizer, vocab_size=250048)
    with pytest.raises(CheckpointError, match=r"knows 30,522 tokens, but the model's embedding "
                       r"table has 250,048 rows"):
        load_encoder(big, device="cpu")


def test_tokenizer_from_another_folder_is_checked_too(tmp_path, fast_moe, minilm_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    edit = json.loads((fast_moe / "config.json").read_text())
    (weights / "config.json").write_text(json.dumps(edit))
    shutil.copy(fast_moe / "model.safetensors", weights / "model.safetensors")
    load_encoder(weights, device="cpu", tokenizer=minilm_path)  # 30,522 ids fit 30,528 rows
    small = make_random_moe(tmp_path / "small", vocab_size=512)
    with pytest.raises(CheckpointError, match=str(minilm_path)):
        load_encoder(small, device="cpu", tokenizer=minilm_path)


def test_truncated_tokenizer_json_names_the_file(tmp_path, fast_moe):
    folder = copy_of(fast_moe, tmp_path)
    data = (folder / "tokenizer.json").read_bytes()
    (folder / "tokenizer.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"tokenizer\.json cannot be loaded as a tokenizer"):
        load_encoder(folder, device="cpu")


# -- JSON side files ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, pattern", [
    ("config.json", '{"model_type": "nomic_bert", ', r"config\.json is not valid JSON"),
    ("config.json", "[1, 2]", r"config\.json must hold a JSON object"),
    ("modules.json", "[{]", r"modules\.json is not valid JSON"),
    ("modules.json", '{"type": "Pooling"}', r"modules\.json must hold a JSON array"),
    ("modules.json", "[1, 2]", r"modules\.json must be a list of objects"),
    ("tokenizer_config.json", "\xff\xfe", r"tokenizer_config\.json is not"),
])
def test_malformed_json_names_the_file(tmp_path, fast_moe, name, content, pattern):
    folder = copy_of(fast_moe, tmp_path)
    (folder / name).write_bytes(content.encode("latin-1"))
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_encoder(folder, device="cpu")
    assert str(folder / name) in str(info.value)


# -- safetensors files --------------------------------------------------------------------------


def test_header_too_large_names_the_file(tmp_path, fast_moe):
    folder = copy_of(fast_moe, tmp_path)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="header too large") as info:
        load_encoder(folder, device="cpu")
    assert str(path) in str(info.value)


def test_truncated_weights_name_the_file_and_tensor(tmp_path, fast_moe):
    folder = copy_of(fast_moe, tmp_path)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated: tensor '"):
        load_encoder(folder, device="cpu")


@pytest.mark.parametrize("model", ["moe", "dense"])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, fast_moe, minilm_path, model):
    folder = copy_of(fast_moe if model == "moe" else minilm_path, tmp_path)
    state = load_file(folder / "model.safetensors")
    name = sorted(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)[0]
    state[name] = state[name].clone()
    state[name].view(-1)[3] = float("nan")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    short = name.split(".", 1)[1] if model == "dense" and name.startswith("bert.") else name
    with pytest.raises(CheckpointError, match=rf"'{short}' holds 1 NaN/inf"):
        load_encoder(folder, device="cpu")


def test_checkpoint_dtype_that_cannot_be_a_weight_is_refused(tmp_path, fast_moe):
    folder = copy_of(fast_moe, tmp_path)
    state = load_file(folder / "model.safetensors")
    name = sorted(state)[0]
    state[name] = state[name].to(torch.int32)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"wrong dtype: {name}: checkpoint I32 vs model float32"):
        load_encoder(folder, device="cpu")


# -- config values ------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, pattern", [
    ("n_head", 0, r"'n_head' = 0 .*between 1 and"),
    ("n_head", "4", r"'n_head' = '4' .*integer"),
    ("activation_function", "banana", r"'activation_function' = 'banana'"),
    ("n_layer", 100000, r"'n_layer' = 100000 .*between 1 and 1,024"),
    ("vocab_size", 1e9, r"'vocab_size' = 1000000000.0 .*integer"),
    ("layer_norm_epsilon", -1, r"'layer_norm_epsilon' = -1 .*positive"),
])
def test_moe_config_values_are_bounded_and_named(tmp_path, fast_moe, field, value, pattern):
    folder = copy_of(fast_moe, tmp_path)
    edit_config(folder, **{field: value})
    start = time.perf_counter()
    with pytest.raises(UnsupportedConfigError, match=pattern) as info:
        load_encoder(folder, device="cpu")
    assert str(folder / "config.json") in str(info.value)
    assert time.perf_counter() - start < 30  # n_layer 100000 built modules for 3 minutes


def test_moe_config_that_disagrees_with_weights_is_refused_before_reading_them(
        tmp_path, fast_moe, monkeypatch):
    import skmoe.encoder.loading as loading

    folder = copy_of(fast_moe, tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    edit_config(folder, n_inner=raw.get("n_inner", 4 * raw["n_embd"]) * 4)
    monkeypatch.setattr(loading, "read_safetensors",
                        lambda files: pytest.fail("weights read before the header was compared"))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_encoder(folder, device="cpu")


@pytest.mark.parametrize("changes, pattern", [
    ({"intermediate_size": 300000}, r"wrong shape: .*intermediate\.dense\.weight"),
    ({"vocab_size": 1e9}, r"'vocab_size' = 1000000000.0 .*positive integer"),
    ({"vocab_size": 1_000_000_000}, r"'vocab_size' = 1000000000 .*exceeds"),
    ({"vocab_size": 40000}, r"wrong shape: embeddings\.word_embeddings\.weight"),
    ({"num_hidden_layers": 100000}, r"'num_hidden_layers' = 100000 .*exceeds"),
    ({"num_attention_heads": 0}, r"'num_attention_heads' = 0 .*positive integer"),
    ({"hidden_act": "banana"}, r"'hidden_act' = 'banana' .*unknown activation"),
    ({"is_decoder": True}, r"'is_decoder' = True .*bidirectional encoders"),
    ({"architectures": ["BertLMHeadModel"]}, r"BertLMHeadModel is a decoder"),
    ({"model_type": "gpt2"}, r"'model_type' = 'gpt2' .*decoder-only"),
    # custom code whose tensors fit stock BERT ran as stock BERT, unwarned
    ({"auto_map": {"AutoModel": "org/code--modeling.XModel"}},
     r"'auto_map' = .*the model's own code \(org/code--modeling\.XModel\) computes it"),
])
def test_dense_config_is_checked_before_any_allocation(tmp_path, minilm_path, changes, pattern):
    folder = copy_of(minilm_path, tmp_path)
    edit_config(folder, **changes)
    before = peak_rss_mb()
    with pytest.raises((CheckpointError, UnsupportedConfigError), match=pattern) as info:
        load_encoder(folder, device="cpu")
    assert str(folder) in str(info.value)
    assert peak_rss_mb() - before < 500  # intermediate_size 300000 allocated 5.9 GB first


# -- outputs ------------------------------------------------------------------------------------


def test_non_finite_outputs_raise_a_clear_error():
    check_finite_output(torch.ones(3, 4), "m")
    bad = torch.ones(3, 4, dtype=torch.float16)
    bad[1, 2] = float("inf")
    with pytest.raises(NonFiniteOutputError, match=r"model 'x' produced non-finite vectors .* 1 of 3 "
                                                   r"texts .* float16.*dtype='float32'"):
        check_finite_output(bad, "model 'x'")
    assert issubclass(NonFiniteOutputError, CheckpointError)  # the CLI's one-line model error


# -- the CLI: one line, no traceback ------------------------------------------------------------


@pytest.mark.parametrize("damage", ["tokenizer-vocab", "tokenizer-truncated", "nan", "n_head"])
def test_cli_reports_a_broken_folder_in_one_line(tmp_path, fast_moe, bert_tokenizer, capsys,
                                                 damage):
    from skmoe.cli import main

    if damage == "tokenizer-vocab":
        folder = make_random_moe(tmp_path / "m", tokenizer=bert_tokenizer, vocab_size=1024)
        expect = "1,024 rows"
    else:
        folder = copy_of(fast_moe, tmp_path)
        if damage == "tokenizer-truncated":
            (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc')
            expect = "tokenizer.json cannot be loaded"
        elif damage == "nan":
            state = load_file(folder / "model.safetensors")
            name = sorted(state)[-1]
            state[name] = torch.full_like(state[name], float("nan"))
            save_file(state, str(folder / "model.safetensors"))
            expect = f"'{name}' holds"
        else:
            edit_config(folder, n_head=0)
            expect = "'n_head' = 0"
    src = tmp_path / "in.txt"
    src.write_text("a text\n", encoding="utf-8")
    code = main(["embed", str(src), "-o", str(tmp_path / "o.npy"), "--model", str(folder),
                 "--no-cache", "-q"])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("skmoe: error: ")]
    assert len(errors) == 1 and expect in errors[0] and str(folder) in errors[0], err


def test_model_info_applies_the_same_bounds(tmp_path, minilm_path):
    from skmoe.encoder import model_info

    folder = tmp_path / "cfg"
    folder.mkdir()
    raw = json.loads((minilm_path / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 100000}))
    start = time.perf_counter()
    with pytest.raises(UnsupportedConfigError, match="'num_hidden_layers' = 100000"):
        model_info(folder)
    assert time.perf_counter() - start < 10


def test_the_systems_errors_reading_a_tokenizer_are_not_blamed_on_its_files(bert_tokenizer,
                                                                            monkeypatch):
    """Out of file descriptors, loading the tokenizer said "restore it from the model's
    source" about files that were fine: an OSError of the system is raised as it is."""
    import errno

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from skmoe.encoder.tokenization import load_tokenizer

    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(PreTrainedTokenizerFast, "__init__", no_descriptors)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", no_descriptors)
    with pytest.raises(OSError, match="Too many open files") as caught:
        load_tokenizer(bert_tokenizer)
    assert not isinstance(caught.value, CheckpointError)
