"""The package beyond Linux: what Windows and macOS lack must not stop an import or a run.

CI runs on Linux only, so these tests take away, in one process, what the other systems do
not have (Windows: ``resource``, ``fcntl``, ``termios``, ``pwd``, ``grp``; neither: ``/proc``)
and check that every module still imports and that the code which probes the system degrades.
"""

from __future__ import annotations

import os
import subprocess
import sys

_WINDOWS_ABSENT = ("resource", "fcntl", "termios", "pwd", "grp")


def test_every_module_imports_without_the_posix_only_modules():
    """``skmoe.engine.memory`` imported ``resource`` (POSIX only) at the top: ``import skmoe``
    failed on Windows, for a function nothing called."""
    code = ("import sys, importlib, pkgutil\n"
            f"for name in {_WINDOWS_ABSENT!r}:\n"
            "    sys.modules[name] = None\n"
            "import skmoe\n"
            "failed = []\n"
            "for m in pkgutil.walk_packages(skmoe.__path__, 'skmoe.'):\n"
            "    try:\n"
            "        importlib.import_module(m.name)\n"
            "    except ImportError as e:\n"
            f"        if any(name in str(e) for name in {_WINDOWS_ABSENT!r}):\n"
            "            failed.append((m.name, str(e)))\n"
            "assert not failed, failed\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_leftover_partial_files_are_kept_off_posix(tmp_path, monkeypatch):
    """On Windows ``os.kill(pid, 0)`` is no probe: it sends CTRL_C_EVENT to the process group
    ``pid``. Off POSIX a leftover's run counts as alive, so it is kept and nothing is signalled."""
    import skmoe._partial_files as files

    leftover = tmp_path / f"out.npy.{files._HOST}.{2**22 + 17}.abc.partial"
    leftover.write_bytes(b"x")
    signalled = []
    monkeypatch.setattr(os, "kill", lambda *a: signalled.append(a))
    monkeypatch.setattr(os, "name", "nt")
    files.remove_orphans(tmp_path / "out.npy")
    monkeypatch.setattr(os, "name", "posix")
    assert leftover.exists() and signalled == []
    monkeypatch.undo()
    files.remove_orphans(tmp_path / "out.npy")  # on POSIX: no such process, removed
    assert not leftover.exists()


def test_without_proc_the_cpu_offers_what_needs_no_flags(monkeypatch):
    """No ``/proc/cpuinfo`` (macOS, Windows): no CPU flag is known, so bf16 (which needs
    AVX512-BF16 or AMX to be fast) is not offered; float32 always is."""
    from skmoe.engine import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    modes = precision.supported_precisions("cpu")
    assert modes[0] == "float32" and "bfloat16" not in modes
