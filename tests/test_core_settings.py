"""`Settings`: every environment variable the README documents is read, keyword arguments win."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamchat import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
DOCUMENTED = sorted(set(re.findall(r"\b(?:STREAMCHAT|OLLAMA|OPENAI)_[A-Z_]+\b", README)))


def test_the_readme_documents_the_conventional_names() -> None:
    assert {"OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY", "STREAMCHAT_PROVIDER"} <= set(DOCUMENTED)


@pytest.mark.parametrize("variable", DOCUMENTED)
def test_every_documented_variable_is_read(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    field = Settings.model_fields.get(variable.removeprefix("STREAMCHAT_").lower())
    # a value every field takes and none has as its default: a flag, or a number, name or URL-ish string
    monkeypatch.setenv(variable, "1" if field is not None and field.annotation is bool else "4096")
    read = Settings().model_dump()
    monkeypatch.delenv(variable)
    unset = Settings().model_dump()
    changed = [name for name in read if read[name] != unset[name]]
    assert len(changed) == 1, f"{variable} sets {changed}"


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCHAT_MODEL", "from-env")
    monkeypatch.setenv("OLLAMA_HOST", "http://env:1")
    monkeypatch.setenv("STREAMCHAT_MAX_TURNS", "3")
    assert Settings().model == "from-env" and Settings().ollama_host == "http://env:1"
    given = Settings(model="given", ollama_host="http://given:2", max_turns=5)
    assert (given.model, given.ollama_host, given.max_turns) == ("given", "http://given:2", 5)


def test_only_prefixed_or_conventional_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMCHAT_DISPLAY", raising=False)
    monkeypatch.delenv("STREAMCHAT_MODEL", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")  # X11's variable, not ours
    monkeypatch.setenv("MODEL", "not-ours")
    assert (Settings().display, Settings().model) == ("auto", None)


def test_every_field_is_documented_at_runtime() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []
