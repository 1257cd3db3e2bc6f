"""The sentence-transformers module list of a folder (``modules.json``), read in order.

sentence-transformers saves a model as modules applied in turn: ``Transformer`` (token states),
``Pooling`` (one vector per text), then optionally ``Dense`` projections and ``Normalize``
(LaBSE and distiluse-base-multilingual end in ``Dense``; many models in ``Normalize``). skmoe runs
the same list: the backbone, the pooling mode, then a :class:`SentenceHead` holding the Dense and
Normalize modules in file order, in float32. Anything else is refused with an error naming the
module's type and folder, so that a model is never embedded as if one of its modules were absent
(a silently different vector, or a different width).

Module types are matched by class name under the ``sentence_transformers`` package, so the names
written by every release are accepted (``sentence_transformers.models.Dense`` and
``sentence_transformers.base.modules.dense.Dense`` alike). Pooling configs are read in both the
older (``pooling_mode_mean_tokens: true``) and newer (``pooling_mode: "mean"``) form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from .checkpoint import CheckpointError, check_finite_tensors, read_headers, read_json

#: Class names of the sentence-transformers modules skmoe runs exactly as sentence-transformers.
SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
#: ``activation_function`` values of a Dense config (as sentence-transformers writes them).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
    "torch.nn.modules.activation.SiLU": nn.SiLU,
}
_POOLING_FLAGS = {  # older configs: one boolean per mode
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
_POOLING_RUN = ("mean", "cls", "max")
_SENTENCE = "sentence_embedding"


class UnsupportedModuleError(CheckpointError):
    """A sentence-transformers module (or module setting) skmoe cannot run exactly."""


@dataclass(frozen=True)
class ModuleEntry:
    """One entry of ``modules.json``."""

    position: int  # in the list (the order sentence-transformers applies them)
    kind: str  # class name: Transformer, Pooling, Dense, Normalize, or another (refused)
    type: str  # as written in the file
    path: str  # module folder, relative to the model folder ("" = the folder itself)

    def label(self) -> str:
        return f"module {self.position} ({self.type}, folder {self.path or '.'!r})"


@dataclass
class SentencePipeline:
    """What follows the backbone: the pooling mode, then the head modules in order."""

    pooling: str = "mean"
    head: list[tuple[ModuleEntry, dict[str, Any]]] = field(default_factory=list)


def read_modules(folder: Path) -> list[ModuleEntry] | None:
    """The entries of ``folder/modules.json`` in order (None when the file is absent)."""
    where = folder / "modules.json"
    modules = read_json(where, kind=list)
    if modules is None:
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("type", ""), str) for m in modules):
        raise CheckpointError(f"{where} must be a list of objects with a 'type'")
    entries = []
    for i, m in enumerate(modules):
        path = m.get("path", "")
        if not isinstance(path, str) or Path(path).is_absolute() or ".." in Path(path).parts:
            raise CheckpointError(f"{where}: module {i} has path {path!r}; it must be a folder "
                                  "inside the model folder")
        typ = m.get("type", "")
        kind = typ.rsplit(".", 1)[-1] if typ.startswith("sentence_transformers.") else typ
        entries.append(ModuleEntry(i, kind, typ, path.strip("/")))
    return entries


def module_files(folder: Path) -> tuple[list[str], list[str]]:
    """Relative paths of the module files that change a vector, for the fingerprint:
    (weight files, config files) of every module after the Transformer. Never refuses a
    module (loading does); a folder without ``modules.json`` (or with a malformed one, which
    loading refuses by name) has none."""
    try:
        entries = read_modules(Path(folder)) or []
    except CheckpointError:
        return [], []
    weights, configs = [], []
    for entry in entries:
        if not entry.path:
            continue
        sub = Path(folder) / entry.path
        if (sub / "config.json").is_file():
            configs.append(f"{entry.path}/config.json")
        weights += sorted(f"{entry.path}/{p.name}" for p in sub.glob("*.safetensors"))
    return weights, configs


def read_pipeline(folder: Path) -> SentencePipeline:
    """The pooling mode and head modules of ``folder``, checked; unsupported modules refused.

    Without ``modules.json`` (a plain transformers folder): ``1_Pooling/config.json`` when present,
    else mean pooling, and no head.
    """
    folder = Path(folder)
    entries = read_modules(folder)
    if not entries:
        found = read_json(folder / "1_Pooling" / "config.json")
        return SentencePipeline(_pooling(found, folder / "1_Pooling" / "config.json"))
    where = folder / "modules.json"
    for entry in entries:
        if entry.kind not in SUPPORTED_MODULES:
            raise UnsupportedModuleError(
                f"{where}: {entry.label()} is not supported: skmoe runs the sentence-transformers "
                f"modules {', '.join(SUPPORTED_MODULES)} only, and embedding without this one "
                "would give other vectors than sentence-transformers")
    first = entries[0]
    if first.kind != "Transformer" or first.path:
        raise UnsupportedModuleError(
            f"{where}: {first.label()} must be a Transformer saved in the model folder itself "
            f"(path ''); skmoe loads the transformer from {folder}")
    pipeline = SentencePipeline()
    pooled = False
    for entry in entries[1:]:
        if entry.kind == "Transformer" or (entry.kind == "Pooling" and pooled):
            raise UnsupportedModuleError(f"{where}: {entry.label()}: a second {entry.kind} "
                                         "module is not supported")
        if entry.kind == "Pooling":
            cfg_path = folder / entry.path / "config.json"
            cfg = read_json(cfg_path)
            if cfg is None:
                raise CheckpointError(f"{where}: {entry.label()} has no {cfg_path}")
            pipeline.pooling = _pooling(cfg, cfg_path)
            pooled = True
        elif not pooled:
            raise UnsupportedModuleError(f"{where}: {entry.label()} comes before the Pooling "
                                         "module; skmoe runs Dense and Normalize on pooled vectors")
        else:
            cfg = read_json(folder / entry.path / "config.json") if entry.path else None
            pipeline.head.append((entry, _check_head_config(entry, cfg or {}, folder)))
    if not pooled:
        raise UnsupportedModuleError(f"{where} has no Pooling module: sentence-transformers "
                                     "would return token embeddings, not one vector per text")
    return pipeline


def _pooling(cfg: dict[str, Any] | None, where: Path) -> str:
    """The mode of a Pooling config; modes skmoe does not run are refused."""
    if cfg is None:
        return "mean"
    if "pooling_mode" in cfg:
        mode = cfg["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, list) else []
    else:
        modes = [name for key, name in _POOLING_FLAGS.items() if cfg.get(key)] or ["mean"]
    if len(modes) != 1 or modes[0] not in _POOLING_RUN:
        raise UnsupportedModuleError(
            f"{where}: pooling mode {'+'.join(map(str, modes)) or '(none)'} is not supported; "
            f"skmoe pools with exactly one of {', '.join(_POOLING_RUN)}")
    if cfg.get("include_prompt", True) is False:
        raise UnsupportedModuleError(
            f"{where}: include_prompt = false is not supported; skmoe pools prompt tokens with "
            "the text (sentence-transformers' include_prompt = true)")
    return modes[0]


def _check_head_config(entry: ModuleEntry, cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A Dense or Normalize config, checked against what :class:`SentenceHead` runs."""
    where = folder / entry.path / "config.json"
    for key in ("module_input_name", "module_output_name"):
        if cfg.get(key, _SENTENCE) != _SENTENCE:
            raise UnsupportedModuleError(f"{where}: {entry.label()} has {key} = {cfg[key]!r}; "
                                         f"skmoe runs it on {_SENTENCE!r} only")
    if entry.kind == "Normalize":
        return {}
    sizes = {}
    for key in ("in_features", "out_features"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1 << 20:
            raise CheckpointError(f"{where}: {entry.label()} needs a positive integer {key}, "
                                  f"got {value!r}")
        sizes[key] = value
    activation = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")  # ST's default
    if activation is None:
        activation = "torch.nn.modules.linear.Identity"
    if activation not in ACTIVATIONS:
        raise UnsupportedModuleError(
            f"{where}: {entry.label()} has activation_function {activation!r}; supported: "
            f"{', '.join(sorted(ACTIVATIONS))}")
    return {**sizes, "bias": bool(cfg.get("bias", True)), "activation": activation,
            "use_residual": bool(cfg.get("use_residual", False))}


# -- the head: what runs after pooling ----------------------------------------------------------
class DenseModule(nn.Module):
    """sentence-transformers' ``Dense``: ``activation(linear(x))`` (+ the optional residual)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, activation: str,
                 use_residual: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = ACTIVATIONS[activation]()
        self.activation_name = activation.rsplit(".", 1)[-1]
        self.use_residual = use_residual
        if use_residual and in_features != out_features:
            self.residual = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.in_features == self.out_features else self.residual(x))
        return out

    def describe(self) -> str:
        extra = " + residual" if self.use_residual else ""
        return f"Dense {self.in_features}->{self.out_features} {self.activation_name}{extra}"


class NormalizeModule(nn.Module):
    """sentence-transformers' ``Normalize``: L2 normalisation of each vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=-1)

    def describe(self) -> str:
        return "Normalize"


class SentenceHead(nn.Sequential):
    """The Dense / Normalize modules after pooling, in the order of ``modules.json`` (float32)."""

    def __init__(self, modules: list[nn.Module], in_features: int) -> None:
        super().__init__(*modules)
        self.in_features = in_features

    @property
    def out_features(self) -> int:
        dense = [m for m in self if isinstance(m, DenseModule)]
        return dense[-1].out_features if dense else self.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())

    def describe(self) -> str:
        return " -> ".join(m.describe() for m in self)


def load_head(folder: Path, pipeline: SentencePipeline, hidden_size: int) -> SentenceHead | None:
    """The :class:`SentenceHead` of ``pipeline`` with its weights (None when it has no modules).

    Each Dense module's weights come from ``model.safetensors`` in its folder, every tensor's
    name, shape and dtype checked against its config before it is read; pickled weights
    (``pytorch_model.bin``) are refused by name.
    """
    folder = Path(folder)
    # (the width a Pooling config declares is not checked: sentence-transformers never uses it
    # to compute a vector; test and benchmark folders copy the tiny fixture's to any width)
    if not pipeline.head:
        return None
    modules: list[nn.Module] = []
    width = hidden_size
    for entry, cfg in pipeline.head:
        if entry.kind == "Normalize":
            modules.append(NormalizeModule())
            continue
        if cfg["in_features"] != width:
            raise CheckpointError(
                f"{folder / entry.path / 'config.json'}: {entry.label()} has in_features = "
                f"{cfg['in_features']}, but the vectors reaching it have {width} dimensions")
        dense = DenseModule(cfg["in_features"], cfg["out_features"], cfg["bias"],
                            cfg["activation"], cfg["use_residual"])
        _load_dense_weights(dense, folder / entry.path, entry)
        modules.append(dense)
        width = cfg["out_features"]
    return SentenceHead(modules, hidden_size).eval().requires_grad_(False)


def _load_dense_weights(dense: DenseModule, sub: Path, entry: ModuleEntry) -> None:
    file = sub / "model.safetensors"
    if not file.is_file():
        pickles = sorted(p.name for p in sub.glob("*.bin")) if sub.is_dir() else []
        if pickles:
            raise CheckpointError(
                f"{sub / pickles[0]}: the weights of {entry.label()} are pickled; skmoe reads "
                "safetensors only, because unpickling can run arbitrary code. Convert once with "
                f"`safetensors.torch.save_file(torch.load(path, weights_only=True), "
                f"'{file}')` from a trusted copy")
        raise CheckpointError(f"{file} is missing: {entry.label()} has no weights (skmoe reads "
                              "a module's model.safetensors only, never pickled weights)")
    header = read_headers([file])
    expected = {k: tuple(v.shape) for k, v in dense.state_dict().items()}
    problems = [f"missing tensor {k!r} {shape}" for k, shape in expected.items() if k not in header]
    problems += [f"unexpected tensor {k!r}" for k in header if k not in expected]
    for k, shape in expected.items():
        if k in header:
            dtype, stored, _ = header[k]
            if tuple(stored) != shape:
                problems.append(f"tensor {k!r} has shape {tuple(stored)}, expected {shape} "
                                "from its config.json")
            elif dtype not in ("F32", "F16", "BF16", "F64"):
                problems.append(f"tensor {k!r} has dtype {dtype}, expected a float")
    if problems:
        raise CheckpointError(f"{file} does not match {entry.label()}: " + "; ".join(problems))
    try:
        with safe_open(str(file), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k).float() for k in expected}
    except Exception as exc:  # SafetensorError and friends: say which file
        raise CheckpointError(f"{file} cannot be read as safetensors ({type(exc).__name__}: "
                              f"{exc})") from None
    check_finite_tensors(tensors.items(), file)
    dense.load_state_dict(tensors, strict=True)


def describe_pipeline(pipeline: SentencePipeline, hidden_size: int) -> tuple[int, str]:
    """(output width, recipe) from the configs alone, e.g.
    ``(256, "mean pooling -> Dense 768->256 Tanh -> Normalize")``."""
    width, steps = hidden_size, [f"{pipeline.pooling} pooling"]
    for entry, cfg in pipeline.head:
        if entry.kind == "Normalize":
            steps.append("Normalize")
            continue
        residual = " + residual" if cfg["use_residual"] else ""
        steps.append(f"Dense {cfg['in_features']}->{cfg['out_features']} "
                     f"{cfg['activation'].rsplit('.', 1)[-1]}{residual}")
        width = cfg["out_features"]
    return width, " -> ".join(steps)
