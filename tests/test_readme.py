"""Every Python example in the README runs, in a real kernel, top to bottom."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_examples_run_in_a_kernel(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 4
    # Examples that call `asyncio.run` are scripts; in a kernel, whose loop is running, run them
    # as scripts do, in a fresh thread with no loop.
    cells = []
    for block in blocks:
        if "asyncio.run(" in block:
            block = f"import threading as _t\n_exc = []\ndef _script():\n    try:\n        exec({block!r}, globals())\n    except BaseException as e:\n        _exc.append(e)\n_th = _t.Thread(target=_script); _th.start(); _th.join()\nif _exc: raise _exc[0]\n"
        cells.append(nbformat.v4.new_code_cell(block))
    notebook = nbformat.v4.new_notebook(cells=cells)
    for name in list(os.environ):
        if name.startswith(("STREAMCHAT_", "OLLAMA_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STREAMCHAT_DISPLAY", "text")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens: the demo model answers
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in notebook.cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
