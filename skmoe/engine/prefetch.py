"""Run an iterator ahead of its consumer in a worker thread.

The engine tokenizes and plans the next group of texts while the accelerator runs the current
one (the tokenizer releases the GIL while it encodes, and so do torch's kernels). Items arrive in
order; an exception raised by the iterator is raised again in the consumer at the item where it
happened (everything before it has been consumed); a consumer that stops early stops the worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a blocked worker looks whether the consumer has gone


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def prefetched(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield the items of ``items`` in order, computing up to ``depth`` of them ahead in a
    worker thread (one thread per call, a daemon, joined when the consumer finishes or stops).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not hand_over(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            hand_over(_Raised(error))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        hand_over(_DONE)

    worker = threading.Thread(target=work, name="skmoe-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
