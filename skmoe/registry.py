"""Process-wide registry of loaded encoders.

Estimators hold parameters only; the weights live here, keyed by what determines them (model,
revision, device, precision), so that clones made by ``GridSearchCV`` or ``cross_val_score``
share one copy and pickles never carry weights.

The registry is per process: ``GridSearchCV(..., n_jobs=1)`` loads a model once, while process
workers (joblib's default ``loky`` backend with ``n_jobs > 1``) load it once per worker.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

from .cache import EmbeddingCache, resolve_cache
from .encoder import SentenceEncoder, load_encoder
from .encoder.loading import (
    ModelNotAvailableError,
    ModelSource,
    resolve_device,
    resolve_model_path,
    safetensors_files,
    weights_fingerprint,
)

_LOCK = threading.Lock()
_ENCODERS: dict[tuple, SentenceEncoder] = {}
#: How many times each key was actually loaded from disk in this process (tests count these).
LOAD_COUNTS: Counter = Counter()


def registry_key(
    model: str | os.PathLike[str], revision: str | None, device: str | None, precision: str | None
) -> tuple:
    """What determines the loaded weights: resolved folder or hub id, revision, device, precision."""
    from .engine.quantized_io import namespace_precision

    path = Path(model).expanduser()
    name = str(path.resolve()) if path.is_dir() else str(model)
    dev = resolve_device(device)
    # Canonical precision, so that None, "auto", "fp32" and "float32" on CPU share one copy (a
    # pre-quantized folder's own, with its method, bits and group size; a conflict is refused).
    return (name, revision, str(dev), namespace_precision(model, precision, dev))


def get_encoder(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    local_files_only: bool = False,
    compile: bool = False,
) -> SentenceEncoder:
    """Return the shared encoder for these settings, loading it on first use.

    ``compile``: the MoE encoder's layers under ``torch.compile`` (an accelerator option; a
    compiled encoder is an entry of its own, so eager users of the same model are unaffected).
    """
    key = registry_key(model, revision, device, precision) + (("compiled",) if compile else ())
    with _LOCK:
        encoder = _ENCODERS.get(key) or _same_snapshot(key, model, revision, local_files_only)
        if encoder is not None:
            _ENCODERS[key] = encoder
        else:
            from .engine.precision import DEFAULT_PRECISION, apply_precision, check_gpu_mode
            from .engine.quantized_io import load_encoder as load_quantized
            from .engine.quantized_io import quantization_of

            dev = resolve_device(device)
            check_gpu_mode(precision, dev)  # int8wo/fp8 off CUDA: refused before loading
            if compile and dev.type == "cpu":
                raise ValueError(
                    "compile=True is for GPUs (+10% on an H200, 13 s to compile); on a CPU the "
                    "engine reads text lengths on the host, which breaks the compiled graphs, "
                    "and compiling takes minutes: leave compile=False")
            if quantization_of(model) is not None:  # a pre-quantized folder, as it is
                encoder = load_quantized(model, device=dev, dtype=precision)
            else:
                encoder = load_encoder(
                    model, revision=revision, device=dev, dtype="float32",
                    local_files_only=local_files_only,
                )
                encoder = apply_precision(encoder, precision or DEFAULT_PRECISION(dev))
            if compile:
                compile_layers = getattr(encoder.backbone, "compile_layers", None)
                if compile_layers is None:
                    raise ValueError(f"compile=True compiles the MoE encoder's layers; {model!r} "
                                     "is a dense encoder: leave compile=False")
                compile_layers()
            _ENCODERS[key] = encoder
            LOAD_COUNTS[key] += 1
        return encoder


_RESOLVED: dict[tuple, tuple[str, str]] = {}  # (model, revision, local only) -> (folder, revision)


def _same_snapshot(key: tuple, model: str | os.PathLike[str], revision: str | None,
                   local_files_only: bool) -> SentenceEncoder | None:
    """A loaded encoder of the same hub snapshot under another spelling of its revision
    (``None``, ``"main"``, the commit hash), same device and precision: one copy of the
    weights, not one per spelling. Resolved only when such a candidate exists."""
    others = [k for k in _ENCODERS if k[0] == key[0] and k[2:] == key[2:]]
    if not others or Path(model).expanduser().is_dir():  # a folder's revision is a label
        return None
    try:
        folder, _ = _resolved(key[0], model, revision, local_files_only)
    except ModelNotAvailableError:
        return None  # the load says why, with its own error
    return next((_ENCODERS[k] for k in others if _ENCODERS[k].source.path == folder), None)


def _resolved(name: str, model: str | os.PathLike[str], revision: str | None,
              local_files_only: bool) -> tuple[str, str]:
    """``(folder, revision)`` of ``model``, resolved once per process (a hub id is not looked up
    again; ``name`` is its registry spelling)."""
    memo_key = (name, revision, local_files_only)
    resolved = _RESOLVED.get(memo_key)
    if resolved is None:
        folder, rev = resolve_model_path(model, revision, local_files_only)
        resolved = _RESOLVED[memo_key] = (str(folder), rev)
    return resolved


def model_source(
    model: str | os.PathLike[str], *, revision: str | None = None, local_files_only: bool = False
) -> ModelSource:
    """Where ``model`` is and its fingerprint, without loading (nor re-hashing) its weights.

    A loaded encoder's own source wins (its weights are those a miss would run); otherwise the
    folder is resolved once per process (a hub id is not looked up again) and fingerprinted from
    the per-file memo (see :mod:`skmoe.encoder.fingerprint`), which reads nothing on a warm run.
    """
    name = registry_key(model, revision, "cpu", None)[0]
    with _LOCK:
        for key, encoder in _ENCODERS.items():
            if key[0] == name and key[1] == revision:
                return encoder.source
    # outside the lock: this may ask the hub
    resolved = _resolved(name, model, revision, local_files_only)
    folder = Path(resolved[0])
    return ModelSource(name=str(model), path=str(folder), revision=resolved[1],
                       fingerprint=weights_fingerprint(folder, safetensors_files(folder)))


_CACHES: dict[str, EmbeddingCache] = {}


def get_cache(cache: EmbeddingCache | str | os.PathLike[str] | None) -> EmbeddingCache | None:
    """One cache object per file and process, so hit/miss counts add up across estimators."""
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache
    opened = resolve_cache(cache)  # checks the type and the path, with errors that say why
    with _LOCK:
        return _CACHES.setdefault(opened.path, opened)


def clear(model: str | os.PathLike[str] | None = None) -> None:
    """Forget loaded encoders (frees memory once no one else holds them).

    Parameters
    ----------
    model : str or path, optional
        Forget only this model (every revision, device and precision of it) and keep the rest.
        By default forget every encoder and every cache handle.
    """
    with _LOCK:
        if model is None:
            _ENCODERS.clear()
            _CACHES.clear()
            _RESOLVED.clear()
            return
        name = registry_key(model, None, "cpu", None)[0]
        for key in [k for k in _ENCODERS if k[0] == name]:
            del _ENCODERS[key]
        for key in [k for k in _RESOLVED if k[0] == name]:
            del _RESOLVED[key]


def loaded() -> list[tuple]:
    """Keys ``(model, revision, device, precision)`` of the encoders loaded now (followed by
    ``"compiled"`` for those loaded with ``compile=True``)."""
    with _LOCK:
        return list(_ENCODERS)
