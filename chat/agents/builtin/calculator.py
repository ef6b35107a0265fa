"""calculator: arithmetic a model asks for, evaluated by walking the expression's syntax
tree (``ast.parse`` only parses: no code is compiled or run). Only numbers, the four
operations with // % **, signs, parentheses, a few math functions and pi and e; anything
else is refused by name. Sizes are checked BEFORE a power is computed, so
``10**10**10`` is refused at once instead of taking the process's memory and time."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from chat.agents.tools import ToolContext, ToolError, ToolOutput, ToolSpec

MAX_CHARS = 500
# Integers up to ~1000 digits: enough for any arithmetic a conversation needs, and
# cheap (and under Python's 4300-digit limit on converting an int to text).
MAX_INT_BITS = 3400
# round(x, n): 10**abs(n) is computed, so n is bounded too.
MAX_ROUND_DIGITS = 300
TOO_LARGE = f"the result is too large (more than about {MAX_INT_BITS * 3 // 10} digits)"

Number = int | float

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "min": min,
    "max": max,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
ALLOWED = (
    "numbers, + - * / // % **, parentheses, the functions "
    + ", ".join(FUNCTIONS)
    + " and the constants pi and e"
)
# What a refused construct is called in the message.
NAMES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (.)",
    ast.Subscript: "indexing ([])",
    ast.Lambda: "lambda",
    ast.Compare: "comparisons",
    ast.BoolOp: "and / or",
    ast.IfExp: "if … else",
    ast.NamedExpr: ":=",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "strings",
    ast.Starred: "* unpacking",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}
OPERATOR_NAMES: dict[type[ast.AST], str] = {
    ast.BitXor: "^ (use ** for powers)",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}


def evaluate(expression: str) -> Number:
    """The value of ``expression``; ToolError saying what is wrong or not allowed."""
    if len(expression) > MAX_CHARS:
        raise ToolError(f"expression: longer than {MAX_CHARS} characters")
    if not expression.strip():
        raise ToolError("expression: empty")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
        raise ToolError(f"expression: not valid arithmetic ({detail})") from exc
    try:
        return _checked(_eval(tree.body))
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except OverflowError as exc:
        raise ToolError(f"the result is too large ({exc})") from exc
    except RecursionError as exc:
        raise ToolError("expression: nested too deeply") from exc


def _not_allowed(what: str) -> ToolError:
    return ToolError(f"not allowed: {what} (the calculator takes only {ALLOWED})")


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _not_allowed("complex numbers" if isinstance(value, complex) else f"the literal {value!r}")
        return _checked(value)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id in FUNCTIONS:
            raise ToolError(f"{node.id} is a function: call it, e.g. {node.id}(2)")
        raise _not_allowed(f"the name {node.id!r}")
    if isinstance(node, ast.UnaryOp):
        unary = UNARY.get(type(node.op))
        if unary is None:
            raise _not_allowed(OPERATOR_NAMES.get(type(node.op), type(node.op).__name__))
        return _checked(unary(_eval(node.operand)))
    if isinstance(node, ast.BinOp):
        binary = BINARY.get(type(node.op))
        if binary is None:
            raise _not_allowed(OPERATOR_NAMES.get(type(node.op), type(node.op).__name__))
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(binary(left, right))
    if isinstance(node, ast.Call):
        return _call(node)
    raise _not_allowed(NAMES.get(type(node), type(node).__name__))


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name):
        raise _not_allowed(NAMES.get(type(node.func), "calling anything but a named function"))
    name = node.func.id
    function = FUNCTIONS.get(name)
    if function is None:
        raise _not_allowed(f"the function {name!r}")
    if node.keywords:
        raise _not_allowed(f"keyword arguments ({name}(…=…))")
    args = [_eval(arg) for arg in node.args]
    if name == "round" and len(args) == 2:
        digits = args[1]
        if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
            raise ToolError(f"round: the digits must be a whole number within ±{MAX_ROUND_DIGITS}")
    try:
        return _checked(function(*args))
    except (TypeError, ValueError) as exc:
        raise ToolError(f"{name}: {exc}") from exc


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power whose integer result would pass MAX_INT_BITS, before computing it."""
    if not (isinstance(base, int) and isinstance(exponent, int) and exponent > 1 and abs(base) > 1):
        return
    if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
        raise ToolError(TOO_LARGE)


def _checked(value: object) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        # (-8) ** 0.5 is a complex number
        raise ToolError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(TOO_LARGE)
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(
            "the result is too large (overflow)" if math.isinf(value) else "the result is undefined"
        )
    return value


def format_number(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return format(value, ".15g")


class Calculator:
    spec = ToolSpec(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly: numbers, + - * / // % ** and parentheses, "
            "sqrt, log (natural, or log(x, base)), log10, exp, sin, cos, tan (radians), abs, round, "
            "floor, ceil, min, max, and the constants pi and e."
        ),
        parameters={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "description": "e.g. (17.5 * 3) / 4 + sqrt(2)",
                    "maxLength": MAX_CHARS,
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
    )
    status = "calculating…"
    timeout = 5.0

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        expression = arguments.get("expression")
        if not isinstance(expression, str):
            raise ToolError("expression: a string is required")
        return ToolOutput(ok=True, content=format_number(evaluate(expression)))
