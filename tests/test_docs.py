"""The documentation site builds with ``mkdocs build --strict`` and documents the public API.

Strict mode (with the link and anchor validation set in ``mkdocs.yml``) turns every warning
into a failure: a broken link or anchor, a page missing from the nav, a docstring mkdocstrings
cannot parse, an API page naming something that no longer exists.
"""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import skmoe
import skmoe.evaluation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
         "-d", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def api_ids(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "api").rglob("index.html"):
        ids |= set(re.findall(r'id="(skmoe\.[\w.]+)"', page.read_text(encoding="utf-8")))
    return ids


def test_strict_build_writes_every_nav_page(site: Path) -> None:
    for page in ("getting-started", "concepts/moe-encoder", "concepts/estimator-and-cache",
                 "concepts/evaluation", "examples", "performance", "scale-out",
                 "evaluation-results", "design", "api/estimator", "api/evaluation"):
        assert (site / page / "index.html").is_file(), page


def test_sphinx_roles_render_as_code(site: Path) -> None:
    """Docstrings keep numpydoc roles (:class:`~x.Y`); the site shows them as plain code."""
    assert ":class:`" in inspect.getdoc(skmoe.evaluation.FewShotSplit)
    for page in (site / "api").rglob("index.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r":(class|func|meth|attr|mod)(:|</span>)", text), page
    page = (site / "api" / "evaluation" / "index.html").read_text(encoding="utf-8")
    assert "<code>FewShotWarning</code>" in page


def test_api_reference_is_generated_from_docstrings(site: Path) -> None:
    page = html.unescape((site / "api" / "estimator" / "index.html").read_text(encoding="utf-8"))
    summary = inspect.getdoc(skmoe.MoEEmbeddingTransformer).splitlines()[0]
    assert summary in page
    assert 'id="skmoe.estimator.MoEEmbeddingTransformer.fit"' in page
    for inherited in ("similarity", "similarity_pairwise", "search", "embed"):  # from mixins
        assert f'id="skmoe.estimator.MoEEmbeddingTransformer.{inherited}"' in page


@pytest.mark.parametrize(
    "module, names",
    [(skmoe, [n for n in skmoe.__all__ if n != "__version__"]),
     (skmoe.evaluation, skmoe.evaluation.__all__)],
    ids=["skmoe", "skmoe.evaluation"],
)
def test_public_names_are_documented(site: Path, module, names: list[str]) -> None:
    documented = {i.rsplit(".", 1)[-1] for i in api_ids(site)}
    missing = sorted(set(names) - documented)
    assert not missing, f"public names of {module.__name__} missing from docs/api: {missing}"
