"""The modules a quantized mode replaces (:class:`Unit`), and their portable tensors: what a
pre-quantized folder stores per module (:mod:`skmoe.engine.quantized_io` writes and reads the
folder) and how each module is rebuilt from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .int4 import INT4_ROUNDING, Int4Experts, Int4Linear, Int4MLP
from .int8 import Int8Experts, Int8Linear, Int8MLP
from .row_embedding import FileRows, Int8RowEmbedding
from .row_embedding import word_embeddings as find_word_embeddings


@dataclass(frozen=True)
class Unit:
    """One module a quantized mode replaces: its dotted ``name`` in the backbone, its ``kind``
    (``linear``, ``mlp``, ``experts`` or ``embedding``) and the float module."""

    name: str
    kind: str
    module: nn.Module


def quantized_units(backbone: nn.Module, mode: str) -> list[Unit]:
    """The modules ``mode`` quantizes, in order: the MoE model's declared parts (every
    ``nn.Linear`` of a backbone that declares none; routers stay float32), and for int4 the
    word-embedding table."""
    declare = getattr(backbone, "replaceable_parts", None)
    kinds = {"projection": "linear", "feed_forward": "mlp", "experts": "experts"}
    if callable(declare):
        units = [Unit(p.name, kinds[p.kind], p.module) for p in declare() if p.kind in kinds]
    else:
        units = [Unit(n, "linear", m) for n, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    table = find_word_embeddings(backbone) if mode == "int4" else None
    if table is not None:
        name = next(n for n, m in backbone.named_modules() if m is table[0])
        units.append(Unit(name, "embedding", table[0]))
    return units


def portable_tensors(unit: Unit, mode: str, group_size: int, bits: int,
              rounding: str = INT4_ROUNDING) -> dict[str, torch.Tensor]:
    """The unit's portable tensors, quantized from its float weights."""
    m = unit.module
    if unit.kind == "embedding":
        return Int8RowEmbedding.portable(m)
    if mode == "int4":
        if unit.kind == "linear":
            return Int4Linear.portable(m, group_size, unit.name, rounding=rounding)
        if unit.kind == "mlp":
            return Int4MLP.portable(m, group_size, unit.name, rounding=rounding)
        return Int4Experts.portable(m, group_size, unit.name, rounding=rounding)
    if unit.kind == "linear":
        return Int8Linear.portable(m, bits)
    return Int8MLP.portable(m, bits) if unit.kind == "mlp" else Int8Experts.portable(m, bits)


def module_from_portable(unit: Unit, mode: str, group_size: int, t: dict[str, torch.Tensor],
                   rows_file: FileRows | None = None) -> nn.Module:
    """The quantized module for ``unit`` built from its stored tensors."""
    if unit.kind == "embedding":
        return Int8RowEmbedding.from_portable(t, unit.module.padding_idx, rows_file)
    if mode == "int4":
        cls4 = {"linear": Int4Linear, "mlp": Int4MLP, "experts": Int4Experts}[unit.kind]
        return cls4.from_portable(t, group_size)
    cls8 = {"linear": Int8Linear, "mlp": Int8MLP, "experts": Int8Experts}[unit.kind]
    return cls8.from_portable(t)


def install_unit(backbone: nn.Module, unit: Unit, new: nn.Module) -> None:
    if unit.kind == "embedding":
        _, put = find_word_embeddings(backbone)  # type: ignore[misc]
        put(new)
    elif callable(getattr(backbone, "replace_part", None)):
        backbone.replace_part(unit.name, new)
    else:
        parent, _, attr = unit.name.rpartition(".")
        setattr(backbone.get_submodule(parent), attr, new)


def owned_by(name: str, units: list[Unit]) -> bool:
    return any(name.startswith(u.name + ".") for u in units)
