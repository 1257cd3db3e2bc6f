"""Prompt tables: from config_sentence_transformers.json, the nomic defaults when it is absent,
case-insensitive lookup with document = passage, and a clear error for unknown names."""

from __future__ import annotations

import pytest

from skmoe import load_encoder


@pytest.fixture(scope="module")
def enc(tiny_moe_path):
    return load_encoder(tiny_moe_path, device="cpu")


@pytest.fixture(scope="module")
def bare_nomic(tiny_moe_path, tmp_path_factory):
    """The tiny checkpoint without any sentence-transformers side file."""
    folder = tmp_path_factory.mktemp("bare")
    for name in ("config.json", "model.safetensors"):
        (folder / name).symlink_to(tiny_moe_path / name)
    return load_encoder(folder, device="cpu")


def test_table_from_sentence_transformers_file(enc):
    assert enc.prompts["query"] == "search_query: "
    assert enc.prompts["Classification"] == "classification: "
    assert enc.default_prompt_name is None
    assert enc.resolve_prompt() == ""  # no default name: no prefix


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("query", "search_query: "),
        ("QUERY", "search_query: "),
        ("passage", "search_document: "),
        ("document", "search_document: "),
        ("Document", "search_document: "),
        ("classification", "classification: "),
        ("clustering", "clustering: "),
        ("sts", "classification: "),
    ],
)
def test_lookup(enc, bare_nomic, name, prefix):
    assert enc.resolve_prompt(name) == prefix
    assert bare_nomic.resolve_prompt(name) == prefix  # the defaults hold the same table


def test_explicit_prompt_wins(enc):
    assert enc.resolve_prompt("query", prompt="custom: ") == "custom: "
    assert enc.resolve_prompt(prompt="") == ""


def test_unknown_name_is_a_clear_error(enc):
    with pytest.raises(ValueError, match=r"Unknown prompt_name 'summarise'.*known: .*query.*prompt="):
        enc.resolve_prompt("summarise")


def test_defaults_only_for_nomic_models(minilm_encoder):
    minilm = minilm_encoder
    assert minilm.prompts == {}
    assert minilm.resolve_prompt() == ""
    with pytest.raises(ValueError, match="no prompt table"):
        minilm.resolve_prompt("query")
