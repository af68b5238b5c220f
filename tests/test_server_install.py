"""The installed package enables the extension: `jupyter server extension list` shows streamchat."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jupyter_core.paths

import streamchat


def test_pip_install_enables_the_extension() -> None:
    enabling = [
        Path(directory) / "jupyter_server_config.d" / "streamchat.json"
        for directory in jupyter_core.paths.jupyter_config_path()
    ]
    installed = [path for path in enabling if path.exists()]
    assert installed, f"no streamchat.json in {[str(p.parent) for p in enabling]}"
    assert json.loads(installed[0].read_text()) == {"ServerApp": {"jpserver_extensions": {"streamchat": True}}}
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)  # drop colours
    assert "    streamchat enabled\n" in output, output
    assert f"      streamchat {streamchat.__version__} OK\n" in output, output
