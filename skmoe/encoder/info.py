"""What a model is, from its ``config.json`` alone: sizes, MoE layout, total and active parameters.

Parameters are counted on the meta device, so the full-size model needs no weights and no
memory. When the weights are present too, their revision and fingerprint are reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import NomicMoEConfig, is_nomic_moe_config
from .dense import check_dense_config
from .loading import (
    CheckpointError,
    ModelNotAvailableError,
    cached_elsewhere,
    hub_offline,
    hub_repo_folder,
    is_hub_id,
    safetensors_files,
    weights_fingerprint,
)
from .nomic_moe import count_parameters
from .st_modules import (
    DenseModule,
    SentencePipeline,
    describe_pipeline,
    read_modules,
    read_pipeline,
)


class NotAConfigError(ValueError):
    """The file given as the model is not a JSON model config."""


def model_info(
    model: str | os.PathLike[str] | NomicMoEConfig,
    *,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Describe a model without loading its weights.

    Parameters
    ----------
    model : str, path or NomicMoEConfig
        A folder (only ``config.json`` is needed), a path to a ``config.json`` file, a hub id
        (only ``config.json`` is fetched; ``HF_HUB_OFFLINE`` is honoured) or a parsed config.
    revision, local_files_only, cache_dir
        As in :func:`~skmoe.encoder.load_encoder`, for hub ids.

    Returns
    -------
    dict
        ``name``, ``architecture``, ``model_type``, ``hidden_size``, ``layers``, ``heads``,
        ``ffn_size``, ``vocab_size``, ``experts``, ``top_k``, ``moe_every_n_layers``,
        ``moe_layers``, ``total_parameters``, ``active_parameters`` (per token; both include
        the parameters of sentence-transformers Dense modules after pooling),
        ``embedding_dim`` (the width of the vectors: a sentence-transformers Dense module's
        ``out_features`` when the folder has one), ``modules`` (the recipe after the
        transformer, e.g. ``mean pooling -> Dense 768->768 Tanh``; None for a bare config),
        ``quantization`` (a line describing ``config.json``'s ``quantization_config``, e.g. a
        folder written by ``skmoe quantize``; None without one), ``weights`` (whether weights
        are present), ``revision`` and ``fingerprint`` (None without weights).
    """
    folder: Path | None = None
    rev: str | None = None
    if isinstance(model, NomicMoEConfig):
        name, raw = "NomicMoEConfig", model.to_dict()
    else:
        name = str(model)
        path = Path(model).expanduser()
        if path.is_file():
            folder, raw = path.parent, _read(path)
        elif path.is_dir():
            folder, rev = path.resolve(), revision or "local"
            if not (folder / "config.json").is_file():
                raise CheckpointError(f"{folder} has no config.json")
            raw = _read(folder / "config.json")
        elif is_hub_id(name):
            folder, rev = _hub_config_folder(name, revision, local_files_only, cache_dir)
            raw = _read(folder / "config.json")
        else:
            raise ModelNotAvailableError(
                f"Model {name!r} is neither a folder, a config.json file nor a hub id 'org/name'."
            )
    if is_nomic_moe_config(raw):
        info = _nomic_info(raw)
    else:
        # the same bounds as loading: a typo such as num_hidden_layers 100000 is refused at once
        check_dense_config(folder if folder is not None else Path("."), raw)
        info = _dense_info(raw)
    info["name"] = name
    info.update(embedding_dim=info["hidden_size"], modules=None,
                quantization=_quantization(raw.get("quantization_config")))
    if folder is not None and (folder / "modules.json").is_file():
        try:
            pipeline = read_pipeline(folder)
            width, recipe = describe_pipeline(pipeline, info["hidden_size"])
            head = _head_parameters(pipeline)
            info.update(embedding_dim=width, modules=recipe,
                        total_parameters=info["total_parameters"] + head,
                        active_parameters=info["active_parameters"] + head)
        except CheckpointError as exc:  # UnsupportedModuleError included: say so, load refuses
            info.update(embedding_dim=None, modules=f"not supported: {exc}")
    info.update(weights=False, revision=None, fingerprint=None)
    if folder is not None:
        try:
            files = safetensors_files(folder)
        except CheckpointError:
            files = []
        if files:
            info.update(
                weights=True, revision=rev or "local", fingerprint=weights_fingerprint(folder, files)
            )
    return info


def format_model_info(info: dict[str, Any]) -> str:
    """Human-readable lines for :func:`model_info`'s dictionary (what ``skmoe info`` prints)."""
    total, active = info["total_parameters"], info["active_parameters"]
    rows = [
        ("model", info.get("name")),
        ("architecture", info["architecture"]),
        ("hidden size", info["hidden_size"]),
        *([("sentence modules", info["modules"]), ("embedding width", info["embedding_dim"])]
          if info.get("modules") else []),
        ("layers", info["layers"]),
        ("attention heads", info["heads"]),
        ("FFN width", info["ffn_size"]),
        ("vocabulary", f"{info['vocab_size']:,}"),
    ]
    if info["experts"]:
        moe = ", ".join(map(str, info["moe_layers"])) or "none"
        rows += [
            ("experts", f"{info['experts']} (top-{info['top_k']} per token)"),
            ("MoE layers", f"{moe} (moe_every_n_layers = {info['moe_every_n_layers']})"),
        ]
    rows += [
        ("total parameters", f"{total:,}"),
        ("active parameters", f"{active:,} per token ({active / total:.1%})"),
    ]
    if info.get("quantization"):
        rows.append(("quantized weights", info["quantization"]))
    if info.get("weights"):
        rows += [("revision", info["revision"]), ("fingerprint", info["fingerprint"])]
    else:
        rows.append(("weights", "not present (counted from config.json)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _quantization(q: Any) -> str | None:
    """One line for a ``quantization_config`` entry (``skmoe quantize`` writes one): method,
    precision, group size, rounding; None without one."""
    if not isinstance(q, dict):
        return None
    parts = [str(q.get("precision") or q.get("quant_method") or "quantized")]
    if q.get("group_size"):
        parts.append(f"group size {q['group_size']}")
    if q.get("rounding"):
        parts.append(f"{q['rounding']} rounding")
    return f"{', '.join(parts)} (by {q.get('quant_method', 'an unknown method')})"


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotAConfigError(f"{path} is not a JSON model config ({exc})") from None
    if not isinstance(raw, dict):
        raise NotAConfigError(f"{path} is not a JSON model config (a {type(raw).__name__}, not an object)")
    return raw


def _head_parameters(pipeline: SentencePipeline) -> int:
    """Parameters of the Dense modules after pooling, built on the meta device as loading
    builds them (:func:`skmoe.encoder.st_modules.load_head`)."""
    with torch.device("meta"):
        dense = [DenseModule(cfg["in_features"], cfg["out_features"], cfg["bias"],
                             cfg["activation"], cfg["use_residual"])
                 for entry, cfg in pipeline.head if entry.kind == "Dense"]
    return sum(p.numel() for module in dense for p in module.parameters())


def _hub_config_folder(
    name: str, revision: str | None, local_files_only: bool, cache_dir: str | os.PathLike[str] | None
) -> tuple[Path, str]:
    """Fetch the small files of a hub id that :func:`model_info` reads (``config.json`` and,
    when the model has them, ``modules.json`` and its modules' ``config.json``; never weights);
    return the snapshot folder and commit."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.utils import HfHubHTTPError

    offline = hub_offline(local_files_only)

    def fetch(filename: str, rev: str | None) -> str:
        return hf_hub_download(name, filename, revision=rev, cache_dir=cache_dir,
                               local_files_only=offline)

    try:
        folder = Path(fetch("config.json", revision)).parent
    except (OSError, HfHubHTTPError, ValueError) as exc:
        cached = _only_cached_config(name, cache_dir) if offline and revision is None else None
        if cached is None:
            raise _config_not_available(name, revision, offline, exc, cache_dir) from exc
        folder = cached

    def optional(filename: str) -> bool:  # absent, or not cached when offline: no such module
        try:
            fetch(filename, folder.name)
        except (OSError, HfHubHTTPError, ValueError, EntryNotFoundError):
            return False
        return True

    if optional("modules.json"):
        try:
            entries = read_modules(folder) or []
        except CheckpointError:  # model_info's read_pipeline names the problem
            entries = []
        for entry in entries:
            if entry.path:
                optional(f"{entry.path}/config.json")
    return folder, folder.name


def _only_cached_config(name: str, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """Offline, with no revision asked: the snapshot folder holding the hub id's config.json
    when the cache has exactly one (fetched by commit, so no ``refs/main`` points at it)."""
    snapshots = hub_repo_folder(name, cache_dir) / "snapshots"
    found = [p.parent for p in snapshots.glob("*/config.json") if p.is_file()]
    return found[0] if len(found) == 1 else None


def _config_not_available(name: str, revision: str | None, offline: bool, exc: Exception,
                          cache_dir: str | os.PathLike[str] | None) -> ModelNotAvailableError:
    """The error for a hub id whose config.json cannot be had: which revisions the cache holds,
    or how to provide that one file (model facts need no weights)."""
    elsewhere = cached_elsewhere(name, revision, exc, cache_dir)
    if elsewhere is not None:
        return ModelNotAvailableError(elsewhere)
    where = "without network (HF_HUB_OFFLINE / local_files_only)" if offline else "from the hub"
    rev = f" --revision {revision}" if revision else ""
    return ModelNotAvailableError(
        f"Could not read the config of {name!r}{f' at revision {revision!r}' if revision else ''} "
        f"{where}: its config.json is not in the Hugging Face cache and could not be downloaded "
        f"({type(exc).__name__}). Model facts need that file only (a few KB, no weights): on a "
        f"machine with network run `hf download {name} config.json{rev} --local-dir FOLDER`, "
        "copy FOLDER here and run `skmoe info FOLDER` (Python: model_info('FOLDER')). The other "
        f"commands need the weights too: `hf download {name}{rev} --local-dir FOLDER`, then "
        "--model FOLDER."
    )


def _nomic_info(raw: dict[str, Any]) -> dict[str, Any]:
    cfg = NomicMoEConfig.from_dict(raw)
    total, active = count_parameters(cfg)
    return {
        "architecture": "NomicBertModel (sparse MoE)" if cfg.moe_layers else "NomicBertModel",
        "model_type": "nomic_bert",
        "hidden_size": cfg.n_embd,
        "layers": cfg.n_layer,
        "heads": cfg.n_head,
        "ffn_size": cfg.n_inner,
        "vocab_size": cfg.vocab_size,
        "experts": cfg.num_experts if cfg.moe_layers else 0,
        "top_k": cfg.moe_top_k if cfg.moe_layers else 0,
        "moe_every_n_layers": cfg.moe_every_n_layers,
        "moe_layers": cfg.moe_layers,
        "total_parameters": total,
        "active_parameters": active,
    }


def _dense_info(raw: dict[str, Any]) -> dict[str, Any]:
    """A transformers encoder, built from its config on the meta device (no remote code)."""
    from transformers import AutoConfig, AutoModel

    kind = raw.get("model_type")
    if not kind:
        raise CheckpointError("config.json has no model_type; cannot tell the architecture")
    params = {k: v for k, v in raw.items() if k != "model_type"}
    config = AutoConfig.for_model(kind, **params)
    with torch.device("meta"):
        try:  # the sentence encoder never uses a pooler: count what load_encoder loads
            model = AutoModel.from_config(config, add_pooling_layer=False)
        except TypeError:
            model = AutoModel.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    arch = (raw.get("architectures") or [type(model).__name__])[0]
    return {
        "architecture": arch,
        "model_type": kind,
        "hidden_size": getattr(config, "hidden_size", None),
        "layers": getattr(config, "num_hidden_layers", None),
        "heads": getattr(config, "num_attention_heads", None),
        "ffn_size": getattr(config, "intermediate_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "experts": 0,
        "top_k": 0,
        "moe_every_n_layers": 0,
        "moe_layers": [],
        "total_parameters": total,
        "active_parameters": total,
    }
