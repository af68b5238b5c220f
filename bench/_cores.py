"""Pinning a bench's processes to cores, so that a server and its client do not take turns on one.

On a machine of few cores, a local server and the client measuring it, left to the
scheduler, share cores with each other and with everything else, and the figures swing
from run to run. `pin(core)` binds the calling process to one CPU of those it may use
(`os.sched_setaffinity`, Linux), so each bench process has a core of its own where there
are two or more; it says what it did, for the bench to print.
"""

from __future__ import annotations

import os

__all__ = ["pin"]


def pin(core: int) -> str:
    """Bind this process (the calling thread and the threads it starts later) to CPU `core` of its allowed ones.

    `core` counts the CPUs this process may use (wrapping around), so 0 and 1 are two
    different cores wherever there are two. Returns what was done, e.g. ``"CPU 1 of 0-1"``,
    or why nothing was (one CPU only, no `sched_setaffinity` on this platform).
    """
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return f"not pinned (one CPU: {allowed[0]})"
    cpu = allowed[core % len(allowed)]
    os.sched_setaffinity(0, {cpu})
    return f"CPU {cpu} of {','.join(map(str, allowed))}"
