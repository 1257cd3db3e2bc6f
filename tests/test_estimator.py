"""``MoEEmbeddingTransformer``: the sklearn contract, batching invariance, cache use and pickling.

Mechanics run on random tiny MoE checkpoints (64-d); quality on the real multilingual-e5-small.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from _moe_factory import make_random_moe
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags

import skmoe.embedding as embedding_module
import skmoe.estimator as estimator_module
from skmoe import DEFAULT_MODEL, registry
from skmoe.encoder.tokenization import UnknownPromptError
from skmoe.engine import Engine
from skmoe.estimator import MoEEmbeddingTransformer, WeightsChangedError

FP32_ATOL = 1e-5
# Alone vs in a batch, per component of unit vectors. int8 matmuls are exact and scaled per row,
# so a row must not depend on its batch-mates beyond fp32 noise; bf16/fp16 kernels may change
# their blocking with the batch shape, which moves components by a few 1e-3 at most.
PRECISION_ATOL = {"int8": 1e-5, "int4": 1e-5, "bfloat16": 1e-2, "float16": 5e-3}

WORDS = (
    "the of and to in is that it was for on are with as they at be this from machine learning "
    "Modell Sprache ciudad données 東京 красивый ملف word embeddings expert routing"
).split()


def mixed_texts(n: int = 64, seed: int = 0, max_words: int = 90) -> list[str]:
    """``n`` distinct texts of 1 to ``max_words`` words (plus an empty one): lengths vary widely."""
    rng = random.Random(seed)
    texts = [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words))) for i in range(n - 1)]
    return [*texts, ""]


@pytest.fixture(scope="module")
def moe(random_moe_xlmr_path: Path) -> str:
    return str(random_moe_xlmr_path)


@contextmanager
def _packed_forward_wrapped(est: MoEEmbeddingTransformer, before):
    """Call ``before(rows, longest row)`` ahead of every forward pass of the shared encoder (the
    engine calls ``forward_packed``, which module hooks do not see)."""
    enc = est.get_encoder()
    real = enc.forward_packed

    def packed(input_ids, cu_seqlens, max_seqlen):
        before(len(cu_seqlens) - 1, max_seqlen)
        return real(input_ids, cu_seqlens, max_seqlen)

    enc.forward_packed = packed
    try:
        yield
    finally:
        del enc.forward_packed


@contextmanager
def forward_log(est: MoEEmbeddingTransformer):
    """Record (rows, longest row) of every forward pass of the shared encoder."""
    shapes: list[tuple[int, int]] = []
    with _packed_forward_wrapped(est, lambda rows, longest: shapes.append((rows, longest))):
        yield shapes


@contextmanager
def model_forbidden(est: MoEEmbeddingTransformer):
    """Make any forward pass of the shared encoder fail."""

    def boom(rows, longest):
        raise AssertionError("the model ran")

    with _packed_forward_wrapped(est, boom):
        yield


# -- construction and fit --------------------------------------------------------------------------
def test_init_stores_parameters_only():
    loads = sum(registry.LOAD_COUNTS.values())
    est = MoEEmbeddingTransformer("no/such-model", prompt="p: ", batch_size=3)
    assert vars(est) == est.get_params(deep=False)
    assert MoEEmbeddingTransformer().model == DEFAULT_MODEL == "nomic-ai/nomic-embed-text-v2-moe"
    assert sum(registry.LOAD_COUNTS.values()) == loads  # nothing loaded


def test_shared_parameters_are_declared_once_with_the_public_signature():
    """Both estimators take EncoderParams' parameters first, model positional and the rest
    keyword-only, with sklearn's repr and identity equality (the dataclass adds neither)."""
    import dataclasses
    import inspect

    from skmoe import LearnedPooling
    from skmoe._encoder_params import EncoderParams

    shared = ["model", "revision", "prompt_name", "prompt", "max_length", "long_text",
              "chunk_overlap"]
    assert [f.name for f in dataclasses.fields(EncoderParams)] == shared
    for cls, own in [(MoEEmbeddingTransformer, ["truncate_dim", "normalize", "center"]),
                     (LearnedPooling, ["normalize", "center", "heads"])]:
        params = list(inspect.signature(cls).parameters.values())
        assert [p.name for p in params[: len(shared) + 3]] == shared + own
        assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
        assert sorted(p.name for p in params) == sorted(cls().get_params(deep=False))
        assert repr(cls()) == f"{cls.__name__}()" and repr(cls("m")) == f"{cls.__name__}(model='m')"
        assert cls() != cls() and len({cls(), cls()}) == 2
        with pytest.raises(TypeError):
            cls("m", None)  # revision is keyword-only
    assert MoEEmbeddingTransformer().chunk_overlap == LearnedPooling().chunk_overlap == 64


def test_fit_returns_self_and_learns_no_data_without_centring(moe):
    est = MoEEmbeddingTransformer(moe, center=False)
    with pytest.raises(NotFittedError):
        est.transform(["x"])
    with forward_log(est) as shapes:
        assert est.fit(["a", "b"], y=[0, 1]) is est
        names = est.get_feature_names_out()
    assert shapes == []  # float32 output: fit and feature names never run the model
    assert est.embedding_dim_ == est.n_features_out_ == 64
    assert est.prompt_ == "classification: "
    assert est.model_revision_ == "local" and re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{8}-[0-9a-f]{8}", est.model_fingerprint_)
    assert list(names[:2]) == ["embedding_0", "embedding_1"] and len(names) == 64
    assert not hasattr(est, "quantization_ranges_") and est.center_ is None
    empty = MoEEmbeddingTransformer(moe)
    with forward_log(empty) as shapes:  # the default (center=True) on no texts: nothing to learn
        assert empty.fit([]).n_features_out_ == 64
    assert shapes == [] and empty.center_ is None


def test_feature_names_need_fit(moe):
    with pytest.raises(NotFittedError):
        MoEEmbeddingTransformer(moe).get_feature_names_out()


@pytest.mark.parametrize(
    ("prompt_name", "prompt", "expected"),
    [
        ("classification", None, "classification: "),
        ("CLASSIFICATION", None, "classification: "),
        ("Clustering", None, "clustering: "),
        ("document", None, "search_document: "),  # document = passage
        ("passage", None, "search_document: "),
        ("query", None, "search_query: "),
        ("query", "raw prefix: ", "raw prefix: "),  # prompt= wins
        (None, None, ""),  # no default prompt in this model's table
    ],
)
def test_prompt_resolution(moe, prompt_name, prompt, expected):
    est = MoEEmbeddingTransformer(moe, prompt_name=prompt_name, prompt=prompt).fit([])
    assert est.prompt_ == expected


def test_unknown_prompt_name_lists_the_known_ones(moe):
    with pytest.raises(ValueError, match=r"Unknown prompt_name 'nope'.*known: Classification, Clustering"):
        MoEEmbeddingTransformer(moe, prompt_name="nope").fit([])


def test_model_without_prompt_table_needs_a_raw_prompt(e5_path):
    with pytest.raises(ValueError, match=r"no prompt table.*prompt='query: '"):
        MoEEmbeddingTransformer(str(e5_path)).fit([])  # default prompt_name="classification"
    assert MoEEmbeddingTransformer(str(e5_path), prompt="query: ").fit([]).prompt_ == "query: "
    assert MoEEmbeddingTransformer(str(e5_path), prompt_name=None).fit([]).prompt_ == ""


def test_a_folder_that_is_no_model_is_not_blamed_on_the_prompt(e5_path, tmp_path):
    """An empty folder, or one without config.json, read as 'no prompt table': the error said
    the prompt name was unknown and suggested prompt='query: '."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="empty has no (config.json|model.safetensors)") as err:
        MoEEmbeddingTransformer(str(empty)).fit(["a text"])
    assert not isinstance(err.value, UnknownPromptError)
    no_config = tmp_path / "weights-only"
    no_config.mkdir()
    (no_config / "model.safetensors").symlink_to(e5_path / "model.safetensors")  # not 449 MB
    with pytest.raises(Exception, match="config.json") as err:
        MoEEmbeddingTransformer(str(no_config)).fit(["a text"])
    assert not isinstance(err.value, UnknownPromptError)


def test_a_prompt_that_is_no_text_is_refused_before_loading(moe):
    from skmoe import registry as reg

    reg.clear()
    with pytest.raises(TypeError, match="prompt must be a str .* got int 123"):
        MoEEmbeddingTransformer(moe, prompt=123).fit(["a text"])
    assert not reg.loaded()  # refused before the weights were read


def test_prompt_changes_the_vectors(moe):
    a = MoEEmbeddingTransformer(moe, prompt_name="query").fit([]).transform(["same text"])
    b = MoEEmbeddingTransformer(moe, prompt_name="document").fit([]).transform(["same text"])
    c = MoEEmbeddingTransformer(moe, prompt="search_query: ").fit([]).transform(["same text"])
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    ("params", "match"),
    [({"truncate_dim": 65}, "truncate_dim"), ({"truncate_dim": 0}, "truncate_dim"),
     ({"output_dtype": "float64"}, "output_dtype"), ({"max_length": 1}, "max_length")],
)
def test_bad_parameters_fail_in_fit_not_init(moe, params, match):
    est = MoEEmbeddingTransformer(moe, **params)  # no error here
    with pytest.raises(ValueError, match=match):
        est.fit(["x"])


# -- transform: input and output -------------------------------------------------------------------
def test_output_is_float32_c_contiguous_rows_of_the_default_length(moe):
    texts = ["a first text", "", "ein zweiter Text", "三番目"]
    out = MoEEmbeddingTransformer(moe).fit([]).transform(texts)  # fit([]): no centre
    assert out.shape == (4, 64) and out.dtype == np.float32 and out.flags.c_contiguous
    # default normalize=1.25: rows of L2 length 1.25, "" included
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.25, atol=1e-5)
    unit = MoEEmbeddingTransformer(moe, normalize=True).fit([]).transform(texts)  # True = "l2"
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit * 1.25, out, atol=1e-5)
    two = MoEEmbeddingTransformer(moe, normalize=2.0).fit([]).transform(texts)
    np.testing.assert_allclose(unit * 2.0, two, atol=1e-5)
    rms = MoEEmbeddingTransformer(moe, normalize="rms").fit([]).transform(texts)
    np.testing.assert_allclose(unit * 8.0, rms, atol=1e-5)  # unit RMS per feature: sqrt(64)
    out = unit
    assert np.abs(out[0] - out[1]).max() > 1e-3
    raw = MoEEmbeddingTransformer(moe, normalize=False).fit([]).transform(texts)
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).max() > 1e-2
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), out, atol=1e-6)


def test_empty_input_gives_an_empty_matrix(moe):
    est = MoEEmbeddingTransformer(moe).fit([])
    out = est.transform([])
    assert out.shape == (0, 64) and out.dtype == np.float32


def test_every_container_gives_the_same_output(moe):
    texts = ["one", "two words", "three little words"]
    est = MoEEmbeddingTransformer(moe).fit(texts)
    ref = est.transform(texts)
    for X in (tuple(texts), np.asarray(texts, dtype=object), np.asarray(texts),
              pd.Series(texts, index=[7, 8, 9]), pd.DataFrame({"t": texts}), np.asarray(texts, dtype=object)[:, None]):
        np.testing.assert_array_equal(est.transform(X), ref)


BAD_INPUTS = [
    ("bare string", "just one text", TypeError, "wrap it in a list"),
    ("bare bytes", b"bytes", TypeError, "wrap it in a list"),
    ("None", ["ok", "ok", None], ValueError, "row 2"),
    ("NaN", ["ok", "ok", float("nan")], ValueError, "row 2"),
    ("pd.NA", pd.Series(["ok", "ok", pd.NA], dtype="string"), ValueError, "row 2"),
    ("int", ["ok", "ok", 7], TypeError, "row 2 is int"),
    ("bytes item", ["ok", "ok", b"x"], TypeError, "row 2 is bytes"),
    ("lone surrogate", ["ok", "ok", "a\udc80b"], ValueError, "row 2 .*surrogate"),
    ("set", {"a", "b"}, TypeError, "ordered"),
    ("two columns", pd.DataFrame({"a": ["x"], "b": ["y"]}), ValueError, "one text column"),
]


@pytest.mark.parametrize(("label", "X", "error", "match"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_the_row_in_fit_transform_and_similarity(moe, label, X, error, match):
    est = MoEEmbeddingTransformer(moe)
    with pytest.raises(error, match=match):
        est.fit(X)
    est.fit(["fine"])
    with pytest.raises(error, match=match):
        est.transform(X)
    with pytest.raises(error, match=match):
        est.similarity(X)


def test_transform_never_changes_the_estimator(moe, tmp_path):
    for params in ({}, {"output_dtype": "int8"}, {"cache": str(tmp_path / "c.sqlite"), "verbose": 1}):
        est = MoEEmbeddingTransformer(moe, **params).fit(mixed_texts(100, seed=3, max_words=4))
        before = joblib.hash(vars(est))
        est.transform(["new text", "another"])
        est.similarity(["a"], ["b"])
        assert joblib.hash(vars(est)) == before, params


def test_params_changed_after_fit_need_a_refit(moe):
    est = MoEEmbeddingTransformer(moe).fit([])
    est.set_params(truncate_dim=16)
    with pytest.raises(ValueError, match="truncate_dim changed after fit .*None.*16.*call fit again"):
        est.transform(["x"])
    assert est.fit([]).transform(["x"]).shape == (1, 16)
    est.set_params(normalize=False)  # float output: nothing fitted depends on it
    assert np.linalg.norm(est.transform(["x"])) != pytest.approx(1.0)


def test_output_dtype_changes_that_need_nothing_fitted_need_no_refit(moe):
    """float32 <-> float16 and binary <-> ubinary keep the width and use no ranges."""
    est = MoEEmbeddingTransformer(moe).fit(["a", "b", "c"])
    want = est.transform(["x"])
    est.set_params(output_dtype="float16")
    got = est.transform(["x"])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, want, atol=1e-3)
    est.set_params(output_dtype="binary")  # 8 features a byte: another width
    with pytest.raises(ValueError, match="output_dtype changed after fit .*'float32'.*'binary'"):
        est.transform(["x"])
    packed = MoEEmbeddingTransformer(moe, output_dtype="binary").fit(["a", "b", "c"])
    signed = packed.transform(["x"])
    unsigned = packed.set_params(output_dtype="ubinary").transform(["x"])
    np.testing.assert_array_equal(signed.astype(np.int16) + 128, unsigned)


def test_a_bad_normalize_is_refused_before_any_text_is_embedded(moe, monkeypatch):
    from skmoe.embedding import Embedder

    monkeypatch.setattr(Embedder, "_embed", lambda *a: pytest.fail("embedded before checking"))
    for center in (True, False):
        est = MoEEmbeddingTransformer(moe, center=center, normalize="unit")
        with pytest.raises(ValueError, match="normalize"):
            est.fit(["a", "b", "c"])
        with pytest.raises(ValueError, match="normalize"):
            est.set_params(normalize="l2").fit([]).set_params(normalize="unit").transform(["x"])
    monkeypatch.undo()
    assert MoEEmbeddingTransformer(moe, normalize=np.True_, center=False).fit([]).transform(
        ["x"]).shape == (1, 64)  # numpy's bools are bools


@pytest.mark.parametrize(("change", "match"), [
    ({"normalize": False}, "normalize changed after fit .*1.25.*False"),  # ranges of unit vectors
    ({"truncate_dim": 32}, "truncate_dim changed after fit"),  # ranges of 64 features
    ({"output_dtype": "uint8"}, "output_dtype changed after fit .*'int8'.*'uint8'"),
])
def test_int8_ranges_ask_for_a_refit_when_what_they_were_learned_on_changes(moe, change, match):
    texts = mixed_texts(120, seed=5, max_words=6)
    est = MoEEmbeddingTransformer(moe, output_dtype="int8").fit(texts)
    est.set_params(**change)
    with pytest.raises(ValueError, match=match):
        est.transform(texts[:3])
    assert est.fit(texts).transform(texts[:3]).shape[0] == 3


def test_tags_declare_string_input(moe):
    tags = get_tags(MoEEmbeddingTransformer(moe))
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert tags.transformer_tags.preserves_dtype == []


def test_set_output_pandas(moe):
    texts = pd.Series(["alpha", "beta", "gamma"], index=[10, 20, 30])
    est = MoEEmbeddingTransformer(moe).fit(texts)
    ref = est.transform(texts)
    df = est.set_output(transform="pandas").transform(texts)
    assert isinstance(df, pd.DataFrame) and list(df.index) == [10, 20, 30]
    assert list(df.columns) == list(est.get_feature_names_out())
    np.testing.assert_array_equal(df.to_numpy(), ref)
    assert isinstance(est.set_output(transform="default").transform(texts), np.ndarray)


# -- output dtypes and Matryoshka ---------------------------------------------------------------------
def test_truncate_dim_keeps_a_normalised_prefix(moe):
    texts = ["alpha beta", "gamma"]
    full = MoEEmbeddingTransformer(moe, normalize=False).fit([]).transform(texts)
    est = MoEEmbeddingTransformer(moe, truncate_dim=16).fit([])
    out = est.transform(texts)
    assert out.shape == (2, 16) and len(est.get_feature_names_out()) == 16
    np.testing.assert_allclose(out, 1.25 * full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True), atol=1e-5)  # length 1.25


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_int8_ranges_come_from_fit_never_from_the_transform_batch(moe, dtype):
    train = mixed_texts(20, seed=1, max_words=20)
    with pytest.warns(UserWarning, match="learned from only 20 texts"):
        est = MoEEmbeddingTransformer(moe, output_dtype=dtype, device="cpu").fit(train)
    assert est.quantization_ranges_.shape == (2, 64)
    # the ranges of fit's float output (centred on the same texts)
    floats = MoEEmbeddingTransformer(moe, device="cpu").fit(train).transform(train)
    np.testing.assert_allclose(est.quantization_ranges_, [floats.min(0), floats.max(0)], atol=1e-6)
    new = ["an unseen text", "und noch einer", "x"]
    batch = est.transform(new)
    assert batch.dtype == np.dtype(dtype) and batch.shape == (3, 64)
    for i, t in enumerate(new):  # each row alone = its row in the batch: no batch statistics
        np.testing.assert_array_equal(est.transform([t])[0], batch[i])


@pytest.mark.parametrize("train", [[], ["one text"], ["same", "same"]], ids=["none", "one", "twice-one"])
def test_int8_fit_needs_two_distinct_texts(moe, train):
    # one text gives every feature an empty range: every output value would be the same
    with pytest.raises(ValueError, match="at least 2 distinct texts; got"):
        MoEEmbeddingTransformer(moe, output_dtype="int8").fit(train)


@pytest.mark.parametrize("output_dtype", ["int8", "float32"])
def test_fit_transform_runs_the_model_once_and_equals_fit_then_transform(moe, output_dtype):
    texts = mixed_texts(120, seed=4, max_words=6)
    est = MoEEmbeddingTransformer(moe, output_dtype=output_dtype)
    with forward_log(est) as shapes:
        out = est.fit_transform(texts)
    assert sum(rows for rows, _ in shapes) == len(texts)
    np.testing.assert_array_equal(out, clone(est).fit(texts).transform(texts))
    assert out.dtype == np.dtype(output_dtype)


def test_changing_the_prompt_after_fit_asks_for_a_refit(moe):
    est = MoEEmbeddingTransformer(moe, prompt="query: ").fit(["a"])
    est.set_params(prompt="passage: ")
    with pytest.raises(ValueError, match="prompt_name/prompt changed after fit.*'query: '.*'passage: '"):
        est.transform(["a text"])
    # embed fits nothing and follows the current parameters
    np.testing.assert_allclose(est.embed(["a text"]),
                               MoEEmbeddingTransformer(moe, prompt="passage: ").embed(["a text"]))
    np.testing.assert_allclose(est.fit(["a"]).transform(["a text"]), est.embed(["a text"]))


@pytest.mark.parametrize(("param", "value", "error", "match"), [
    ("truncate_dim", 32.0, TypeError, "truncate_dim must be an int or None, got 32.0"),
    ("truncate_dim", "32", TypeError, "truncate_dim must be an int or None"),
    ("truncate_dim", True, TypeError, "truncate_dim must be an int or None, got True"),
    ("truncate_dim", 0, ValueError, r"truncate_dim must be in \[1, 64\], got 0"),
    ("truncate_dim", 65, ValueError, r"truncate_dim must be in \[1, 64\]"),
    ("max_length", 64.5, TypeError, "max_length must be an int or None, got 64.5"),
    ("max_length", 1, ValueError, "max_length must be >= 2"),
    ("batch_size", 0, ValueError, "batch_size must be >= 1, got 0"),
    ("batch_size", 8.0, TypeError, "batch_size must be an int or None"),
    ("max_tokens_per_batch", -1, ValueError, "max_tokens_per_batch must be >= 1"),
])
def test_integer_parameters_are_checked_strictly(moe, param, value, error, match):
    with pytest.raises(error, match=match):
        MoEEmbeddingTransformer(moe, **{param: value}).fit(["a"])
    est = MoEEmbeddingTransformer(moe).fit(["a"]).set_params(**{param: value})
    with pytest.raises(error, match=match):  # also when set after fit
        est.transform(["a"])
    assert MoEEmbeddingTransformer(moe, **{param: np.int64(32)}).fit(["a"]).transform(["a"]).size


def test_a_model_folder_without_tokenizer_fails_at_fit_with_what_to_do(tiny_moe_path):
    with pytest.raises(ValueError, match="has no tokenizer files in .*copy the model's tokenizer files"):
        MoEEmbeddingTransformer(str(tiny_moe_path)).fit(["a"])


@pytest.mark.parametrize(("dtype", "width", "np_dtype"), [("binary", 8, np.int8), ("ubinary", 8, np.uint8),
                                                         ("float16", 64, np.float16)])
def test_other_output_dtypes(moe, dtype, width, np_dtype):
    est = MoEEmbeddingTransformer(moe, output_dtype=dtype).fit([])
    out = est.transform(["one", "two"])
    assert out.shape == (2, width) == (2, est.n_features_out_) and out.dtype == np_dtype
    assert len(est.get_feature_names_out()) == width


# -- batching ---------------------------------------------------------------------------------------
def test_duplicates_are_encoded_once(moe):
    est = MoEEmbeddingTransformer(moe).fit([])
    texts = ["same", "other", "same", "same", "other", "third"]
    with forward_log(est) as shapes:
        out = est.transform(texts)
    assert sum(b for b, _ in shapes) == 3
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])


def test_batches_group_texts_of_similar_token_length(moe):
    short = ["w1", "w2", "w3"]
    long = [" ".join(["word"] * 60) + f" {i}" for i in range(3)]
    texts = [long[0], short[0], long[1], short[1], long[2], short[2]]  # interleaved
    est = MoEEmbeddingTransformer(moe, batch_size=3).fit([])
    with forward_log(est) as shapes:
        est.transform(texts)
    assert len(shapes) == 2
    widths = sorted(s for _, s in shapes)
    assert widths[0] < 10 < 60 < widths[1]  # one short batch and one long batch, no mixing


def test_token_budget_bounds_every_batch(moe):
    texts = mixed_texts(40, seed=3)
    est = MoEEmbeddingTransformer(moe, max_tokens_per_batch=300).fit([])
    with forward_log(est) as shapes:
        est.transform(texts)
    assert all(b * s <= 300 or b == 1 for b, s in shapes)
    assert sum(b for b, _ in shapes) == 40


@pytest.mark.slow
def test_fp32_order_and_batch_invariance(moe):
    """The same text gives the same vector alone, in a batch of 64 mixed-length texts, in any order and
    with any batch size or token budget."""
    texts = mixed_texts(64, max_words=60)
    est = MoEEmbeddingTransformer(moe, device="cpu", dtype="float32").fit([])
    full = est.transform(texts)  # one batch of 64 rows, 2 to ~90 tokens
    alone = clone(est).set_params(batch_size=1).fit([]).transform(texts[::8])
    np.testing.assert_allclose(alone, full[::8], atol=FP32_ATOL, rtol=0)
    perm = np.random.default_rng(0).permutation(64)
    shuffled = clone(est).set_params(batch_size=16).fit([]).transform([texts[i] for i in perm])
    np.testing.assert_allclose(shuffled, full[perm], atol=FP32_ATOL, rtol=0)
    budget = clone(est).set_params(max_tokens_per_batch=700).fit([]).transform(texts)
    np.testing.assert_allclose(budget, full, atol=FP32_ATOL, rtol=0)


@pytest.mark.slow
def test_fp32_batch_invariance_dense_e5(e5_path):
    """The dense path (padding + attention mask) of the real e5 model."""
    texts = mixed_texts(8, seed=5, max_words=30)
    est = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", device="cpu", dtype="float32").fit([])
    full = est.transform(texts)
    alone = clone(est).set_params(batch_size=1).fit([]).transform(texts[::3])
    np.testing.assert_allclose(alone, full[::3], atol=FP32_ATOL, rtol=0)
    small = clone(est).set_params(batch_size=3).fit([]).transform(texts[::-1])[::-1]
    np.testing.assert_allclose(small, full, atol=FP32_ATOL, rtol=0)


@pytest.mark.slow
def test_other_precisions_stay_close_and_do_not_depend_on_batch_mates(fast_moe):
    """Each non-fp32 mode this machine runs (int8 on CPU; bf16/fp16 on GPU) on the MoE model.

    (tests/engine/test_precision.py checks the engine itself, dense int8 included.)"""
    from skmoe.encoder.loading import resolve_device
    from skmoe.engine.precision import supported_precisions

    texts = mixed_texts(16, seed=7, max_words=40)
    fp32 = MoEEmbeddingTransformer(str(fast_moe), dtype="float32").fit([]).transform(texts)
    modes = [m for m in supported_precisions(resolve_device(None)) if m != "float32"]
    if not modes:
        pytest.skip("no reduced-precision mode on this machine")
    for mode in modes:
        est = MoEEmbeddingTransformer(str(fast_moe), dtype=mode).fit([])
        full = est.transform(texts)
        assert full.dtype == np.float32
        alone = clone(est).set_params(batch_size=1).fit([]).transform(texts[::5])
        np.testing.assert_allclose(alone, full[::5], atol=PRECISION_ATOL[mode], rtol=0, err_msg=mode)
        small = clone(est).set_params(batch_size=5).fit([]).transform(texts)
        np.testing.assert_allclose(small, full, atol=PRECISION_ATOL[mode], rtol=0, err_msg=mode)
        assert np.einsum("ij,ij->i", full, fp32).min() > 0.99, mode  # cosine to the fp32 vector


def test_large_inputs_stream_in_chunks(moe, monkeypatch):
    texts = mixed_texts(30, seed=2)
    est = MoEEmbeddingTransformer(moe).fit([])
    ref = est.transform(texts)
    sizes: list[int] = []
    real_iter = Engine.iter_embed_chunks

    def spy(self, chunks, prompt="", **kwargs):
        return real_iter(self, (sizes.append(len(c)) or c for c in chunks), prompt, **kwargs)

    monkeypatch.setattr(embedding_module, "CHUNK_SIZE", 8)
    monkeypatch.setattr(Engine, "iter_embed_chunks", spy)
    np.testing.assert_allclose(est.transform(texts), ref, atol=FP32_ATOL, rtol=0)
    assert sizes == [8, 8, 8, 6]


def test_verbose_shows_a_progress_bar_with_rate_and_eta(moe, capsys):
    texts = mixed_texts(12, seed=4)
    MoEEmbeddingTransformer(moe, verbose=2).fit([]).transform(texts)
    err = capsys.readouterr().err
    assert "embedding" in err and "12/12" in err
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", err)  # elapsed<ETA
    assert re.search(r"(text/s|s/text)", err)  # rate


def test_progress_by_default_only_when_the_call_runs_long(moe, capsys, monkeypatch):
    texts = mixed_texts(12, seed=5)
    MoEEmbeddingTransformer(moe).fit([]).transform(texts)  # default verbose=1, a short call
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(embedding_module, "PROGRESS_DELAY", 0.0)  # as if it ran long
    MoEEmbeddingTransformer(moe).fit([]).transform(texts)
    assert "12/12" in capsys.readouterr().err
    for quiet in (0, False):
        MoEEmbeddingTransformer(moe, verbose=quiet).fit([]).transform(texts)
        assert capsys.readouterr().err == ""


def test_progress_counts_input_rows_cached_and_duplicated(moe, tmp_path, capsys):
    est = MoEEmbeddingTransformer(moe, cache=str(tmp_path / "c.sqlite"), verbose=2).fit([])
    est.transform(["a", "b"])
    capsys.readouterr()
    est.transform(["a", "b", "c", "c", "a"])  # 3 rows found, 2 rows from one computed text
    assert "5/5" in capsys.readouterr().err


def test_fully_cached_transform_never_loads_the_model(moe, tmp_path, monkeypatch):
    cache = str(tmp_path / "c.sqlite")
    texts = mixed_texts(10, seed=6)
    first = MoEEmbeddingTransformer(moe, cache=cache).fit_transform(texts)
    registry.clear()  # a new process: nothing loaded, nothing resolved

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every text is cached")

    monkeypatch.setattr(registry, "load_encoder", no_load)
    est = MoEEmbeddingTransformer(moe, cache=cache)
    np.testing.assert_array_equal(est.fit_transform(texts), first)
    np.testing.assert_array_equal(est.transform(texts[::-1]), first[::-1])
    monkeypatch.undo()
    registry.clear()
    assert np.isfinite(est.transform(texts + ["a text not cached yet"])).all()  # loads on a miss
    assert len(registry.loaded()) == 1


def test_lazy_and_loaded_paths_share_one_namespace(moe, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    est = MoEEmbeddingTransformer(moe, cache=cache).fit(["x"])
    encoder = est.get_encoder()
    card = estimator_module.ModelCard.of(encoder)
    assert est._embedder(card, est.prompt_).namespace == est.cache_namespace(encoder, est.prompt_)
    lazy = est._model()
    assert isinstance(lazy, estimator_module.ModelCard) and lazy == card
    assert est.model_card() == card  # the public face (the MTEB adapter reads it)
    registry.clear()
    no_cache = MoEEmbeddingTransformer(moe)
    assert no_cache.model_card() == card and len(registry.loaded()) == 1  # read off the encoder


def test_embed_full_checks_its_texts(moe):
    est = MoEEmbeddingTransformer(moe)
    with pytest.raises(TypeError, match="str"):  # gave one vector per character
        est.embed_full("hello")
    with pytest.raises(ValueError, match="texts: Missing text at row 1"):
        est.embed_full(["fine", None, "x"])


# -- sklearn composition ---------------------------------------------------------------------------
LABELLED = [
    ("I love this film, wonderful acting", 1), ("What a great and moving story", 1),
    ("A delightful, funny evening", 1), ("Brilliant work by the whole cast", 1),
    ("Superb soundtrack and great direction", 1), ("One of the best films this year", 1),
    ("Terrible plot and awful dialogue", 0), ("I hated every minute of it", 0),
    ("Boring, slow and far too long", 0), ("The worst acting I have ever seen", 0),
    ("A complete waste of time and money", 0), ("Dull characters and a silly ending", 0),
]


def test_pipeline_fit_predict(moe):
    X = [t for t, _ in LABELLED]
    y = np.array([label for _, label in LABELLED])
    pipe = Pipeline([("embed", MoEEmbeddingTransformer(moe)), ("clf", LogisticRegression(C=1e4, max_iter=2000))])
    pred = pipe.fit(X, y).predict(X)
    assert pred.shape == (12,) and set(pred) <= {0, 1}
    assert (pred == y).mean() == 1.0  # 12 distinct texts are separable in 64-d
    assert pipe.predict_proba(["an unseen review"]).shape == (1, 2)


@pytest.mark.slow
def test_grid_search_loads_the_model_once(fast_moe):
    """Every clone shares the registry's copy (n_jobs=1; process workers load once per worker)."""
    X = [t for t, _ in LABELLED]
    y = [label for _, label in LABELLED]
    registry.clear(fast_moe)
    before = sum(registry.LOAD_COUNTS.values())
    pipe = Pipeline([("embed", MoEEmbeddingTransformer(str(fast_moe))), ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0, 10.0]}, cv=2, n_jobs=1).fit(X, y)
    assert sum(registry.LOAD_COUNTS.values()) - before == 1
    assert len(search.cv_results_["params"]) == 3  # 3 x 2 fits + the refit all shared one copy


def test_column_transformer_with_a_text_column(moe):
    df = pd.DataFrame({
        "text": [t for t, _ in LABELLED],
        "stars": np.arange(12.0), "length": [len(t) for t, _ in LABELLED],
    })
    y = [label for _, label in LABELLED]
    for column in ("text", ["text"]):  # a Series, or a one-column DataFrame
        ct = ColumnTransformer([("embed", MoEEmbeddingTransformer(moe), column),
                                ("num", StandardScaler(), ["stars", "length"])])
        out = ct.fit_transform(df)
        assert out.shape == (12, 66)
        names = ct.get_feature_names_out()
        assert names[0] == "embed__embedding_0" and names[-1] == "num__length"
    pipe = Pipeline([("features", ct), ("clf", LogisticRegression(max_iter=1000))]).fit(df, y)
    assert pipe.predict(df.iloc[:3]).shape == (3,)


@pytest.mark.slow
def test_cross_val_score_on_sib200_english(e5_path, sib200_dir, tmp_path):
    """Real e5 + logistic regression on SIB-200 English topics (7 classes, majority class = 0.25)."""
    frames = [pd.read_csv(sib200_dir / "eng_Latn" / f"{split}.tsv", sep="\t") for split in ("train", "test")]
    data = pd.concat(frames, ignore_index=True)
    # 140 texts keep it quick; C=10 suits unit-norm features (C=1 over-regularises: ~0.45 here,
    # C=10 scores 0.70-0.77 over four seeds; all 905 texts reach ~0.88).
    sample, _ = train_test_split(data, train_size=140, stratify=data["category"], random_state=0)
    majority = sample["category"].value_counts(normalize=True).iloc[0]
    # The cache makes each text's embedding computed once across the 5 folds.
    embed = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", cache=str(tmp_path / "sib.sqlite"))
    pipe = Pipeline([("embed", embed), ("clf", LogisticRegression(C=10, max_iter=3000))])
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_score(pipe, sample["text"], sample["category"], cv=cv)
    assert majority < 0.3
    assert scores.mean() >= 0.5, scores
    stats = embed.cache_stats()
    assert stats.entries == sample["text"].nunique()


# -- cache ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:int8/uint8 ranges learned from only")
def test_warm_transform_never_touches_the_model(moe, tmp_path):
    cache = str(tmp_path / "emb.sqlite")
    texts = mixed_texts(10, seed=8)
    est = MoEEmbeddingTransformer(moe, cache=cache).fit([])
    cold = est.transform(texts + texts[:3])  # duplicates are looked up and stored once
    first = est.cache_stats()
    assert (first.entries, first.hits, first.misses) == (10, 0, 10)
    with model_forbidden(est):
        warm = est.transform(texts)
        # Post-processing happens after the cache: other widths, norms and dtypes hit as well.
        MoEEmbeddingTransformer(moe, cache=cache, truncate_dim=8, normalize=False).fit([]).transform(texts)
        MoEEmbeddingTransformer(moe, cache=cache, output_dtype="int8").fit(texts).transform(texts)
        clone(est).fit([]).transform(texts)  # a clone in the same process shares the counters
    np.testing.assert_array_equal(warm, cold[:10])
    second = est.cache_stats()
    assert (second.entries, second.hits, second.misses) == (10, 50, 10)
    with model_forbidden(est), pytest.raises(AssertionError, match="the model ran"):
        est.transform(["a text not yet cached"])


def test_a_cached_text_that_was_cut_is_warned_about_again(moe, tmp_path):
    from skmoe.embedding import _REPORTED_CUTS
    from skmoe.engine.runner import TruncationWarning

    est = MoEEmbeddingTransformer(moe, cache=str(tmp_path / "emb.sqlite"), max_length=16).fit([])
    long_text, short = "word " * 40, "short text"
    with pytest.warns(TruncationWarning, match="1 text"):
        cold = est.transform([long_text, short])
    _REPORTED_CUTS.clear()  # as in a later process: one process names each cut text once
    with model_forbidden(est):
        with pytest.warns(TruncationWarning, match="1 text.*exceed the maximum length") as caught:
            warm = est.transform([short, long_text])
        assert caught[0].filename == __file__
        with warnings.catch_warnings():
            warnings.simplefilter("error", TruncationWarning)
            est.transform([short])  # nothing long: not even tokenized for the check
    np.testing.assert_array_equal(warm, cold[::-1])


def test_a_cache_hit_knows_it_was_cut_without_tokenizing(moe, tmp_path, monkeypatch):
    from skmoe.cache import EmbeddingCache
    from skmoe.embedding import _REPORTED_CUTS
    from skmoe.engine.runner import TruncationWarning

    path = tmp_path / "emb.sqlite"
    est = MoEEmbeddingTransformer(moe, cache=str(path), max_length=16).fit([])
    long_cut, long_fits = "word " * 40, "x" * 30  # both longer than 16 bytes; one is cut
    with pytest.warns(TruncationWarning, match="1 text"):
        est.transform([long_cut, long_fits])
    encoder = est.get_encoder()

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized on a cache hit")

    _REPORTED_CUTS.clear()  # as in a later process
    with monkeypatch.context() as m:
        m.setattr(encoder, "tokenize", no_tokenizing)
        with model_forbidden(est), pytest.warns(TruncationWarning, match="1 text.*: word word"):
            est.transform([long_fits, long_cut])
    # rows stored without the flag (older files, other writers) are checked by tokenizing
    cache = EmbeddingCache(path)
    cache._conn().execute("UPDATE embeddings SET cut = NULL")
    _REPORTED_CUTS.clear()
    with model_forbidden(est), pytest.warns(TruncationWarning, match="1 text"):
        est.transform([long_fits, long_cut])


def test_cached_vectors_equal_computed_ones(moe, tmp_path):
    texts = mixed_texts(6, seed=9)
    plain = MoEEmbeddingTransformer(moe).fit([]).transform(texts)
    cached = MoEEmbeddingTransformer(moe, cache=str(tmp_path / "c.sqlite")).fit([])
    cached.transform(texts)
    np.testing.assert_array_equal(cached.transform(texts), plain)


def test_changed_prompt_or_revision_misses(fast_moe, tmp_path):
    cache = str(tmp_path / "emb.sqlite")
    texts = ["one text", "two texts"]
    base = MoEEmbeddingTransformer(str(fast_moe), cache=cache, revision="r1").fit([])
    base.transform(texts)
    assert base.cache_stats().misses == 2
    with model_forbidden(base):  # same model, spelled differently: hits
        clone(base).set_params(dtype="float32", device="cpu", model=str(fast_moe) + "/").fit([]).transform(texts)
    for changed in ({"prompt_name": "query"}, {"max_length": 8}):
        est = clone(base).set_params(**changed).fit([])
        with forward_log(est) as shapes:
            est.transform(texts)
        assert sum(b for b, _ in shapes) == 2, changed
    # another revision of the same files (a hub commit that changed only the README): the
    # fingerprint covers every file that changes a vector, so the cache serves it
    other = clone(base).set_params(revision="r2").fit([])
    with model_forbidden(other):
        other.transform(texts)
    stats = base.cache_stats()
    assert (stats.hits, stats.misses, stats.namespaces) == (4, 6, 3)


def test_rows_written_under_the_revision_keyed_recipe_are_found_and_copied(fast_moe, tmp_path):
    """Caches written before the revision left the key (2026-12-05) keep serving their rows."""
    from skmoe.cache import EmbeddingCache, embedding_namespace

    cache = str(tmp_path / "old.sqlite")
    texts = ["one text", "two texts", "three"]
    est = MoEEmbeddingTransformer(str(fast_moe), cache=cache, center=False, normalize=False).fit([])
    embedder = est._embedder(est._model(), est.prompt_)
    assert embedder.namespace != embedder.legacy_namespace
    assert embedder.legacy_namespace == embedding_namespace(
        **{**embedder.labels, "model_fingerprint": est.model_fingerprint_}, with_revision=True)[0]
    old = EmbeddingCache(cache)
    stored = np.random.default_rng(0).normal(size=(2, est.embedding_dim_)).astype(np.float32)
    old.put_many(embedder.legacy_namespace, texts[:2], stored, cut=[False, False])
    with forward_log(est) as shapes:
        got = est.transform(texts)
    assert sum(b for b, _ in shapes) == 1  # only the text no recipe holds was computed
    np.testing.assert_array_equal(got[:2], stored)
    found, _ = old.lookup(embedder.namespace, texts)
    assert found.all()  # copied: the next run looks in one namespace
    stats = est.cache_stats()
    assert (stats.hits, stats.misses) == (2, 1)


def test_interrupted_run_keeps_finished_batches(moe, tmp_path, monkeypatch):
    cache = str(tmp_path / "emb.sqlite")
    texts = mixed_texts(20, seed=10)
    est = MoEEmbeddingTransformer(moe, cache=cache, batch_size=5).fit([])
    real_launch = Engine._launch
    calls = []

    def flaky(self, ids, batch):
        calls.append(len(batch.rows))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_launch(self, ids, batch)

    monkeypatch.setattr(Engine, "_launch", flaky)
    with pytest.raises(KeyboardInterrupt):
        est.transform(texts)
    assert calls == [5, 5, 5]
    # the two finished batches, the second one still in flight when the interrupt came
    assert est.cache_stats().entries == 10
    monkeypatch.setattr(Engine, "_launch", real_launch)
    with forward_log(est) as shapes:
        est.transform(texts)
    assert sum(b for b, _ in shapes) == 10  # only the texts not yet cached


# -- pickling ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:int8/uint8 ranges learned from only")
def test_pickle_round_trip_is_small_and_equal(moe, tmp_path):
    est = MoEEmbeddingTransformer(moe, cache=str(tmp_path / "c.sqlite"), output_dtype="int8").fit(mixed_texts(8))
    blob = pickle.dumps(est)
    assert len(blob) < 10_000
    again = pickle.loads(blob)
    assert again.get_encoder() is est.get_encoder()
    np.testing.assert_array_equal(again.transform(["x", "y z"]), est.transform(["x", "y z"]))
    np.testing.assert_array_equal(again.quantization_ranges_, est.quantization_ranges_)


FRESH_PROCESS = """
import sys, joblib, numpy as np
from skmoe import registry
pipe = joblib.load(sys.argv[1])
texts = [line for line in open(sys.argv[2], encoding="utf-8").read().split("\\n") if line]
np.save(sys.argv[3], pipe.predict_proba(texts))
assert sum(registry.LOAD_COUNTS.values()) == 1
"""


@pytest.mark.slow
def test_pickled_pipeline_predicts_identically_in_a_fresh_process(fast_moe, tmp_path):
    X = [t for t, _ in LABELLED]
    y = [label for _, label in LABELLED]
    pipe = Pipeline([("embed", MoEEmbeddingTransformer(str(fast_moe))), ("clf", LogisticRegression())]).fit(X, y)
    queries = ["a wonderful film", "awful and boring", "neutral words here"]
    expected = pipe.predict_proba(queries)
    path = tmp_path / "pipe.joblib"
    joblib.dump(pipe, path)
    assert path.stat().st_size < 1_000_000
    (tmp_path / "q.txt").write_text("\n".join(queries), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(path), str(tmp_path / "q.txt"), str(tmp_path / "p.npy")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-6, rtol=0)


def test_changed_weights_are_detected_on_reload(fast_moe, tmp_path):
    folder = Path(shutil.copytree(fast_moe, tmp_path / "model"))
    X = [t for t, _ in LABELLED]
    y = [label for _, label in LABELLED]
    pipe = Pipeline([("embed", MoEEmbeddingTransformer(str(folder))), ("clf", LogisticRegression())]).fit(X, y)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    fitted = pipe.named_steps["embed"].model_fingerprint_
    make_random_moe(folder, seed=1, vocab_size=30528)  # other random weights, same layout
    registry.clear(folder)  # as in a fresh process
    reloaded = joblib.load(tmp_path / "pipe.joblib")
    with pytest.raises(WeightsChangedError, match=fitted):
        reloaded.predict(X[:2])
    # Refitting accepts the new weights.
    assert reloaded.fit(X, y).named_steps["embed"].model_fingerprint_ != fitted
    registry.clear(folder)


def test_same_weights_under_another_revision_warn(fast_moe):
    est = MoEEmbeddingTransformer(str(fast_moe), revision="v1").fit([])
    est.set_params(revision="v2")  # as if the hub branch had moved to a commit with the same weights
    with pytest.warns(UserWarning, match="weights are identical"):
        est.transform(["x"])


def test_embed_to_names_its_own_format_argument(moe, tmp_path):
    est = MoEEmbeddingTransformer(moe).fit(["a", "b"])
    with pytest.raises(ValueError, match=r"^format=parquet does not match the extension of "
                                         r".*v\.npy; .*leave out format="):
        est.embed_to(["a"], tmp_path / "v.npy", format="parquet")
    assert not list(tmp_path.iterdir())


def test_embed_to_refuses_ids_it_would_misplace_or_drop(moe, tmp_path):
    """A reversed ids Series was paired with the texts by position (id 12 beside 'cat'), and
    ids with an array out were dropped without a word (audit)."""
    est = MoEEmbeddingTransformer(moe, verbose=0).fit([])
    texts = pd.Series(["cat", "dog", "car"], index=[10, 11, 12])
    with pytest.raises(ValueError, match="different indexes"):
        est.embed_to(texts, tmp_path / "v.parquet", ids=texts.index.to_series()[::-1])
    with pytest.raises(ValueError, match="ids are written beside the vectors in a Parquet"):
        est.embed_to(texts, np.empty((3, est.n_features_out_), np.float32), ids=[1, 2, 3])
    assert not list(tmp_path.iterdir())
    est.embed_to(texts, tmp_path / "v.parquet", ids=texts.index.to_series())
    assert pd.read_parquet(tmp_path / "v.parquet")["id"].tolist() == [10, 11, 12]
    # a chunk_size of another type: raw Python errors before ('<' between str and int)
    for bad, error in (("10", TypeError), (2.5, TypeError), (True, TypeError), (0, ValueError)):
        with pytest.raises(error, match="chunk_size must be"):
            est.embed_to(texts, tmp_path / "w.npy", chunk_size=bad)
    assert not (tmp_path / "w.npy").exists()


def test_warnings_from_a_grid_search_point_at_the_users_line(moe):
    """joblib runs cross_val_score's and GridSearchCV's fits (sequentially too): its frames
    were taken for the user's, so every warning pointed into joblib/parallel.py."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    from skmoe.engine.runner import TruncationWarning

    texts = [f"{i} " + "word " * 40 for i in range(12)]
    pipe = make_pipeline(MoEEmbeddingTransformer(moe, max_length=16, center=False),
                         LogisticRegression())
    with pytest.warns(TruncationWarning) as caught:
        cross_val_score(pipe, texts, [0, 1] * 6, cv=2)
    assert {w.filename for w in caught if w.category is TruncationWarning} == {__file__}
