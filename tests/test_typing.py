"""skmoe ships ``py.typed``, so users' type checkers trust its hints. mypy checks two files of
user code against them: ``tests/typing/user_code.py`` (correct use of the documented API) must
give no error, and ``tests/typing/wrong_usage.py`` an error on each line whose comment starts
with ``expect-error``, and nowhere else. skmoe's own modules are analysed but their errors are
silenced (``--follow-imports=silent``), as for a package installed from a wheel."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPING = ROOT / "tests" / "typing"
USER_CODE = TYPING / "user_code.py"
WRONG_USAGE = TYPING / "wrong_usage.py"
_EXPECT = re.compile(r"#\s*expect-error\b")
_ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: ", re.M)


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One mypy run over both files (skmoe, numpy, pandas-stubs and torch analysed once),
    with a fresh cache and a config of its own: no earlier run or local setting changes it."""
    import mypy  # noqa: F401 - in the test extra: missing, this fails rather than skips

    tmp = tmp_path_factory.mktemp("mypy")
    config = tmp / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # skmoe from this checkout, not an install
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config),
           "--cache-dir", str(tmp / "cache"), "--ignore-missing-imports",
           "--follow-imports=silent", "--no-color-output", "--hide-error-context",
           "--show-error-codes", str(USER_CODE.relative_to(ROOT)),
           str(WRONG_USAGE.relative_to(ROOT))]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode not in (0, 1):  # 2: mypy itself failed (bad flag, crash)
        pytest.fail(f"mypy exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _error_lines(output: str, path: Path) -> set[int]:
    name = str(path.relative_to(ROOT))
    return {int(m["line"]) for m in _ERROR.finditer(output)
            if os.path.normpath(m["path"]) == os.path.normpath(name)}


@pytest.mark.slow  # one mypy run for both tests: about 20 s (skmoe, numpy, pandas, torch)
def test_documented_usage_type_checks(mypy_output):
    errors = _error_lines(mypy_output, USER_CODE)
    assert not errors, f"mypy flags correct use of skmoe's API:\n{mypy_output}"


@pytest.mark.slow
def test_wrong_usage_is_flagged(mypy_output):
    lines = WRONG_USAGE.read_text(encoding="utf-8").splitlines()
    expected = {i for i, line in enumerate(lines, 1) if _EXPECT.search(line)}
    assert expected, "wrong_usage.py marks no line"
    assert _error_lines(mypy_output, WRONG_USAGE) == expected, (
        f"expected mypy errors on lines {sorted(expected)} of {WRONG_USAGE.name}:\n{mypy_output}")


def test_type_checkers_see_every_top_level_name():
    """``skmoe/__init__.py`` imports its exports lazily (``__getattr__``); the block under
    ``if TYPE_CHECKING:`` names each for type checkers, from the module ``_EXPORTS`` names."""
    import skmoe

    tree = ast.parse((ROOT / "skmoe" / "__init__.py").read_text(encoding="utf-8"))
    seen: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1, ast.unparse(imp)
                for alias in imp.names:
                    assert alias.asname == alias.name, f"re-export {alias.name} as itself"
                    seen[alias.name] = f"skmoe.{imp.module}"
    assert seen == skmoe._EXPORTS
