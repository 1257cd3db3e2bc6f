"""Capturing the router's decisions: :func:`capture_routing` and its :class:`RoutingRecord`.

One encoder object is shared by every estimator and thread of a process (the registry), so a
capture belongs to the *call* that opened it, not to the model:

* The open captures live in a :class:`contextvars.ContextVar`: a forward pass records into the
  captures of its own context. Each thread starts with a context of its own, so forwards in
  other threads never reach a capture; work handed to a worker thread with
  ``contextvars.copy_context().run(...)`` (as ``asyncio.to_thread`` does) carries the
  caller's captures along, so the capture follows the call, not the thread id. Today the
  engine runs every forward pass in the caller's thread (its prefetch worker only tokenizes).
* Captures nest: every open capture of the context that covers the layer receives the record
  (the same :class:`RoutingRecord` object); leaving a block closes that capture only, whatever
  the order blocks are left in, and a closed capture never receives again, even from a
  context copied while it was open.
* The forward pays one attribute check per MoE layer while no capture is open on the model:
  ``MoE.routing_sink`` is ``None`` then. While one is open anywhere in the process the
  attribute is the shared :data:`ROUTING_SINK`, and a forward asks it for its own context's
  captures; one without any builds no record and copies nothing to the host. Under
  ``torch.compile`` the attribute is guarded (a graph each for off and on, not one per
  capture) and :meth:`RoutingSink.record` runs eagerly: a graph break, only while a capture
  is open on the model (in any thread), which a ``fullgraph=True`` compile refuses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .nomic_moe import MoE


@dataclass
class RoutingRecord:
    """Router output of one MoE layer for the real tokens of one forward call.

    ``probs`` is the fp32 softmax over all experts ``[T, E]``; ``top_experts`` / ``top_weights``
    the chosen experts and their (un-renormalised unless configured) weights ``[T, K]``.
    Tokens are the real tokens of the forward call's batch in row-major order (the batch's row
    0, then its row 1, ...). The engine batches rows in its own (length-sorted) order: map
    records back to texts with the row positions ``Engine.iter_batches`` yields. Nested
    captures receive the same record object.
    """

    layer: int
    probs: torch.Tensor
    top_experts: torch.Tensor
    top_weights: torch.Tensor


class _Capture:
    """One ``with capture_routing(...)`` block: its records, the MoE layers it covers, and
    whether it is still open."""

    __slots__ = ("records", "layers", "open")

    def __init__(self, layers: frozenset[MoE]) -> None:
        self.records: list[RoutingRecord] = []
        self.layers = layers
        self.open = True


#: The captures open in this context, innermost last.
_OPEN: ContextVar[tuple[_Capture, ...]] = ContextVar("skmoe_routing_captures", default=())


class RoutingSink:
    """What ``MoE.routing_sink`` holds while a capture covers the layer (in any thread):
    :meth:`record` hands a forward's router output to the captures of the calling context."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._covering: dict[MoE, int] = {}  # MoE layer -> captures open on it
        self._wrapped = False

    def __reduce__(self) -> tuple[type[None], tuple[()]]:
        # a model copied or pickled while a capture is open: no capture covers the copy
        return type(None), ()

    def record(self, layer: MoE, probs: torch.Tensor, top_experts: torch.Tensor,
               top_weights: torch.Tensor) -> None:
        """Append one record for ``layer`` to each open capture of this context covering it."""
        captures = [c for c in _OPEN.get() if c.open and layer in c.layers]
        if not captures:  # another call's capture: nothing built, nothing copied
            return
        rec = RoutingRecord(layer.layer_index, probs.detach().cpu(), top_experts.cpu(),
                            top_weights.cpu())
        for capture in captures:
            capture.records.append(rec)

    def _attach(self, layers: frozenset[MoE]) -> None:
        with self._lock:
            if not self._wrapped:  # dynamo cannot read a ContextVar: run eagerly when compiled
                self.record = torch.compiler.disable(self.record)  # type: ignore[method-assign]
                self._wrapped = True
            for m in layers:
                self._covering[m] = self._covering.get(m, 0) + 1
                m.routing_sink = self

    def _detach(self, layers: frozenset[MoE]) -> None:
        with self._lock:
            for m in layers:
                left = self._covering.pop(m) - 1
                if left:
                    self._covering[m] = left
                else:  # no capture left on the layer: back to the one attribute check
                    m.routing_sink = None


#: The one sink every capturing MoE layer points at.
ROUTING_SINK = RoutingSink()


@contextmanager
def capture_routing(model: nn.Module) -> Iterator[list[RoutingRecord]]:
    """Collect a :class:`RoutingRecord` per MoE layer per forward call inside the block.

    Only forward passes leave records: texts an estimator serves from its cache run none.
    :func:`skmoe.evaluation.routing_stats` always runs the model.

    The records are those of the forward calls of this block's own call: made in the thread
    that opened it (or in work given this thread's context with
    ``contextvars.copy_context().run``) while the block is open. Forward passes of other
    threads on the same (shared) model never reach it. Blocks nest: an inner block's records
    go to the outer block too, and the outer block keeps recording after the inner one ends
    (``routing_stats`` inside a block adds its forward passes' records to it).

    >>> with capture_routing(encoder) as records:  # doctest: +SKIP
    ...     encoder(input_ids, attention_mask)
    """
    # the MoE layers: those with a routing sink (this module imports no model module)
    layers = frozenset(m for m in model.modules() if hasattr(m, "routing_sink"))
    if not layers:
        raise TypeError("capture_routing needs a Mixture-of-Experts model; this one has no MoE layer")
    capture = _Capture(layers)
    ROUTING_SINK._attach(layers)
    _OPEN.set((*_OPEN.get(), capture))
    try:
        yield capture.records
    finally:
        capture.open = False
        # this capture only, wherever it stands (blocks in generators may end out of order)
        _OPEN.set(tuple(c for c in _OPEN.get() if c is not capture))
        ROUTING_SINK._detach(layers)
