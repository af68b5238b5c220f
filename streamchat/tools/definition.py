"""Turning Python functions into tools: the `tool` decorator, `Progress`, `ProgressReporter`.

A tool's JSON Schema comes from its type hints and its docstring (parameter descriptions
from the Google, NumPy or reST "Args" section); arguments are validated by pydantic before
the function runs.

Supported shapes:
- a plain function (runs in a worker thread, so it may block);
- an async function (runs on the event loop);
- a sync or async generator that yields `Progress(...)` and yields its result last;
- any of those with a parameter annotated `ProgressReporter`, which streamchat fills in
  (not part of the schema) and the tool calls to report progress;
- any of those with a parameter annotated `Settings`, which streamchat fills in with the
  calling session's settings (not part of the schema either).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, Literal, TypeAlias, get_type_hints, overload

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..errors import ToolDefinitionError
from ..providers.base import ToolDefinition
from ..settings import Settings

__all__ = ["Progress", "ProgressReporter", "Tool", "ToolKind", "format_validation_error", "tool", "toolset"]

ToolKind: TypeAlias = Literal["sync", "async", "generator", "async_generator"]


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """A progress report: yield it from a generator tool, or pass its fields to a reporter.

    Example:
        >>> from streamchat import Progress, tool
        >>> @tool
        ... def count(n: int):
        ...     '''Count to n.'''
        ...     for i in range(n):
        ...         yield Progress(f"step {i + 1}", percent=100 * (i + 1) / n)
        ...     yield n
    """

    message: str
    """What the tool is doing now."""
    stage: str | None = None
    """An optional short stage name."""
    percent: float | None = None
    """Completion from 0 to 100, when known."""


class _Held:
    """Awaitable returned by `ProgressReporter.__call__`; completes when the call may go on."""

    __slots__ = ("_wait",)

    def __init__(self, wait: Awaitable[None] | None) -> None:
        self._wait = wait

    def __await__(self) -> Generator[Any, None, None]:
        if self._wait is not None:
            yield from self._wait.__await__()


class ProgressReporter:
    """Handed to a tool that declares a parameter of this type; call it to report progress.

    In an async tool, ``await report("Downloading…", percent=40)``: the await is where a
    paused call is held. In a sync tool (run in a worker thread), ``report(...)`` blocks
    while the call is paused and raises `asyncio.CancelledError` once it is cancelled.
    """

    def __init__(self, emit: Callable[[Progress], None], loop: asyncio.AbstractEventLoop) -> None:
        self._emit = emit
        self._loop = loop
        self._running = asyncio.Event()
        self._running.set()
        self._thread_running = threading.Event()
        self._thread_running.set()
        self._cancelled = False

    def __call__(self, message: str, *, stage: str | None = None, percent: float | None = None) -> Awaitable[None]:
        """Report progress; await the result in async tools (see the class docs)."""
        progress = Progress(message, stage=stage, percent=percent)
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._emit(progress)
            return _Held(None if self._running.is_set() else self.hold())
        if self._cancelled:
            raise asyncio.CancelledError
        self._loop.call_soon_threadsafe(self._emit, progress)
        self._thread_running.wait()
        if self._cancelled:
            raise asyncio.CancelledError
        return _Held(None)

    async def hold(self) -> None:
        """Wait while the call is paused (used by the runner between generator steps)."""
        await self._running.wait()

    @property
    def paused(self) -> bool:
        """True while the call is paused."""
        return not self._running.is_set()

    def _set_paused(self, paused: bool) -> None:
        if paused:
            self._running.clear()
            self._thread_running.clear()
        else:
            self._running.set()
            self._thread_running.set()

    def _cancel(self) -> None:
        self._cancelled = True
        self._running.set()
        self._thread_running.set()


def format_validation_error(exc: ValidationError) -> str:
    """A short, model-readable description of invalid tool arguments."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)


class _ArgsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tool:
    """A function the model can call, with its name, description and argument schema.

    Create one with the `tool` decorator. Calling a `Tool` calls the original function.
    """

    pause_message = "Paused"
    """What the call reports when paused (shown on its card)."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.function = function
        self.name = name or function.__name__
        self.timeout = timeout
        if inspect.isasyncgenfunction(function):
            self.kind: ToolKind = "async_generator"
        elif inspect.isgeneratorfunction(function):
            self.kind = "generator"
        elif inspect.iscoroutinefunction(function):
            self.kind = "async"
        else:
            self.kind = "sync"
        doc = docstring_parser.parse(inspect.getdoc(function) or "")
        summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        self.description = description or summary or self.name
        param_docs = {p.arg_name: p.description or "" for p in doc.params}
        self.reporter_param: str | None = None
        """The parameter that receives a `ProgressReporter`, if any."""
        self.settings_param: str | None = None
        """The parameter that receives the session's `Settings`, if any."""
        self.args_model = self._build_args_model(function, param_docs)

    def _build_args_model(self, function: Callable[..., Any], param_docs: dict[str, str]) -> type[BaseModel]:
        try:
            hints = get_type_hints(function)
        except Exception as exc:  # unresolvable forward references, etc.
            raise ToolDefinitionError(f"tool {self.name!r}: cannot read its type hints: {exc}") from exc
        fields: dict[str, Any] = {}
        for param in inspect.signature(function).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolDefinitionError(f"tool {self.name!r}: *args and **kwargs cannot be described to a model")
            annotation = hints.get(param.name, inspect.Parameter.empty)
            if annotation is ProgressReporter:
                self.reporter_param = param.name
                continue
            if annotation is Settings:
                self.settings_param = param.name
                continue
            if annotation is inspect.Parameter.empty:
                raise ToolDefinitionError(
                    f"tool {self.name!r}: parameter {param.name!r} needs a type hint so the model knows what to send"
                )
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, Field(default, description=param_docs.get(param.name) or None))
        try:
            return create_model(f"{self.name}_args", __base__=_ArgsBase, **fields)
        except Exception as exc:
            raise ToolDefinitionError(f"tool {self.name!r}: cannot build its argument schema: {exc}") from exc

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments object."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    @property
    def definition(self) -> ToolDefinition:
        """What the model is told about this tool."""
        return ToolDefinition(name=self.name, description=self.description, parameters=self.parameters)

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate and convert arguments; raises `pydantic.ValidationError` when invalid."""
        model = self.args_model.model_validate(args)
        return {name: getattr(model, name) for name in type(model).model_fields}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name} ({self.kind})>"


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function into a tool the model can call.

    Use it bare (``@tool``) or with options (``@tool(timeout=10)``). The schema comes
    from the type hints, the description and the parameter texts from the docstring.

    Example:
        >>> from streamchat import tool
        >>> @tool
        ... def add(a: int, b: int) -> int:
        ...     '''Add two integers.
        ...
        ...     Args:
        ...         a: The first number.
        ...         b: The second number.
        ...     '''
        ...     return a + b
        >>> add.definition.parameters["required"]
        ['a', 'b']
    """

    def wrap(fn: Callable[..., Any]) -> Tool:
        if isinstance(fn, Tool):
            return fn
        return Tool(fn, name=name, description=description, timeout=timeout)

    return wrap(function) if function is not None else wrap


def toolset(tools: Iterable[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    """Index tools by name, wrapping plain functions; duplicate names are an error."""
    indexed: dict[str, Tool] = {}
    for item in tools:
        t = tool(item)
        if t.name in indexed:
            raise ToolDefinitionError(f"two tools are named {t.name!r}; give one of them another name")
        indexed[t.name] = t
    return indexed
