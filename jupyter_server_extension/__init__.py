"""streamchat's Jupyter Server extension: REST, SSE and WebSocket chat, plus a web page.

Users see and enable it as ``streamchat`` (`streamchat._jupyter_server_extension_points`
points here); a ``jupyter_server_config.d`` file installed by pip enables it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamChat"]


def __getattr__(name: str) -> Any:
    """`StreamChat`, imported on first use."""
    if name == "StreamChat":  # imported lazily: importing the package must not start jupyter_server
        from .app import StreamChat

        return StreamChat
    raise AttributeError(name)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The extension point jupyter_server loads."""
    from .app import StreamChat

    return [{"module": "jupyter_server_extension", "app": StreamChat}]
