"""sentence-transformers folders with Dense / Normalize modules (LaBSE, distiluse-base-multilingual):
embedded exactly as sentence-transformers embeds them, or refused with an error naming the module.

The parity tests build the folder with sentence-transformers itself: the real multilingual-e5-small
(``tests/_assets.py``) plus a seeded random ``Dense`` 384->256 (Tanh) and ``Normalize``, saved as
safetensors, and compare with what sentence-transformers loads back from that folder. The other
tests put hand-written modules on the tiny random MoE (loads in well under a second).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _texts import SCRIPTS, sib200_texts
from safetensors.torch import save_file

from skmoe import MoEEmbeddingTransformer, load_encoder
from skmoe.embedding import ModelCard
from skmoe.encoder.fingerprint import changed_parts
from skmoe.encoder.info import format_model_info, model_info
from skmoe.encoder.loading import CheckpointError
from skmoe.encoder.st_modules import UnsupportedModuleError
from skmoe.engine import Engine

PROMPT = "query: "  # e5's documented prefix
TYPES = {  # the type names sentence-transformers releases write
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def write_modules(folder: Path, kinds: list[tuple[str, str]]) -> None:
    """modules.json listing (type, path) in order."""
    entries = [{"idx": i, "name": str(i), "path": path, "type": TYPES.get(kind, kind)}
               for i, (kind, path) in enumerate(kinds)]
    (folder / "modules.json").unlink(missing_ok=True)  # a link to the source folder's file
    (folder / "modules.json").write_text(json.dumps(entries, indent=1))


def write_dense(folder: Path, in_f: int, out_f: int, seed: int = 0, *, bias: bool = True,
                activation: str = "torch.nn.modules.activation.Tanh",
                shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """A Dense module folder as sentence-transformers writes it (config.json + model.safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "in_features": in_f, "out_features": out_f, "bias": bias,
        "activation_function": activation}))
    gen = torch.Generator().manual_seed(seed)
    shapes = shapes or {"linear.weight": (out_f, in_f), **({"linear.bias": (out_f,)} if bias else {})}
    tensors = {k: torch.randn(s, generator=gen) * 0.2 for k, s in shapes.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def variant(src: Path, dst: Path) -> Path:
    """A copy of ``src``: files linked (the weights are not copied), module folders copied."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_dir():
            shutil.copytree(f, dst / f.name)
        else:
            (dst / f.name).symlink_to(f.resolve())
    return dst


# -- parity with sentence-transformers on a real model --------------------------------------------
@pytest.fixture(scope="module")
def texts(sib200_dir: Path) -> list[str]:
    return [t for lang in SCRIPTS for t in sib200_texts(sib200_dir, lang, 2)]


@pytest.fixture(scope="module")
def st_dense(tmp_path_factory: pytest.TempPathFactory, e5_path: Path) -> Iterator[Path]:
    """multilingual-e5-small + Dense 384->256 Tanh (seeded) + Normalize, saved by sentence-transformers.
    Removed after this module (466 MB)."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.base.modules import Dense, Normalize
    except ImportError:  # releases before 6.0
        from sentence_transformers.models import Dense, Normalize

    base = SentenceTransformer(str(e5_path), device="cpu")
    torch.manual_seed(0)
    dense = Dense(384, 256, activation_function=torch.nn.Tanh())
    folder = tmp_path_factory.mktemp("st-dense") / "e5-dense"
    SentenceTransformer(modules=[*base, dense, Normalize()], device="cpu").save(
        str(folder), safe_serialization=True)
    assert (folder / "2_Dense" / "model.safetensors").is_file()
    yield folder
    shutil.rmtree(folder.parent, ignore_errors=True)


def st_encode(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode([PROMPT + t for t in texts], convert_to_numpy=True, batch_size=8)


@pytest.mark.slow
def test_dense_and_normalize_match_sentence_transformers(st_dense, texts):
    expected = st_encode(st_dense, texts)
    assert expected.shape == (len(texts), 256)
    assert np.allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)

    enc = load_encoder(st_dense, device="cpu")
    assert (enc.embedding_dim, enc.hidden_size) == (256, 384)
    assert enc.modules_description == "mean pooling -> Dense 384->256 Tanh -> Normalize"
    ours = Engine(enc, batch_size=4).embed(texts, prompt=PROMPT)
    assert ours.shape == expected.shape
    assert cosines(ours, expected).min() >= 0.9999
    assert np.abs(ours - expected).max() < 1e-4
    assert ModelCard.of(enc).facts()["embedding_dim"] == 256

    # the estimator: the model's vector first, then its own postprocessing, as for any model
    for normalize in (False, "l2"):
        est = MoEEmbeddingTransformer(st_dense, prompt=PROMPT, normalize=normalize,
                                      center=False, device="cpu", verbose=0)
        got = est.fit_transform(texts)
        assert got.shape == expected.shape and est.n_features_out_ == est.embedding_dim_ == 256
        assert len(est.get_feature_names_out()) == 256
        assert cosines(got, expected).min() >= 0.9999
    cut = MoEEmbeddingTransformer(st_dense, prompt=PROMPT, truncate_dim=64, normalize="l2",
                                  center=False, device="cpu", verbose=0).fit_transform(texts)
    want = expected[:, :64] / np.linalg.norm(expected[:, :64], axis=1, keepdims=True)
    assert cut.shape == (len(texts), 64) and np.abs(cut - want).max() < 1e-4

    info = model_info(st_dense)
    assert info["embedding_dim"] == 256 and "Dense 384->256 Tanh" in format_model_info(info)


@pytest.mark.slow
def test_dense_without_normalize_matches_sentence_transformers(st_dense, texts, tmp_path):
    folder = variant(st_dense, tmp_path / "no-normalize")
    shutil.rmtree(folder / "3_Normalize")
    modules = json.loads((st_dense / "modules.json").read_text())[:3]
    (folder / "modules.json").unlink()  # a link to st_dense's file
    (folder / "modules.json").write_text(json.dumps(modules))
    expected = st_encode(folder, texts)
    norms = np.linalg.norm(expected, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)  # really not normalised

    enc = load_encoder(folder, device="cpu")
    ours = Engine(enc).embed(texts, prompt=PROMPT)
    assert ours.shape == (len(texts), 256)
    assert cosines(ours, expected).min() >= 0.9999
    assert np.allclose(np.linalg.norm(ours, axis=1), norms, rtol=1e-4)
    raw = MoEEmbeddingTransformer(folder, prompt=PROMPT, normalize=False, center=False,
                                  device="cpu", verbose=0).fit_transform(texts)
    assert np.allclose(raw, ours, atol=1e-5)
    assert load_encoder(st_dense).source.fingerprint != enc.source.fingerprint


# -- the head's arithmetic and its refusals, on the tiny random MoE --------------------------------
@pytest.fixture
def moe(tmp_path: Path, fast_moe: Path) -> Path:
    """A copy of the tiny random MoE (64-d) whose modules a test may rewrite."""
    return variant(fast_moe, tmp_path / "moe")


def embed(folder: Path, texts: list[str]) -> np.ndarray:
    return Engine(load_encoder(folder, device="cpu")).embed(texts)


SHORT = ["a short text", "another, somewhat longer text about the weather", "x"]


@pytest.mark.parametrize("order", [["Dense", "Normalize"], ["Normalize", "Dense"], ["Dense"],
                                   ["Dense", "Dense"]])
def test_head_runs_the_modules_in_file_order(moe, order):
    pooled = torch.from_numpy(embed(moe, SHORT))
    kinds, width = [("Transformer", ""), ("Pooling", "1_Pooling")], 64
    expected = pooled
    for i, kind in enumerate(order):
        path = f"{i + 2}_{kind}"
        if kind == "Dense":
            out = 48 - 8 * i
            w = write_dense(moe / path, width, out, seed=i)
            expected = torch.tanh(expected @ w["linear.weight"].t() + w["linear.bias"])
            width = out
        else:
            expected = torch.nn.functional.normalize(expected, dim=-1)
        kinds.append((kind, path))
    write_modules(moe, kinds)
    enc = load_encoder(moe, device="cpu")
    assert enc.embedding_dim == width and enc.hidden_size == 64
    got = Engine(enc).embed(SHORT)
    assert got.shape == (len(SHORT), width)
    assert np.allclose(got, expected.numpy(), atol=1e-5)


def test_dense_activation_and_bias_are_read(moe):
    pooled = torch.from_numpy(embed(moe, SHORT))
    w = write_dense(moe / "2_Dense", 64, 32, bias=False,
                    activation="torch.nn.modules.linear.Identity")
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")])
    assert np.allclose(embed(moe, SHORT), (pooled @ w["linear.weight"].t()).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", [
    "sentence_transformers.models.LayerNorm",
    "sentence_transformers.models.WordEmbeddings",
    "sentence_transformers.models.CNN",
    "sentence_transformers.models.WeightedLayerPooling",
    "my_package.heads.CustomHead",
])
def test_unsupported_module_is_refused_by_type_and_folder(moe, kind):
    (moe / "3_Extra").mkdir()
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), (kind, "3_Extra")])
    with pytest.raises(UnsupportedModuleError) as info:
        load_encoder(moe, device="cpu")
    assert kind in str(info.value) and "3_Extra" in str(info.value)


def test_tampered_dense_weight_shape_is_refused_naming_the_tensor(moe):
    write_dense(moe / "2_Dense", 64, 32, shapes={"linear.weight": (32, 60), "linear.bias": (32,)})
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")])
    with pytest.raises(CheckpointError, match=r"'linear\.weight' has shape \(32, 60\), expected "
                                              r"\(32, 64\)") as info:
        load_encoder(moe, device="cpu")
    assert "2_Dense" in str(info.value)


def test_dense_whose_input_width_is_wrong_is_refused(moe):
    write_dense(moe / "2_Dense", 128, 32)
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")])
    with pytest.raises(CheckpointError, match=r"in_features = 128.*64 dimensions"):
        load_encoder(moe, device="cpu")


def test_pickled_or_missing_dense_weights_are_refused(moe):
    (moe / "2_Dense").mkdir()
    (moe / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 64, "out_features": 8}))
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")])
    with pytest.raises(CheckpointError, match=r"2_Dense/model\.safetensors is missing"):
        load_encoder(moe, device="cpu")
    (moe / "2_Dense" / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match=r"2_Dense/pytorch_model\.bin.*safetensors only"):
        load_encoder(moe, device="cpu")


def test_unknown_activation_is_refused(moe):
    write_dense(moe / "2_Dense", 64, 8, activation="my_package.Swish")
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")])
    with pytest.raises(UnsupportedModuleError, match=r"activation_function 'my_package\.Swish'"):
        load_encoder(moe, device="cpu")


@pytest.mark.parametrize(("config", "message"), [
    ({"pooling_mode": "lasttoken"}, "pooling mode lasttoken"),
    ({"pooling_mode": ["mean", "max"]}, r"pooling mode mean\+max"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, r"pooling mode cls\+mean"),
    ({"pooling_mode_mean_sqrt_len_tokens": True}, "pooling mode mean_sqrt_len_tokens"),
    ({"pooling_mode": "mean", "include_prompt": False}, "include_prompt = false"),
])
def test_pooling_configs_skmoe_cannot_run_are_refused(moe, config, message):
    (moe / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModuleError, match=message):
        load_encoder(moe, device="cpu")


def test_newer_pooling_config_form_is_read(moe):
    (moe / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 64, "pooling_mode": "cls", "include_prompt": True}))
    assert load_encoder(moe, device="cpu").pooling == "cls"


def test_module_order_problems_are_refused(moe):
    write_dense(moe / "2_Dense", 64, 8)
    write_modules(moe, [("Transformer", ""), ("Dense", "2_Dense"), ("Pooling", "1_Pooling")])
    with pytest.raises(UnsupportedModuleError, match="comes before the Pooling"):
        load_encoder(moe, device="cpu")
    write_modules(moe, [("Transformer", "")])
    with pytest.raises(UnsupportedModuleError, match="has no Pooling module"):
        load_encoder(moe, device="cpu")
    write_modules(moe, [("Transformer", "0_Transformer"), ("Pooling", "1_Pooling")])
    with pytest.raises(UnsupportedModuleError, match="0_Transformer"):
        load_encoder(moe, device="cpu")
    write_modules(moe, [("Transformer", ""), ("Pooling", "../elsewhere")])
    with pytest.raises(CheckpointError, match="inside the model folder"):
        load_encoder(moe, device="cpu")


def test_dense_files_are_in_the_fingerprint(moe):
    write_dense(moe / "2_Dense", 64, 8, seed=0)
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")])
    before = load_encoder(moe, device="cpu").source.fingerprint
    write_dense(moe / "2_Dense", 64, 8, seed=1)  # other weights, same shapes
    after = load_encoder(moe, device="cpu").source.fingerprint
    assert changed_parts(before, after) == ["weights"]
    cfg = json.loads((moe / "2_Dense" / "config.json").read_text())
    cfg["activation_function"] = "torch.nn.modules.activation.ReLU"
    (moe / "2_Dense" / "config.json").write_text(json.dumps(cfg))
    assert changed_parts(after, load_encoder(moe, device="cpu").source.fingerprint) == ["config"]


def test_estimator_reports_the_dense_width(moe):
    write_dense(moe / "2_Dense", 64, 24)
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense"),
                        ("Normalize", "3_Normalize")])
    est = MoEEmbeddingTransformer(moe, normalize=False, center=False, device="cpu", verbose=0)
    X = est.fit_transform(SHORT)
    assert X.shape == (3, 24) and est.n_features_out_ == 24
    assert len(est.get_feature_names_out()) == 24
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)  # the model's Normalize


def test_head_reads_nothing_back_to_the_host():
    """The head runs inside the engine's forward: on the meta device any host read would fail."""
    from skmoe.encoder.st_modules import DenseModule, NormalizeModule, SentenceHead

    with torch.device("meta"):
        head = SentenceHead([DenseModule(64, 32, True, "torch.nn.modules.activation.Tanh",
                                         use_residual=True), NormalizeModule()], 64)
        out = head(torch.empty(5, 64))
    assert out.shape == (5, 32) and out.device.type == "meta"


@pytest.mark.parametrize("out_f", [64, 24])
def test_dense_residual_is_added(moe, out_f):
    """sentence-transformers' ``use_residual``: the input (or its bias-free projection) is added."""
    pooled = torch.from_numpy(embed(moe, SHORT))
    shapes = {"linear.weight": (out_f, 64), "linear.bias": (out_f,)}
    if out_f != 64:
        shapes["residual.weight"] = (out_f, 64)
    w = write_dense(moe / "2_Dense", 64, out_f, shapes=shapes)
    cfg = json.loads((moe / "2_Dense" / "config.json").read_text())
    (moe / "2_Dense" / "config.json").write_text(json.dumps({**cfg, "use_residual": True}))
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")])
    skip = pooled @ w["residual.weight"].t() if out_f != 64 else pooled
    expected = torch.tanh(pooled @ w["linear.weight"].t() + w["linear.bias"]) + skip
    assert np.allclose(embed(moe, SHORT), expected.numpy(), atol=1e-5)


def test_normalize_module_of_a_real_model_is_applied(minilm_path, minilm_encoder):
    """all-MiniLM-L6-v2 ends in Normalize: the encoder's own vectors are sentence-transformers'
    unit vectors, with no normalisation added afterwards."""
    from sentence_transformers import SentenceTransformer

    assert minilm_encoder.modules_description == "mean pooling -> Normalize"
    texts = ["A man is eating food.", "naïve café déjà vu", "Sentence embeddings map text."]
    expected = SentenceTransformer(str(minilm_path), device="cpu").encode(texts)
    ours = Engine(minilm_encoder).embed(texts)
    assert np.abs(ours - expected).max() < 1e-5


def test_the_cache_key_names_the_head_modules(moe):
    """Vectors of a folder with Dense/Normalize modules mean something else than its pooled states:
    the namespace's pooling part names the modules (entries cached by versions that ignored them
    are not served), and stays plain ``mean`` for a folder without modules (its keys unchanged)."""
    assert ModelCard.of(load_encoder(moe, device="cpu")).recipe == "mean"
    write_modules(moe, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2_Normalize")])
    card = ModelCard.of(load_encoder(moe, device="cpu"))
    assert card.recipe != "mean" and "Normalize" in card.recipe


# -- do_lower_case ---------------------------------------------------------------------------------
GREEK = ["ΟΔΟΣ ΟΔΟΣ.", "ΣΟΦΙΑ Σ ΑΣ-Β", "Η ΟΔΟΣ' ΣΤΟ ΣΠΙΤΙ", "İstanbul STRASSE ÉCOLE"]


@pytest.mark.slow
def test_do_lower_case_lowercases_as_sentence_transformers(st_dense, texts, tmp_path):
    """sentence_bert_config.json's do_lower_case was ignored: cosine 0.958 to
    sentence-transformers on mixed-case text, the whole gap being the lowercasing."""
    folder = variant(st_dense, tmp_path / "lower")
    config = json.loads((st_dense / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").unlink()
    (folder / "sentence_bert_config.json").write_text(json.dumps({**config, "do_lower_case": True}))
    sample = [t.upper() if i % 2 else t for i, t in enumerate(texts[:12])] + GREEK
    expected = st_encode(folder, sample)
    enc = load_encoder(folder, device="cpu")
    ours = Engine(enc, batch_size=4).embed(sample, prompt="QUERY: ")  # the prompt is lowercased too
    bad = np.flatnonzero(np.abs(ours - expected).max(1) >= 1e-4)
    assert not len(bad), [sample[i] for i in bad]
    plain = load_encoder(st_dense, device="cpu")
    for t in sample[:12]:
        assert enc.tokenize([t])[0] == plain.tokenize([t.lower()])[0], t
    # as sentence-transformers 6: the tokenizers library's Lowercase, character by character
    # (str.lower, and sentence-transformers 5, give a word-final ς)
    assert enc.tokenize(["ΟΔΟΣ"])[0] == plain.tokenize(["οδοσ"])[0] != plain.tokenize(["οδος"])[0]
