"""The JSON of an event on the wire, and its SSE frame: encoded fast, byte for byte as json does.

`event_json` is exactly ``json.dumps(event.model_dump(mode="json"), separators=(",", ":"))``:
ASCII only, every non-ASCII character, DEL, control character and lone surrogate escaped.
An event whose fields all hold a str, an int or a bool (a token, a status or reasoning
line, an error notice: the events of the hot path) is written by orjson from the
model's own field values, which is the same bytes whenever orjson's output is plain
ASCII without DEL (orjson writes other characters raw, in UTF-8); otherwise (an answer
in Korean, the "Thinking…" status) field by field with json's own string escaping. Any
other event takes the generic path. `tests/test_wire_frames.py` checks the identity over
arbitrary text.

`sse_event` is one SSE frame of our protocol (see `wire`). A running turn keeps the
frames of its latest events (`service.TurnRun.frame`): each is encoded once for every
follower, and its length is what the event weighs in the followers' byte budgets.
"""

from __future__ import annotations

import json
import typing
from json.encoder import encode_basestring_ascii as _escape
from typing import Literal

import orjson
from pydantic import BaseModel

from streamchat.events import Event

__all__ = ["event_json", "sse_event"]

_Shape = tuple[tuple[str, ...], tuple[type, ...]]  # the fields' names in dump order, and the one type each holds


def _flat_shape(model: type[BaseModel]) -> _Shape | None:
    """The fields of `model` when each holds a str, an int or a bool, dumped as is; else None."""
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers or model.model_computed_fields:
        return None
    kinds: list[type] = []
    for info in model.model_fields.values():
        if info.serialization_alias is not None or info.alias is not None or info.exclude:
            return None
        annotation = info.annotation
        if typing.get_origin(annotation) is Literal and all(type(a) is str for a in typing.get_args(annotation)):
            kinds.append(str)
        elif annotation in (str, int, bool):
            kinds.append(typing.cast(type, annotation))
        else:
            return None
    return tuple(model.model_fields), tuple(kinds)


_FLAT: dict[type[BaseModel], _Shape | None] = {}


def _fast_json(event: BaseModel) -> bytes | None:
    """The event's JSON by orjson when that is json's own output byte for byte; None when it may not be."""
    cls = type(event)
    try:
        shape = _FLAT[cls]
    except KeyError:
        shape = _FLAT[cls] = _flat_shape(cls)
    if shape is None:
        return None
    values = event.__dict__
    if tuple(values) != shape[0] or tuple(map(type, values.values())) != shape[1]:
        return None  # another order, or a value the model would not hold once validated
    try:
        data = orjson.dumps(values)
    except orjson.JSONEncodeError:
        return _ascii_json(values)  # an int over 64 bits, a lone surrogate
    if not data.isascii() or b"\x7f" in data:
        return _ascii_json(values)  # json escapes these, orjson writes them raw
    return data


def _ascii_json(values: dict[str, str | int | bool]) -> bytes:
    """A flat event's JSON written field by field as json writes it (its own string escaping, C-fast).

    For the text orjson writes raw: every answer in a language other than English, DEL, lone surrogates.
    """
    fields = []
    for key, value in values.items():
        if type(value) is str:
            text = _escape(value)
        elif type(value) is bool:
            text = "true" if value else "false"
        else:
            text = int.__repr__(value)
        fields.append(f"{_escape(key)}:{text}")
    return ("{" + ",".join(fields) + "}").encode()


def event_json(event: Event) -> bytes:
    """The event's one-line ASCII JSON: ``json.dumps(event.model_dump(mode="json"), separators=(",", ":"))``."""
    data = _fast_json(event)
    if data is None:
        data = json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()
    return data


def sse_event(event: Event) -> bytes:
    """One SSE frame for `event`: ``id: <turn_id>:<seq>``, ``event: <type>``, ``data: <JSON>``, blank line."""
    # ASCII-only JSON: line breaks, control characters and even lone surrogates a model
    # may emit travel escaped, so a frame is always one valid line.
    head = f"id: {event.turn_id}:{event.seq}\nevent: {event.type}\ndata: ".encode()
    return head + event_json(event) + b"\n\n"
