"""Outputs written under a run's own temporary name and renamed when complete.

``NAME.<host>.<pid>.<random>.partial`` beside the output: the embedding files
(:mod:`skmoe.embedding_files`) and the pre-quantized folders
(:mod:`skmoe.engine.quantized_io`) are written so, and a later run removes the leftovers of
killed ones. A leaf module: it imports nothing from skmoe, so any layer may use it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def make_partial(path: Path, *, folder: bool = False) -> Path:
    """Create and return the file (or, with ``folder``, the folder) to write ``path`` in, renamed
    to ``path`` once complete: ``NAME.<host>.<pid>.<random>.partial`` beside it.

    The name is the run's own: two runs writing one output each write their own (a shared
    ``OUTPUT.partial`` was truncated under the other run's memory map: SIGBUS, or its rows
    lost); the host and process in it let a later run remove a killed run's leftovers, which
    this does first (:func:`remove_orphans`).
    """
    remove_orphans(path)
    kwargs = {"dir": path.parent, "prefix": f"{path.name}.{_HOST}.{os.getpid()}.",
              "suffix": ".partial"}
    if folder:
        return Path(tempfile.mkdtemp(**kwargs))
    fd, tmp = tempfile.mkstemp(**kwargs)
    os.close(fd)
    return Path(tmp)


def is_partial(path: Path) -> bool:
    """Whether ``path`` is named as :func:`make_partial` names a run's output in the making."""
    return re.fullmatch(r".+\.[A-Za-z0-9-]+\.\d+\.[^./]+\.partial", path.name) is not None


def remove_orphans(path: Path) -> None:
    """Remove the partial files and folders of ``path`` left by killed runs (SIGKILL, a crash)
    on this host: those whose process no longer exists. Another host's, or a live process's,
    are kept."""
    for old in path.parent.glob(f"{glob.escape(path.name)}.{_HOST}.*.partial"):
        pid = old.name[len(path.name) + len(_HOST) + 2:].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 probes without signalling). Off POSIX every
    process counts as alive: on Windows ``os.kill(pid, 0)`` is not a probe but sends
    ``CTRL_C_EVENT`` to the process group, so the leftovers are kept there."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, someone else's
        return True
    return True


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable way to read it is to set it
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the mode the umask gives a new
    file (``0o666 & ~umask``) or folder (``0o777 & ~umask``): ``mkstemp``, ``mkdtemp`` and
    ``safetensors`` create theirs private (0600/0700), which a renamed output then kept."""
    mask = _umask()
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
