"""A safe arithmetic evaluator for the `calculate` tool.

The expression is parsed with `ast` and walked node by node: only numbers, the
arithmetic operators, parentheses, unary signs and a short list of math functions and
constants are accepted. There is no `eval`, no attribute access, no other names or
calls. Powers and products are checked *before* they are computed, so `9**9**9` or
`(9**999)**999` are refused in microseconds instead of eating the machine.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from ..errors import ToolError

__all__ = ["MAX_EXPRESSION_LENGTH", "MAX_RESULT_BITS", "evaluate"]

MAX_EXPRESSION_LENGTH = 500
"""Longest expression accepted, in characters."""
MAX_RESULT_BITS = 4096
"""Largest integer accepted anywhere in a calculation, in bits (about 1233 digits)."""
_MAX_DEPTH = 50

Number = int | float

_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_SYMBOLS = str.maketrans({"×": "*", "÷": "/", "−": "-", "^": "**"})


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression; raises `ToolError` with a clear message if refused.

    Example:
        >>> evaluate("12 * (3 + 4)")
        84
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    text = expression.translate(_SYMBOLS).strip()
    if not text:
        raise ToolError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from exc
    except (RecursionError, MemoryError) as exc:
        raise ToolError("the expression is nested too deeply") from exc
    result = _eval(tree.body, 0)
    if isinstance(result, float) and not math.isfinite(result):
        raise ToolError("the result is not a finite number")
    return result


def _check_int(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolError(f"the result is too large (more than {MAX_RESULT_BITS} bits)")
    return value


def _eval(node: ast.AST, depth: int) -> Number:
    if depth > _MAX_DEPTH:
        raise ToolError("the expression is nested too deeply")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _check_int(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand, depth + 1)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _eval(node.left, depth + 1)
        right = _eval(node.right, depth + 1)
        return _binary(node.op, left, right)
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}: only numbers, operators and {_allowed()} are allowed")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not 1 <= len(node.args) <= 2:
            raise ToolError(f"{node.func.id}() takes one or two numbers")
        args = [_eval(arg, depth + 1) for arg in node.args]
        try:
            return _check_int(_FUNCTIONS[node.func.id](*args))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ToolError(f"{node.func.id}() cannot take {', '.join(map(str, args))}: {exc}") from exc
    raise ToolError(f"not allowed in a calculation: {ast.unparse(node)!r} (use numbers, + - * / // % **, {_allowed()})")


def _allowed() -> str:
    return ", ".join([*(f"{f}()" for f in _FUNCTIONS), *_CONSTANTS])


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(op, ast.Pow):
        _check_power(left, right)
    elif isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_RESULT_BITS + 1:
            raise ToolError(f"the result is too large (more than {MAX_RESULT_BITS} bits)")
    try:
        result = _BINARY[type(op)](left, right)
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except OverflowError as exc:
        raise ToolError("the result is too large") from exc
    if isinstance(result, complex):
        raise ToolError("the result is not a real number")
    return _check_int(result)


def _check_power(base: Number, exponent: Number) -> None:
    if abs(base) <= 1:
        return
    if abs(exponent) > 100_000:
        raise ToolError(f"the exponent {exponent} is too large")
    if exponent > 0 and isinstance(base, int) and isinstance(exponent, int):
        if exponent * math.log2(abs(base)) > MAX_RESULT_BITS:
            raise ToolError(f"the result is too large (more than {MAX_RESULT_BITS} bits)")
