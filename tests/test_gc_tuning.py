"""`gc_tuning`: the server process's collector after `tune_gc` (in a child process: it changes the whole process)."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json
gc.set_threshold(700, 10, 10)
from jupyter_server_extension.gc_tuning import YOUNG_THRESHOLD, tune_gc
kept = [[i] for i in range(1000)]  # alive at startup: frozen
print(json.dumps({"thresholds": tune_gc(), "frozen": gc.get_freeze_count(), "young": YOUNG_THRESHOLD}))
gc.set_threshold(50_000, 10, 10)
print(json.dumps({"thresholds": tune_gc()}))
"""


def test_tune_gc_freezes_the_startup_heap_and_raises_only_the_young_threshold() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["thresholds"] == [first["young"], 10, 10]
    assert first["frozen"] > 1000
    assert second["thresholds"] == [50_000, 10, 10]  # a higher threshold set by the admin stays
