"""Text that can always be encoded: lone surrogates refused from users, repaired elsewhere.

A Python string may hold surrogate code points (U+D800–U+DFFF): JSON's `"\\ud800"`
escape decodes to one, a browser can send half of an emoji's UTF-16 pair, a tool may
return one. UTF-8 cannot encode them, so one such character in a session's history made
every later request to a backend (and every JSON answer built from it) fail.

- Text a user sends is refused with a `UsageError` before the turn starts
  (`check_message`): the user can fix it.
- Text from a backend or a tool is repaired where it enters the conversation (deltas,
  tool outcomes, history messages): each lone surrogate becomes U+FFFD, as browsers do
  when they encode such a string, and a well-formed pair becomes its character.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator

from .errors import UsageError

__all__ = ["EncodableArgs", "EncodableText", "EncodableValue", "check_message", "encodable", "encodable_value"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (and surrogate pairs joined)."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def encodable_value(value: Any) -> Any:
    """`value` with `encodable` applied to every string in it (keys and items of dicts, lists, tuples)."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {encodable_value(k): encodable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(encodable_value(v) for v in value)
    return value


def check_message(message: str) -> None:
    """Raise `UsageError` if `message` holds a surrogate code point (it cannot be encoded as UTF-8)."""
    if message.isascii() or (found := _SURROGATE.search(message)) is None:
        return
    raise UsageError(
        f"the message is not valid Unicode text: it holds the surrogate code point U+{ord(found.group()):04X} "
        f"at character {found.start()} (half of a UTF-16 pair, or a JSON \\u escape of one); send UTF-8 text"
    )


EncodableText = Annotated[str, AfterValidator(encodable)]
"""A `str` field whose lone surrogates are replaced on validation."""
EncodableValue = Annotated[Any, AfterValidator(encodable_value)]
"""A JSON-like field whose strings have their lone surrogates replaced on validation."""
EncodableArgs = Annotated[dict[str, Any], AfterValidator(encodable_value)]
"""Tool-call arguments whose strings have their lone surrogates replaced on validation."""
