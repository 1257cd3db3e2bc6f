"""What a wheel and an sdist of skmoe hold: the licence texts (the code's Apache-2.0 and the
bundled data's CC BY-SA 4.0), ``py.typed``, the data, every dependency imported directly, one
version, and in the sdist the whole test tree (conftest, helpers and data included)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import skmoe

REPO = Path(__file__).resolve().parents[1]
#: What a build reads; copied so that building writes nothing (build/, *.egg-info) in the tree.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "skmoe", "tests")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """A wheel (``pip wheel --no-build-isolation``) and an sdist (``python -m build --sdist
    --no-isolation``, or where ``build`` is absent the same setuptools hook it calls)."""
    root = tmp_path_factory.mktemp("packaging")
    src, out = root / "src", root / "dist"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        if not (REPO / name).exists():  # e.g. no MANIFEST.in: the checks below say what is missing
            continue
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(out), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    try:
        import build  # noqa: F401

        cmd = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), "."]
    except ImportError:  # the PEP 517 hook `build` calls, run in this environment
        cmd = [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
               "b.build_sdist(sys.argv[1])", str(out)]
    built = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "src": src}


def test_the_wheel_holds_the_licences_py_typed_and_the_data(dist):
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA")).rpartition("/")[0]
        metadata = whl.read(f"{info}/METADATA").decode()
        licence = whl.read(f"{info}/licenses/LICENSE").decode()
    assert {"skmoe/py.typed", "skmoe/datasets/data/sib200_sample.tsv",
            "skmoe/datasets/data/LICENSE", f"{info}/licenses/skmoe/datasets/data/LICENSE"} <= names
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    fields = [tuple(line.split(": ", 1)) for line in metadata.split("\n\n", 1)[0].splitlines()]
    assert ("License-Expression", "Apache-2.0 AND CC-BY-SA-4.0") in fields
    assert {("License-File", "LICENSE"), ("License-File", "skmoe/datasets/data/LICENSE"),
            ("Version", skmoe.__version__), ("Classifier", "Typing :: Typed")} <= set(fields)
    requires = {re.split(r"[<>=;\[ ]", v, maxsplit=1)[0].lower()
                for k, v in fields if k == "Requires-Dist" and "extra ==" not in v}
    assert {"scipy", "scikit-learn", "torch", "pyarrow", "safetensors"} <= requires


def test_the_sdist_holds_the_whole_test_tree(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    tests = {n for n in names if n.startswith("tests/")}
    assert {"LICENSE", "skmoe/py.typed", "skmoe/datasets/data/LICENSE", "MANIFEST.in",
            "tests/conftest.py", "tests/_assets.py", "tests/engine/conftest.py",
            "tests/data/nomic-moe-tiny/model.safetensors"} <= names
    copied = dist["src"]  # the tree it was built from, less __pycache__
    here = {p.relative_to(copied).as_posix() for p in (copied / "tests").rglob("*")
            if p.is_file() and p.suffix not in (".sqlite", ".sqlite-wal", ".sqlite-shm")}
    assert here <= tests, sorted(here - tests)[:10]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert dist["sdist"].stat().st_size < 8e6  # the whole tree, not a few stray test files


def test_the_version_has_one_owner():
    """pyproject reads skmoe.__version__; the two were written separately and could drift."""
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert not re.search(r"^version = \"", pyproject, re.M)  # no second, static copy
    assert re.search(r'^version = \{ attr = "skmoe.__version__" \}', pyproject, re.M)
