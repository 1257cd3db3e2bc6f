"""Process-wide registry of loaded encoders and cache handles.

Estimators hold parameters only; the weights live here, keyed by what determines them (model,
revision, device, precision), so that clones made by ``GridSearchCV`` or ``cross_val_score``
share one copy and pickles never carry weights.

The registry is per process: ``GridSearchCV(..., n_jobs=1)`` loads a model once, while process
workers (joblib's default ``loky`` backend with ``n_jobs > 1``) load it once per worker.

What it keeps (see :func:`set_limits`):

- the **2 most recently used encoders**, whether or not anything else holds them, so that
  clones created and dropped one after another (a grid, a cross-validation) load once; any
  other loaded encoder is kept only while something else holds it (an ``encoder = ...
  .get_encoder()`` variable, a call in progress), and shared while it is. One let go is freed
  and the C heap trimmed (glibc ``malloc_trim``), so that trying one model or precision after
  another no longer adds up; :func:`clear` frees them all at once.
- an encoder's weight files as they were at load (size, ``mtime_ns``, inode, ``ctime_ns``):
  one changed on disk since (a fine-tune saved over the folder) makes the next hand-out load
  the files again instead of serving the old weights (a file written over *in place* while
  its memory-mapped weights are in use can still give wrong vectors or ``SIGBUS`` in that
  call: replace model files by renaming a new file over them).
- one handle per cache file (shared, so hit and miss counts add up across estimators), of
  which the **8 most recently used** keep their connections open (3 file descriptors each);
  the others close theirs and reopen on their next use. A cache file removed or replaced at
  its path since it was opened is noticed when the handle is handed out: the new file is
  opened (or created), never the deleted one.
"""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections import Counter, OrderedDict
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
#: Encoders held whatever else holds them: the most recently handed out, last (see set_limits).
_ENCODERS: OrderedDict[tuple, SentenceEncoder] = OrderedDict()
#: Every loaded encoder something still holds (the registry or a caller): shared while alive.
_ALIVE: weakref.WeakValueDictionary[tuple, SentenceEncoder] = weakref.WeakValueDictionary()
#: Weight files of each loaded encoder as they were at load: path -> (size, mtime, inode, ctime).
_STAMPS: weakref.WeakKeyDictionary[SentenceEncoder, tuple] = weakref.WeakKeyDictionary()
_LIMITS = {"encoders": 2, "open_caches": 8}
#: How many times each key was actually loaded from disk in this process (tests count these).
LOAD_COUNTS: Counter = Counter()


def set_limits(*, encoders: int | None = None, open_caches: int | None = None) -> dict[str, int]:
    """How much the registry keeps for later calls; returns the previous limits.

    Parameters
    ----------
    encoders : int, optional
        Loaded encoders kept although no estimator call or variable holds them: the most
        recently used ones (default 2). Others are freed once nothing holds them. Clones used
        one after another (``GridSearchCV``, ``cross_val_score``) need 1 per model in use;
        ``0`` keeps an encoder only while something holds it (each call loads it again).
    open_caches : int, optional
        Cache handles that keep their SQLite connections open: the most recently used ones
        (default 8, 3 file descriptors each). Others close them and reopen when next used.
    """
    with _LOCK:
        previous = dict(_LIMITS)
        for name, value in (("encoders", encoders), ("open_caches", open_caches)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
                _LIMITS[name] = value
        released = _make_room(_LIMITS["encoders"])
        idle = _idle_caches()
    _close_all(idle)
    _let_go(released)
    return previous


def _hold(key: tuple, encoder: SentenceEncoder) -> None:
    _ENCODERS[key] = encoder
    _ENCODERS.move_to_end(key)
    _ALIVE[key] = encoder


def _make_room(limit: int) -> list[weakref.ref]:
    """Stop holding the least recently used encoders beyond ``limit`` (distinct objects: a
    revision's other spellings share one); weak references to those no longer held."""
    released = []
    while _ENCODERS and len({id(e) for e in _ENCODERS.values()}) > limit:
        _, encoder = _ENCODERS.popitem(last=False)
        if not any(e is encoder for e in _ENCODERS.values()):
            released.append(weakref.ref(encoder))
        del encoder
    return released


def _forget(encoder: SentenceEncoder) -> weakref.ref:
    """Drop every key of ``encoder`` (its files changed, or clear)."""
    for table in (_ENCODERS, _ALIVE):
        for key in [k for k, e in list(table.items()) if e is encoder]:
            table.pop(key, None)
    return weakref.ref(encoder)


def _let_go(released: list[weakref.ref]) -> None:
    """Free what the registry stopped holding, now (reference cycles too), and hand the C
    heap's free pages back to the OS: freed weights and conversion temporaries otherwise stay
    in RSS (measured: 2.3 GB -> 1.3 GB by freeing alone, 0.5 GB after the trim)."""
    if not released:
        return
    if any(ref() is not None for ref in released):
        gc.collect()
    if any(ref() is None for ref in released):
        from .encoder.pages import trim_heap

        trim_heap()


def _stamp(folder: str | os.PathLike[str]) -> tuple | None:
    """The weight files of ``folder`` as they are now; None where they cannot be listed."""
    try:
        return tuple((str(f), _file_state(f)) for f in safetensors_files(Path(folder)))
    except (OSError, ValueError):  # CheckpointError is a ValueError: the load says why
        return None


def _file_state(path: str | os.PathLike[str]) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _files_changed(encoder: SentenceEncoder) -> bool:
    """Whether a weight file of ``encoder`` changed on disk since it was loaded: one stat a file."""
    stamp = _STAMPS.get(encoder)
    return stamp is not None and any(_file_state(path) != state for path, state in stamp)


def _current(key: tuple) -> tuple[SentenceEncoder | None, list[weakref.ref]]:
    """The loaded encoder of ``key`` if its files are unchanged; one whose files changed is
    forgotten (and returned among those to let go)."""
    encoder = _ALIVE.get(key)
    if encoder is not None and _files_changed(encoder):
        return None, [_forget(encoder)]
    return encoder, []


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
        encoder, released = _current(key)
        if encoder is None:
            encoder = _same_snapshot(key, model, revision, local_files_only)
        if encoder is not None:
            _hold(key, encoder)
            released += _make_room(_LIMITS["encoders"])
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
            # room made before loading, so that the peak holds one model less
            _let_go(released + _make_room(max(_LIMITS["encoders"] - 1, 0)))
            released = []
            folder = Path(model).expanduser()
            # the files as they are before loading: a change while loading is noticed next time
            stamp = _stamp(folder) if folder.is_dir() else None
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
            stamp = stamp if stamp is not None else _stamp(encoder.source.path)
            if stamp is not None:
                _STAMPS[encoder] = stamp
            _hold(key, encoder)
            LOAD_COUNTS[key] += 1
            released += _make_room(_LIMITS["encoders"])
    _let_go([ref for ref in released if ref() is not encoder])  # (encoders=0: it is returned)
    return encoder


_RESOLVED: dict[tuple, tuple[str, str]] = {}  # (model, revision, local only) -> (folder, revision)


def _same_snapshot(key: tuple, model: str | os.PathLike[str], revision: str | None,
                   local_files_only: bool) -> SentenceEncoder | None:
    """A loaded encoder of the same hub snapshot under another spelling of its revision
    (``None``, ``"main"``, the commit hash), same device and precision: one copy of the
    weights, not one per spelling. Resolved only when such a candidate exists."""
    others = [e for k, e in list(_ALIVE.items()) if k[0] == key[0] and k[2:] == key[2:]
              and not _files_changed(e)]
    if not others or Path(model).expanduser().is_dir():  # a folder's revision is a label
        return None
    try:
        folder, _ = _resolved(key[0], model, revision, local_files_only)
    except ModelNotAvailableError:
        return None  # the load says why, with its own error
    return next((e for e in others if e.source.path == folder), None)


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
        for key, encoder in list(_ALIVE.items()):
            if key[0] == name and key[1] == revision and not _files_changed(encoder):
                return encoder.source
    # outside the lock: this may ask the hub
    resolved = _resolved(name, model, revision, local_files_only)
    folder = Path(resolved[0])
    return ModelSource(name=str(model), path=str(folder), revision=resolved[1],
                       fingerprint=weights_fingerprint(folder, safetensors_files(folder)))


#: One handle per cache file, for the process (a few hundred bytes each once closed).
_CACHES: dict[str, EmbeddingCache] = {}
#: The handles whose connections may be open, the most recently used last (see set_limits).
_OPEN_CACHES: OrderedDict[str, EmbeddingCache] = OrderedDict()


def get_cache(cache: EmbeddingCache | str | os.PathLike[str] | None) -> EmbeddingCache | None:
    """One cache object per file and process, so hit/miss counts add up across estimators.

    Called at the start of each call that uses the cache: a file removed or replaced at the
    path since it was opened is noticed here (the handle starts afresh on the file now there),
    and the handles beyond the most recently used ``open_caches`` close their connections.
    """
    if cache is None:
        return None
    if isinstance(cache, EmbeddingCache):  # the caller's own object: checked, not kept
        cache.reopen_if_replaced()
        return cache
    opened = resolve_cache(cache)  # checks the type and the path, with errors that say why
    assert opened is not None
    with _LOCK:
        handle = _CACHES.setdefault(opened.path, opened)
        handle.reopen_if_replaced()
        _OPEN_CACHES[handle.path] = handle
        _OPEN_CACHES.move_to_end(handle.path)
        idle = _idle_caches()
    _close_all(idle)
    return handle


def _idle_caches() -> list[EmbeddingCache]:
    idle = []
    while len(_OPEN_CACHES) > _LIMITS["open_caches"]:
        idle.append(_OPEN_CACHES.popitem(last=False)[1])
    return idle


def _close_all(handles: list[EmbeddingCache]) -> None:
    for handle in handles:
        handle.close()  # reopened lazily by its next use


def clear(model: str | os.PathLike[str] | None = None) -> None:
    """Forget loaded encoders and free their memory (once no one else holds them).

    The memory comes back to the OS at once: the C heap is trimmed after the encoders are
    freed (glibc ``malloc_trim``; without it, about half stays in the process's RSS).

    Parameters
    ----------
    model : str or path, optional
        Forget only this model (every revision, device and precision of it) and keep the rest.
        By default forget every encoder and every cache handle (closing their connections).
    """
    with _LOCK:
        if model is None:
            released = [weakref.ref(e) for e in {id(e): e for e in _ALIVE.values()}.values()]
            _ENCODERS.clear()
            _ALIVE.clear()
            handles = list(_CACHES.values())
            _CACHES.clear()
            _OPEN_CACHES.clear()
            _RESOLVED.clear()
        else:
            name = registry_key(model, None, "cpu", None)[0]
            doomed = {id(e): e for k, e in list(_ALIVE.items()) if k[0] == name}
            released = [_forget(e) for e in doomed.values()]
            del doomed
            handles = []
            for key in [k for k in _RESOLVED if k[0] == name]:
                del _RESOLVED[key]
    _close_all(handles)
    _let_go(released)


def loaded() -> list[tuple]:
    """Keys ``(model, revision, device, precision)`` of the encoders loaded now (followed by
    ``"compiled"`` for those loaded with ``compile=True``): those the registry keeps and those
    something else still holds."""
    with _LOCK:
        return list(_ALIVE)
