"""Analytics: turn and tool metrics recorded from the event stream, in rolling windows.

- `recorder` — the process's `Recorder`, which `ChatSession.stream` feeds every event;
- `window` — `Stats` and `RollingWindow`: mergeable figures per time slot;
- `histogram` — `LogHistogram`: mergeable percentiles within a stated 2 % error;
- `shared` — `SharedMetrics`: every server process's figures combined in Redis;
- `prometheus` — the metrics jupyter_server's ``/metrics`` shows;
- `tracing` — OpenTelemetry spans, when installed and configured.

The notebook's `streamchat.dashboard()` and the server's ``streamchat/dashboard`` page show
`Recorder.summary()`.
"""

from .histogram import RELATIVE_ERROR, LogHistogram
from .recorder import Recorder, TurnInfo, TurnObserver, recorder
from .window import RollingWindow, Stats, ToolStats

__all__ = [
    "RELATIVE_ERROR",
    "LogHistogram",
    "Recorder",
    "RollingWindow",
    "Stats",
    "ToolStats",
    "TurnInfo",
    "TurnObserver",
    "recorder",
]
