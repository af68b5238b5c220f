"""The public API: every exported name imports, is documented, and `__all__` is sorted."""

from __future__ import annotations

import inspect
from pathlib import Path

import pydantic
import pytest

import streamchat
from streamchat import events

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_all_is_sorted_and_unique():
    assert streamchat.__all__ == sorted(set(streamchat.__all__))


@pytest.mark.parametrize("name", streamchat.__all__)
def test_every_public_name_imports_and_is_documented(name):
    obj = getattr(streamchat, name)
    if inspect.isclass(obj) or inspect.isfunction(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
        assert inspect.getdoc(obj), f"{name} has no docstring"
    elif hasattr(obj, "function"):  # a Tool made by @tool
        assert obj.description
    else:  # data: type aliases and the version
        assert f"`{name}`" in README or f"`streamchat.{name}`" in README, f"{name} is not described in the README"


@pytest.mark.parametrize(
    "model",
    [
        m
        for m in vars(events).values()
        if inspect.isclass(m) and issubclass(m, pydantic.BaseModel) and m.__module__ == events.__name__
    ],
    ids=lambda m: m.__name__,
)
def test_every_event_field_is_documented(model):
    for name, field in model.model_fields.items():
        if name == "type":
            continue
        assert field.description, f"{model.__name__}.{name} has no docstring"
