"""pytest --nbval runs these notebooks in a kernel with no widget frontend: show turns as text.

`STREAMCHAT_DISPLAY=text` is what a user sets for any non-widget frontend (nbconvert, a
terminal console); the committed outputs were produced the same way, so they are
compared. It is set only around the notebook items (the kernel inherits it when nbval
starts it for a notebook's first cell), so other tests keep the default.
"""

from __future__ import annotations

import os

import pytest

_SAVED = "_streamchat_display_before"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a notebook cell (and its kernel) starts: plain-text display."""
    if item.path.suffix == ".ipynb":
        setattr(item, _SAVED, os.environ.get("STREAMCHAT_DISPLAY"))
        os.environ["STREAMCHAT_DISPLAY"] = "text"


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """After a notebook cell: restore the variable."""
    if item.path.suffix == ".ipynb" and hasattr(item, _SAVED):
        before = getattr(item, _SAVED)
        if before is None:
            os.environ.pop("STREAMCHAT_DISPLAY", None)
        else:
            os.environ["STREAMCHAT_DISPLAY"] = before
