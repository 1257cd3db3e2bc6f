"""Where a warning should point: the first caller outside skmoe (scikit-learn, joblib, torch)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path


@functools.cache
def _library_dirs(loaded: tuple[str, ...]) -> tuple[str, ...]:
    # scikit-learn too: its set_output wrapper and Pipeline sit between the user and transform;
    # joblib, which runs a grid search's fits (sequentially too); and torch's decorators
    # (no_grad) around skmoe's own functions; each only once imported
    # (nothing is imported here: the engine warns without needing sklearn)
    modules = [sys.modules[name] for name in ("skmoe", *loaded)]
    return tuple(str(Path(m.__file__).resolve().parent) + os.sep for m in modules)


def external_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` called *by the caller of this function* that
    names the innermost frame outside skmoe, scikit-learn, joblib and torch (the user's line),
    however many library frames (pipeline, estimator, engine, generators) lie in between."""
    frame = sys._getframe(1)  # the function that is about to warn: stacklevel 1
    level = 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
            _library_dirs(tuple(name for name in ("sklearn", "joblib", "torch")
                                if name in sys.modules))):
        frame = frame.f_back
        level += 1
    return level
