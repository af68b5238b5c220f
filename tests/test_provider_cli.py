"""`streamchat chat` picks its backend like a user would see it: the demo model with nothing
configured, the local model with `STREAMCHAT_PROVIDER=local`. Runs the installed CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

QUESTION = "What is 12 * (3 + 4)?"
BACKEND_VARIABLES = (
    "STREAMCHAT_PROVIDER",
    "STREAMCHAT_MODEL",
    "STREAMCHAT_LOCAL_MODEL",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without backend settings; Ollama pointed at a port nobody listens on."""
    env = {k: v for k, v in os.environ.items() if k not in BACKEND_VARIABLES}
    env["OLLAMA_HOST"] = f"127.0.0.1:{closed_port()}"
    env.update(extra)
    return env


def cli() -> list[str]:
    """The installed `streamchat` console script (next to this interpreter), `chat` subcommand."""
    script = Path(sys.executable).with_name("streamchat")
    assert script.exists(), "install the package first: pip install -e '.[dev]'"
    return [str(script), "chat"]


async def test_with_nothing_configured_the_cli_announces_the_demo_model_and_answers_84() -> None:
    process = await asyncio.create_subprocess_exec(
        *cli(), QUESTION, env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "using the offline demo model" in err.decode().splitlines()[0]
    lines = out.decode().splitlines()
    assert lines[:3] == ["[calculate] Evaluating...", "[calculate] Done: 12 * (3 + 4) = 84", "12 * (3 + 4) = 84."]


async def test_with_provider_local_the_cli_streams_the_local_model_until_ctrl_c(gguf_path: Path) -> None:
    env = clean_env(STREAMCHAT_PROVIDER="local", STREAMCHAT_LOCAL_MODEL=str(gguf_path))
    process = await asyncio.create_subprocess_exec(
        *cli(), QUESTION, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    streamed = b""
    while len(streamed) < 40:  # the answer arrives piece by piece while the model runs
        piece = await asyncio.wait_for(process.stdout.read(64), 120)
        if not piece:
            break  # the model ended its answer early (it samples)
        streamed += piece
    if len(streamed) >= 40:
        process.send_signal(signal.SIGINT)  # Ctrl-C stops the turn
    rest, err = await asyncio.wait_for(asyncio.gather(process.stdout.read(), process.stderr.read()), 120)
    await process.wait()
    assert err.decode().splitlines()[0] == "streamchat: using local gemma-3-270m-q4_k_m.gguf (in-process llama.cpp)"
    text = (streamed + rest).decode()
    assert text.strip()
    assert "[calculate]" not in text  # the local model runs without tools
    if len(streamed) >= 40:
        assert process.returncode == 130, err.decode()
        assert text.rstrip().endswith("[stopped]")
    else:
        assert process.returncode == 0, err.decode()
