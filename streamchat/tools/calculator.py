"""A safe arithmetic evaluator for the `calculate` tool.

The expression is parsed with `ast` and walked node by node: only numbers, the
arithmetic operators, parentheses, unary signs and a short list of math functions and
constants are accepted. There is no `eval`, no attribute access, no other names or
calls.

Every computation is bounded *before* it runs, because CPython cannot be interrupted
inside one big-integer operation (and a worker thread cannot be stopped at all):
- the expression's length and nesting depth are capped, so parsing and walking are cheap;
- every integer, written or computed, has at most `MAX_RESULT_BITS` bits, so `+ - / // %`
  and the math functions work on small operands;
- a product or a power is refused from its operands' sizes, so `9**9**9` or
  `(9**999)**999` never start;
- `round(x, n)` computes `10**-n` for a negative `n`, so `n` is capped
  (`MAX_ROUND_DIGITS`): `round(1, -10**1000)` is refused instead of running for ever;
- a huge integer in an error message is described by its size, never converted to text.

A refusal, a math domain error (`sqrt(-1)`, `log(0)`, `log(2, 1)`) and an overflow are
all `ToolError`s with a message that says what was wrong.
"""

from __future__ import annotations

import ast
import math
import operator
import sys
from collections.abc import Callable

from ..errors import ToolError

__all__ = ["MAX_EXPONENT", "MAX_EXPRESSION_LENGTH", "MAX_RESULT_BITS", "MAX_ROUND_DIGITS", "evaluate"]

MAX_EXPRESSION_LENGTH = 500
"""Longest expression accepted, in characters."""
MAX_RESULT_BITS = 4096
"""Largest integer accepted anywhere in a calculation, in bits (about 1233 digits)."""
MAX_EXPONENT = 100_000
"""Largest exponent (in absolute value) of a power whose base is not 0, 1 or -1."""
MAX_ROUND_DIGITS = math.ceil(MAX_RESULT_BITS * math.log10(2))
"""Largest number of digits (either sign) `round()` takes: beyond it every result is 0 or unchanged."""
_MAX_DEPTH = 50
_LOG10_2 = math.log10(2)

Number = int | float


def _round(number: Number, ndigits: Number | None = None) -> Number:
    # round(int, -n) computes 10**n before dividing by it: bound n before CPython does.
    if ndigits is None:
        return round(number)
    if not isinstance(ndigits, int):
        raise ToolError(f"round() takes a whole number of digits, not {_show(ndigits)}")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise ToolError(f"round() takes from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS} digits, not {_show(ndigits)}")
    return round(number, ndigits)


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
    "round": _round,
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
    result = _Evaluator(text).eval(tree.body, 0)
    if isinstance(result, float) and not math.isfinite(result):
        raise ToolError("the result is not a finite number")
    # The caller shows the result as text: stay within this interpreter's int→str limit.
    max_digits = sys.get_int_max_str_digits()
    if isinstance(result, int) and max_digits and _digits(result) > max_digits:
        raise ToolError(f"the result has more than {max_digits} digits")
    return result


def _check_int(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolError(f"the result is too large (more than {MAX_RESULT_BITS} bits)")
    return value


def _digits(value: int) -> int:
    """Decimal digits of `value`, estimated from its size (exact to within one)."""
    return int(value.bit_length() * _LOG10_2) + 1


def _show(value: Number) -> str:
    """A number for an error message: a huge integer is described, never converted to text."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"(an integer of about {_digits(value)} digits)"
    return str(value)


class _Evaluator:
    """Walks one parsed expression; `text` is the parsed source, quoted in error messages."""

    def __init__(self, text: str) -> None:
        self.text = text

    def eval(self, node: ast.AST, depth: int) -> Number:
        if depth > _MAX_DEPTH:
            raise ToolError("the expression is nested too deeply")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ToolError(f"only numbers are allowed, not {_shorten(repr(node.value))}")
            return _check_int(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = self.eval(node.operand, depth + 1)
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left = self.eval(node.left, depth + 1)
            right = self.eval(node.right, depth + 1)
            return _binary(node.op, left, right)
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            raise ToolError(f"unknown name {node.id!r}: only numbers, operators and {_allowed()} are allowed")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
            name = node.func.id
            if node.keywords or not 1 <= len(node.args) <= 2:
                raise ToolError(f"{name}() takes one or two numbers")
            args = [self.eval(arg, depth + 1) for arg in node.args]
            try:
                return _check_int(_FUNCTIONS[name](*args))
            except (ValueError, TypeError, ArithmeticError) as exc:  # domain, arity, overflow, log(x, 1)
                raise ToolError(f"{name}() cannot take {', '.join(map(_show, args))}: {exc}") from exc
        raise ToolError(
            f"not allowed in a calculation: {self.source(node)} (use numbers, + - * / // % **, {_allowed()})"
        )

    def source(self, node: ast.AST) -> str:
        """The quoted source of `node`, shortened (not `ast.unparse`: it recurses into deep trees)."""
        return repr(_shorten(ast.get_source_segment(self.text, node) or type(node).__name__))


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        return  # 0, 1, -1 and fractions: the result cannot grow (a float's overflow is caught)
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"the exponent {_show(exponent)} is too large")
    if exponent > 0 and isinstance(base, int) and isinstance(exponent, int):
        if exponent * math.log2(abs(base)) > MAX_RESULT_BITS:
            raise ToolError(f"the result is too large (more than {MAX_RESULT_BITS} bits)")
