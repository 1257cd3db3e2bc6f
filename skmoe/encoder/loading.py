"""Resolve a model (local folder or hub id) and load it strictly from safetensors.

Never pickle (``.bin``), never remote code. Hub ids resolve through ``huggingface_hub``'s
``snapshot_download`` restricted to configs, safetensors and tokenizer / sentence-transformers
side files; the resolved commit is recorded as the revision.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from .._defaults import DEFAULT_MODEL  # defined once, importable without torch
from .checkpoint import (
    CheckpointError,
    ModelNotAvailableError,
    check_finite_tensors,
    compare_with_header,
    read_headers,
    read_json,
)
from .config import NomicMoEConfig, UnsupportedConfigError, is_nomic_moe_config
from .dense import load_dense
from .nomic_moe import NomicMoEModel
from .pages import release_file_pages

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointError",
    "ModelNotAvailableError",
    "ModelSource",
    "embedding_rows",
    "install_fork_guard",
    "load_backbone",
    "read_json",
    "resolve_model_path",
]

# What a snapshot may bring: configs, weights as safetensors, tokenizer and ST side files.
HUB_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",  # sentencepiece.bpe.model
    "*.txt",  # vocab.txt of BERT tokenizers
    "1_Pooling/*",
]


@dataclass(frozen=True)
class ModelSource:
    """Where a model came from: enough to name it, cache by it and re-check it after unpickling."""

    name: str  # what the user passed (hub id or folder)
    path: str  # resolved local folder
    revision: str  # resolved hub commit, or "local"
    fingerprint: str  # weights, tokenizer files, parsed config (see weights_fingerprint)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]$")


def is_hub_id(name: str) -> bool:
    """True for strings of the form ``org/name`` (hub ids may contain dots: ``...-v1.5``)."""
    return bool(_HUB_ID.match(name)) and ".." not in name


def hub_offline(local_files_only: bool = False) -> bool:
    """Whether hub look-ups must stay local (argument or ``HF_HUB_OFFLINE``)."""
    env = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower()
    return local_files_only or env not in ("", "0", "false", "no", "off")


def hub_repo_folder(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face cache's folder of the model ``name`` (``models--org--name``)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=name,
                                                                        repo_type="model")


def cached_elsewhere(name: str, revision: str | None, exc: Exception,
                      cache_dir: str | os.PathLike[str] | None) -> str | None:
    """What to say when the Hugging Face cache holds ``name``, just not as asked: the revision
    is not among its refs and commits (listed), or its snapshot's download stopped; else None."""
    root = hub_repo_folder(name, cache_dir)
    commits = sorted(p.name for p in (root / "snapshots").glob("*") if p.is_dir())
    if not commits:
        return None
    if "Incomplete" in type(exc).__name__:
        return (f"The Hugging Face cache ({root}) holds an incomplete snapshot of {name!r} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0]}): its download stopped "
                "before every file arrived; download it again with network.")
    refs = sorted(str(p.relative_to(root / "refs")) for p in (root / "refs").rglob("*")
                  if p.is_file())
    short = " (a short commit hash cannot be resolved offline: give all 40 characters)" if (
        revision and re.fullmatch(r"[0-9a-f]{4,39}", revision)) else ""
    return (f"Model {name!r} is in the Hugging Face cache ({root}), but not at revision "
            f"{revision or 'main'!r}{short}. Cached: branches/tags {', '.join(refs) or 'none'}; "
            f"commits {', '.join(c[:12] for c in commits[:8])}"
            f"{f' ... ({len(commits)} in all)' if len(commits) > 8 else ''} "
            f"({type(exc).__name__}).")


def not_available(name: str, revision: str | None, offline: bool, exc: Exception,
                  cache_dir: str | os.PathLike[str] | None = None) -> ModelNotAvailableError:
    """The error for a hub id that cannot be provided, saying how to provide the weights (or,
    when the cache holds the model at other revisions, which ones it holds)."""
    elsewhere = cached_elsewhere(name, revision, exc, cache_dir)
    if elsewhere is not None:
        return ModelNotAvailableError(elsewhere)
    where = "without network (HF_HUB_OFFLINE / local_files_only)" if offline else "from the hub"
    folder_note = f" No folder named {name!r} exists either." if not Path(name).exists() else ""
    return ModelNotAvailableError(
        f"Could not load model {name!r}{f' at revision {revision!r}' if revision else ''} "
        f"{where}: it is not in the Hugging Face cache and could not be downloaded "
        f"({type(exc).__name__}).{folder_note} Provide the weights: on a machine with network "
        f"run `hf download {name} --local-dir FOLDER` (about 1.9 GB for the default model), "
        "copy FOLDER here and pass it (Python: model='FOLDER'; CLI: --model FOLDER); any local "
        "folder with config.json and model.safetensors works, and so does a copied Hugging Face "
        "cache (HF_HOME). skmoe never substitutes another model."
    )


def resolve_model_path(
    model: str | os.PathLike[str],
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, str]:
    """Return ``(folder, revision)`` for a local folder or a hub id.

    A hub id resolves through ``huggingface_hub.snapshot_download`` restricted to
    :data:`HUB_ALLOW_PATTERNS` (never pickles, never code); the revision is the snapshot's commit.

    Raises
    ------
    ModelNotAvailableError
        If ``model`` is not a folder and the hub cannot provide it (offline and not cached,
        unknown id, ...), with a message that says how to provide the weights.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve(), revision or "local"
    name = str(model)
    if not is_hub_id(name):
        raise ModelNotAvailableError(
            f"Model {name!r} is neither an existing folder nor a hub id of the form 'org/name'."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError

    offline = hub_offline(local_files_only)
    try:
        folder = snapshot_download(
            name,
            revision=revision,
            allow_patterns=HUB_ALLOW_PATTERNS,
            local_files_only=offline,
            cache_dir=cache_dir,
        )
    except (OSError, HfHubHTTPError, ValueError) as exc:
        raise not_available(name, revision, offline, exc, cache_dir) from exc
    folder_path = Path(folder)
    return folder_path, folder_path.name  # snapshots/<commit>


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files: ``model.safetensors``, else the shards of its index
    (transformers' order: a folder holding both is loaded from the single file, so that is the
    file the fingerprint and the header checks must read)."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index} has no valid 'weight_map' (tensor name -> shard file)")
        shards = sorted(set(weight_map.values()))
        return [folder / s for s in shards]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickled weights ({', '.join(sorted(pickles))}). skmoe loads "
            "safetensors only, because unpickling can run arbitrary code. Convert once with "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), "
            "'model.safetensors')` from a trusted copy."
        )
    raise CheckpointError(f"{folder} has no model.safetensors (nor a sharded index).")


#: Scanned bytes after which the finite scan hands its pages back (see read_safetensors).
_RELEASE_EVERY = 256 << 20


def read_safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint; the first one holding NaN/inf is refused by name.

    The tensors are views of the memory-mapped files. The finite scan reads every float weight,
    and hands the pages it read back as it goes (:func:`~skmoe.encoder.pages.release_file_pages`,
    every 256 MB), so loading does not leave the whole checkpoint resident: a weight that is
    about to be converted (bfloat16, int8, int4) is read again only when converted, and a float32
    one when first used (from the page cache, at memory speed).
    """
    tensors: dict[str, torch.Tensor] = {}
    scanned: list[torch.Tensor] = []
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    tensors[key] = fh.get_tensor(key)
                    check_finite_tensors([(key, tensors[key])], f)
                    if tensors[key].is_floating_point():
                        scanned.append(tensors[key])
                        if sum(t.nbytes for t in scanned) >= _RELEASE_EVERY:
                            release_file_pages(scanned)
                            scanned.clear()
        except CheckpointError:
            raise
        except Exception as exc:  # SafetensorError and friends: say which file
            raise CheckpointError(f"{f} cannot be read as safetensors ({type(exc).__name__}: "
                                  f"{exc})") from None
    release_file_pages(scanned)
    return tensors


def weights_fingerprint(folder: Path, files: list[Path]) -> str:
    """Digest of everything in ``folder`` that changes a vector: all weight bytes, the tokenizer
    files and the parsed config.json, as ``"<weights 16>-<tokenizer 8>-<config 8>"`` hex.

    Each file's digest is memoised by (path, size, mtime_ns, inode), in the process and on disk,
    so only the first run after a file changes reads it; see :mod:`skmoe.encoder.fingerprint`.
    """
    from .fingerprint import model_fingerprint

    return str(model_fingerprint(folder, files))


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``tensors`` into ``model``; any missing/unexpected tensor or wrong shape is an error."""
    expected = dict(model.state_dict())
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in tensors and tensors[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(
            f"unexpected tensor(s): {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else "")
        )
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong[:5]))
    if problems:
        raise CheckpointError("Checkpoint does not match its config.json: " + " | ".join(problems))
    model.load_state_dict(tensors, strict=True, assign=True)


def load_nomic_moe(folder: Path, raw_config: dict[str, Any], files: list[Path]) -> NomicMoEModel:
    """The native MoE model: built on ``meta``, checked against the header, then filled."""
    cfg = NomicMoEConfig.from_dict(raw_config)
    with torch.device("meta"):
        model = NomicMoEModel(cfg)
    compare_with_header(model.state_dict(), read_headers(files), folder)  # before any allocation
    tensors = read_safetensors(files)
    load_state_strict(model, {k: v.float() for k, v in tensors.items()})
    return model


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto": fp32 on CPU, bf16 on GPU (the engine's defaults)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)} or 'auto', got {dtype!r}")
    return names[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` this machine has (``None``/``"auto"``: CUDA if present).

    Raises ``ValueError`` naming the problem for an unknown name or a device that is not there,
    before any weights are read.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ValueError(f"device={device!r} asked for, but {why}; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} asked for, but MPS is not available here")
    return dev


def load_backbone(folder: Path) -> tuple[nn.Module, dict[str, Any], list[Path]]:
    """Build the backbone module for ``folder``: native MoE for nomic_bert, else AutoModel.

    Every file is checked before weights are allocated (see :mod:`.checkpoint`); a config
    problem names ``config.json``. Loading an encoder also makes forked children safe to use it
    (:func:`install_fork_guard`).
    """
    config_path = folder / "config.json"
    raw = read_json(config_path)
    if raw is None:
        raise CheckpointError(f"{folder} has no config.json")
    quantized = raw.get("quantization_config")
    if isinstance(quantized, dict) and quantized.get("quant_method") == "skmoe":
        raise CheckpointError(
            f"{folder} is a pre-quantized folder ({quantized.get('precision')}, written by `skmoe "
            "quantize`); this loader reads float checkpoints: load it with skmoe.load_encoder(...) "
            "or MoEEmbeddingTransformer(model=...)")
    files = safetensors_files(folder)
    install_fork_guard()
    try:
        if is_nomic_moe_config(raw):
            return load_nomic_moe(folder, raw, files), raw, files
        return load_dense(folder, raw, read_headers(files)), raw, files
    except UnsupportedConfigError as exc:
        if str(config_path) in str(exc):
            raise
        raise UnsupportedConfigError(f"{config_path}: {exc}") from None


def embedding_rows(backbone: nn.Module) -> int:
    """Rows of the backbone's token embedding table: the ids a tokenizer may produce."""
    inner = getattr(backbone, "model", None)  # DenseBackbone wraps a transformers model
    if inner is not None and hasattr(inner, "get_input_embeddings"):
        return int(inner.get_input_embeddings().num_embeddings)
    return int(backbone.embeddings.word_embeddings.num_embeddings)


_FORK_GUARD = False


def _threads_in_forked_child() -> None:
    # The parent's OpenMP (libgomp) thread pool does not exist in a forked child; a parallel
    # region there waits forever at a barrier. One intra-op thread never enters one (this is
    # what torch's DataLoader workers do). A child that wants more can set it again itself.
    torch.set_num_threads(1)


def install_fork_guard() -> None:
    """Make processes forked from now on use one torch thread (idempotent, once per process).

    Called when skmoe loads an encoder, not at import: a process that never runs a model keeps
    fork untouched. Without it a ``multiprocessing`` fork pool deadlocks once the parent has
    run the model.
    """
    global _FORK_GUARD
    if not _FORK_GUARD and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_threads_in_forked_child)
        _FORK_GUARD = True
