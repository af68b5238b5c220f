"""The server process's garbage collector, tuned for many streams (`StreamChat.gc_tuning`, on by default).

Every token of every stream makes short-lived objects (futures, timer handles, events)
that live about as long as the gap between two tokens. With CPython's default thresholds
(700, 10, 10) the young collections run so often that most of them survive into the old
generation, and every few seconds a full collection walks the whole heap, the Jupyter
server's own startup objects included: a pause of a large part of a second for every
stream at once, and a fifth of the process's CPU at a few hundred streams.

`tune_gc`, once the server has started: collects, moves the objects alive then into the
permanent generation (`gc.freeze`: the server's modules, classes and configuration, which
live as long as the process), so full collections walk only what was made since; and
raises the young generation's threshold to `YOUNG_THRESHOLD`, so that short-lived objects
are freed by reference counting before a collection promotes them. Objects in cycles are
still collected; the cost is a few MB more young objects between collections.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_gc"]

YOUNG_THRESHOLD = 5_000
"""Allocations between two young collections (CPython's default: 700)."""


def tune_gc() -> tuple[int, int, int]:
    """Freeze what is alive now and raise the young threshold (never lowers one already higher); the new thresholds."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
    return gc.get_threshold()
