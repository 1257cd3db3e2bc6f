"""What every ``skmoe`` command shares: the model and cache options, building the estimator
and checking the model before any work starts (its error type, exit codes and progress
messages live in :mod:`skmoe._cli_errors` and are re-exported here)."""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._cli_errors import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    MODEL_ERRORS,
    CLIError,
    loaded_classes,
    model_error_types,
    options_errors,
    say,
)
from ._defaults import DEFAULT_MODEL
from .io import one_line

__all__ = ["EXIT_INPUT", "EXIT_INTERRUPTED", "EXIT_MODEL", "MODEL_ERRORS", "CLIError",
           "add_model_options", "cache_of", "count", "default_cache_path", "load_model",
           "loaded_classes", "make_transformer", "model_error_types", "normalize_option",
           "options_errors", "positive_int", "say"]


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def default_cache_path() -> Path:
    """``$SKMOE_CACHE``, else ``$XDG_CACHE_HOME/skmoe/embeddings.sqlite`` (``~/.cache`` default)."""
    env = os.environ.get("SKMOE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "skmoe" / "embeddings.sqlite"


def cache_of(args: argparse.Namespace) -> Path | None:
    """The cache file the command uses (None with ``--no-cache``); its folder is created."""
    if args.no_cache:
        return None
    path = Path(args.cache).expanduser() if args.cache else default_cache_path()
    if path.is_dir():
        raise CLIError(f"--cache must be a file, got a folder: {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create the cache folder {path.parent}: {exc.strerror}; pass "
                       "--cache PATH (or set $SKMOE_CACHE) to a writable place, or --no-cache"
                       ) from None
    return path


def make_transformer(args: argparse.Namespace, *, cache: Path | None, verbose: int = 0) -> Any:
    """The command line's ``MoEEmbeddingTransformer`` from the shared model options.

    It loads the weights only when a text must be computed (never on a fully cached run), says
    so on stderr when it does, and turns a failure to load them with these options into a
    one-line error (:class:`skmoe._cli_transformer.CommandLineTransformer`).
    """
    from ._cli_transformer import CommandLineTransformer
    from .postprocessing import DEFAULT_NORMALIZE

    # only `skmoe embed` has --normalize; its file is never centred (center=False: it fits on
    # one text only to check the model); the others fit on training texts and keep the
    # estimator's centred default
    embed_file = hasattr(args, "normalize")
    normalize = normalize_option(args.normalize) if embed_file else DEFAULT_NORMALIZE
    return CommandLineTransformer(
        args.model,
        revision=args.revision,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
        max_length=args.max_length,
        truncate_dim=args.truncate_dim,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        output_dtype=getattr(args, "output_dtype", "float32"),
        normalize=normalize,
        center=not embed_file,
        cache=str(cache) if cache is not None else None,
        verbose=verbose,
        local_files_only=args.local_files_only,
    )


def load_model(transformer: Any, texts: Sequence[str] = ()) -> None:
    """Check the model and the options before any work starts, so that a missing model fails
    first; load the weights only if the cache cannot spare them.

    Fitting finds the model's files and fingerprint; with a cache and a model some process has
    loaded before, it reads the model's facts (width, token limit, prompts) from their record
    instead of the weights, which then load only at the first text not in the cache (a fully
    cached ``skmoe embed`` never loads them). An unknown ``--device`` is a user mistake (exit 2).
    A model that cannot be set up with the options given (a precision the device lacks,
    ``--truncate-dim`` above the model's width, no tokenizer files) ends with exit 1 and the
    reason, whenever the loading comes.
    """
    from .encoder.loading import resolve_device
    from .encoder.sentence import UnknownPromptError

    try:
        resolve_device(transformer.device)
    except ValueError as exc:
        raise CLIError(one_line(exc)) from None
    try:
        with options_errors(transformer.model):
            transformer.fit(list(texts[:1]))
    except UnknownPromptError as exc:  # the API's advice names prompt=; here it is an option
        raise CLIError(str(UnknownPromptError(
            exc.name, exc.model, exc.known,
            how='--prompt PREFIX (e5 models: --prompt "query: "; --prompt "" for none)'))) from None
    loaded = getattr(transformer, "loaded", None)  # a CommandLineTransformer tells
    where = ("" if loaded is None or loaded() else
             "; weights not loaded: they load at the first text the cache lacks")
    say(f"model: {transformer.model} ({transformer.embedding_dim_}-d, revision "
        f"{transformer.model_revision_}, prompt {transformer.prompt_!r}){where}")


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], *, help: str,
                **defaults: Any) -> argparse.ArgumentParser:
    """The sub-command ``name``, run by ``func``: ``help`` is its line in ``skmoe --help``, and
    ``func``'s docstring is its description in ``skmoe NAME --help`` (written once, for readers
    of the code and of the command line alike)."""
    p = sub.add_parser(name, help=help, description=inspect.cleandoc(func.__doc__ or ""))
    p.set_defaults(func=func, **defaults)
    return p


def add_model_options(p: argparse.ArgumentParser, *, prompt_default: str | None) -> None:
    """The model, cache and progress options of ``demo``, ``embed`` and ``probe``."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL",
                   help="hub id or local folder with config.json + model.safetensors "
                        f"(default: {DEFAULT_MODEL}, ~1.9 GB from the Hugging Face hub on first use)")
    g.add_argument("--revision", help="hub branch, tag or commit")
    g.add_argument("--local-files-only", action="store_true",
                   help="never download; use a local folder or the Hugging Face cache")
    g.add_argument("--prompt-name", default=prompt_default,
                   help="task prompt from the model's table: query, passage/document, "
                        f"classification, clustering (default: {prompt_default})")
    g.add_argument("--prompt", help='raw prefix, wins over --prompt-name (e5 models: "query: "; "" for none)')
    g.add_argument("--max-length", type=positive_int, default=None,
                   help="tokens per text (default: the length the model was trained at, 512 for "
                        "nomic-embed-text-v2-moe; up to its positions, with a warning)")
    g.add_argument("--truncate-dim", type=positive_int, help="Matryoshka width (e.g. 256)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    g.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "int8", "int4", "int8wo", "fp8"),
                   help="compute precision (default: float32 on CPU, bfloat16 on GPU; int8wo and "
                        "fp8 are CUDA modes through torchao: pip install 'skmoe[torchao]')")
    g.add_argument("--compile", action="store_true",
                   help="run the MoE encoder's layers under torch.compile (GPUs: +10%% on an "
                        "H200, ~13 s to compile)")
    g.add_argument("--batch-size", type=positive_int, help="texts per forward pass")
    g.add_argument("--max-tokens-per-batch", type=positive_int,
                   help="padded tokens per forward pass")
    c = p.add_argument_group("cache")
    c.add_argument("--cache", metavar="PATH",
                   help="SQLite embedding cache; reruns reuse it (default: $SKMOE_CACHE or "
                        "~/.cache/skmoe/embeddings.sqlite)")
    c.add_argument("--no-cache", action="store_true", help="do not read or write a cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def normalize_option(value: str | None) -> Any:
    """``--normalize`` as the estimator's ``normalize``: a row length, l2, rms or none."""
    from .postprocessing import UNCENTRED_NORMALIZE, normalize_mode

    if value is None:  # the file is not centred (no training texts): the uncentred best length
        return UNCENTRED_NORMALIZE
    if value == "none":
        return False
    try:
        mode: Any = float(value)
    except ValueError:
        mode = value
    try:
        normalize_mode(mode)
    except ValueError:
        raise CLIError(f"--normalize takes a positive row length, l2, rms or none; got {value!r}") from None
    return mode
