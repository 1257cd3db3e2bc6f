"""The command line's error type, exit codes and progress messages: what every ``skmoe``
module shares, without importing torch (re-exported by :mod:`skmoe.cli_common`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from .io import one_line

#: Exit codes: bad input or options (argparse's code), the model or cache unusable (also an
#: internal error, with a hint to rerun with ``--debug``), interrupted.
EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 2, 1, 130


class CLIError(Exception):
    """A user mistake found by the command line, reported as one line with an exit code."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    """Progress messages go to stderr, so stdout stays for results."""
    print(message, file=sys.stderr, flush=True)


#: The package's errors meaning "this model or cache cannot be used" (exit 1, one line), as
#: (module, class name), so the command line can name them without importing torch.
MODEL_ERRORS = (("skmoe.cache", "CacheDimensionError"), ("skmoe.cache", "CacheFormatError"),
                ("skmoe.encoder.config", "UnsupportedConfigError"),
                ("skmoe.encoder.loading", "CheckpointError"),
                ("skmoe.encoder.loading", "ModelNotAvailableError"),
                ("skmoe.engine.windows", "NoRoomForTextError"),
                ("skmoe.estimator", "WeightsChangedError"))


def model_error_types() -> tuple[type[BaseException], ...]:
    """The classes of :data:`MODEL_ERRORS` (their modules imported)."""
    import importlib

    return tuple(getattr(importlib.import_module(module), name) for module, name in MODEL_ERRORS)


def loaded_classes(*names: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """The classes among ``names`` whose module is already imported (an exception of a class
    whose module was never imported cannot have been raised)."""
    return tuple(getattr(sys.modules[module], name) for module, name in names
                 if module in sys.modules)


@contextlib.contextmanager
def options_errors(model: Any) -> Iterator[None]:
    """A model that cannot be set up with the options given (a precision the device lacks,
    ``--truncate-dim`` above the model's width, no tokenizer files): exit 1 with the reason. The
    package's model errors and an unknown prompt name pass as they are (``main`` classifies
    them)."""
    from .encoder.sentence import UnknownPromptError

    try:
        yield
    except (*model_error_types(), UnknownPromptError):
        raise
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot use {model} with these options: {one_line(exc)} "
                       "(rerun with --debug for the traceback)", EXIT_MODEL) from exc
