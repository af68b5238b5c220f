"""The notebook surface: `chat()`, `achat()`, `ChatView`, `ChatWidget` and the `%%chat` magic."""

from __future__ import annotations

from .chat import achat, chat, default_session, new_session
from .view import ChatView, ToolCard
from .widget import ChatWidget

__all__ = ["ChatView", "ChatWidget", "ToolCard", "achat", "chat", "default_session", "new_session"]
