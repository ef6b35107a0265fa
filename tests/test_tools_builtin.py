"""The built-in tools that need no network: calculator (safe arithmetic; hostile
expressions refused by name, and quickly), current_time, and kb_search over real,
indexed knowledge bases (tests/test_web_fetch.py has web_fetch and web_search)."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from typing import Any

import pytest

from chat.agents import registry
from chat.agents.builtin.calculator import MAX_CHARS, Calculator
from chat.agents.builtin.clock import CurrentTime
from chat.agents.builtin.kb import KbSearch
from chat.agents.tools import ToolContext, ToolError, ToolOutput
from chat.knowledge import indexing
from chat.realtime.async_db import db_call
from tests.knowledge_helpers import add_document, make_base, topic_text


def context(**extra: Any) -> ToolContext:
    values: dict[str, Any] = {
        "channel_id": 1,
        "channel_name": "lobby",
        "session_id": None,
        "turn_id": 1,
        "requester_id": None,
        "author_id": None,
    }
    values.update(extra)
    return ToolContext(**values)


async def calculate(expression: str) -> str:
    output = await Calculator().run({"expression": expression}, context())
    assert output.ok
    return output.content


async def calculator_refuses(expression: str) -> str:
    started = time.monotonic()
    with pytest.raises(ToolError) as caught:
        await Calculator().run({"expression": expression}, context())
    assert time.monotonic() - started < 0.5  # refused at once, never computed
    return str(caught.value)


def test_the_registry_makes_each_of_these_tools() -> None:
    for name in ("calculator", "current_time", "web_fetch", "web_search", "kb_search"):
        tool = registry.make_builtin(name)
        assert tool.spec.name == name
        assert tool.spec.parameters["type"] == "object"
        assert tool.status and 0 < tool.timeout <= 60


# --- calculator -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 2", "4"),
        ("(17.5 * 3) / 4", "13.125"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("2 ** -2", "0.25"),
        ("-(3 - 5) * +2", "4"),
        ("0.1 + 0.2", "0.3"),
        ("sqrt(16) + abs(-3)", "7"),
        ("log(8, 2)", "3"),
        ("log10(1000)", "3"),
        ("exp(0)", "1"),
        ("sin(pi / 2)", "1"),
        ("cos(0) + tan(0)", "1"),
        ("round(2.71828, 2)", "2.72"),
        ("floor(-2.5) + ceil(2.1)", "0"),
        ("min(4, 2, 8) * max(1, 5)", "10"),
        ("e", "2.71828182845905"),
        ("2 ** 3000 // 2 ** 2999", "2"),
        ("123456789 * 987654321", "121932631112635269"),
    ],
)
async def test_arithmetic(expression: str, value: str) -> None:
    assert await calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "not allowed: the function '__import__'"),
        ("__import__('os').system('true')", "not allowed: attribute access (.)"),
        ("().__class__.__bases__[0].__subclasses__()", "not allowed: attribute access (.)"),
        ("pi.real", "not allowed: attribute access (.)"),
        ("(lambda: 1)()", "not allowed: lambda"),
        ("(1)(2)", "not allowed: calling anything but a named function"),
        ("lambda: 1", "not allowed: lambda"),
        ("open('/etc/passwd')", "not allowed: the function 'open'"),
        ("eval('1')", "not allowed: the function 'eval'"),
        ("x + 1", "not allowed: the name 'x'"),
        ("'a' * 3", "not allowed: the literal 'a'"),
        ("[1, 2][0]", "not allowed: indexing ([])"),
        ("(1, 2)", "not allowed: tuples"),
        ("[i for i in range(9)]", "not allowed: comprehensions"),
        ("1 < 2", "not allowed: comparisons"),
        ("1 if 1 else 2", "not allowed: if … else"),
        ("(y := 2)", "not allowed: :="),
        ("True + 1", "not allowed: the literal True"),
        ("2 ^ 3", "not allowed: ^ (use ** for powers)"),
        ("~1", "not allowed: ~"),
        ("1j * 2", "not allowed: complex numbers"),
        ("sqrt(x=4)", "not allowed: keyword arguments"),
        ("max(*[1, 2])", "not allowed: * unpacking"),
        ("sqrt", "sqrt is a function: call it"),
        ("import os", "expression: not valid arithmetic"),
        ("1 +", "expression: not valid arithmetic"),
        ("", "expression: empty"),
        ("1" * (MAX_CHARS + 1), f"expression: longer than {MAX_CHARS} characters"),
        ("1/0", "division by zero"),
        ("5 // 0", "division by zero"),
        ("5 % 0.0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("10 ** 10 ** 10", "the result is too large"),
        ("9 ** 9 ** 9 ** 9", "the result is too large"),
        ("2 ** 100000", "the result is too large"),
        ("(2 ** 3000) * (2 ** 3000)", "the result is too large"),
        ("10.0 ** 400", "the result is too large"),
        ("1e308 * 10", "the result is too large (overflow)"),
        ("exp(1000)", "the result is too large"),
        ("sqrt(10 ** 1000)", "the result is too large"),
        ("round(5, -10 ** 9)", "round: the digits must be a whole number"),
        ("(-8) ** 0.5", "the result is not a real number"),
        ("sqrt(-1)", "sqrt: math domain error"),
        ("log(0)", "log: math domain error"),
        ("min()", "min: "),
    ],
)
async def test_everything_else_is_refused_by_name(expression: str, message: str) -> None:
    assert (await calculator_refuses(expression)).startswith(message)


async def test_the_calculator_wants_a_string() -> None:
    with pytest.raises(ToolError, match="expression: a string is required"):
        await Calculator().run({"expression": 42}, context())
    with pytest.raises(ToolError, match="expression: a string is required"):
        await Calculator().run({}, context())
    # Deep nesting within the length cap is still just arithmetic.
    assert await calculate("-" * 400 + "1") == "1"
    assert await calculate("(" * 150 + "1" + ")" * 150) == "1"


# --- current_time ---------------------------------------------------------------------------------


async def test_current_time_in_utc_and_in_a_named_zone() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    output = await CurrentTime().run({}, context())
    stamp, _, rest = output.content.partition(" ")
    now = dt.datetime.fromisoformat(stamp)
    assert now.utcoffset() == dt.timedelta(0)
    assert before <= now <= dt.datetime.now(dt.UTC)
    assert rest.startswith(f"({now:%A}, UTC")

    output = await CurrentTime().run({"timezone": "Asia/Kolkata"}, context())
    stamp, _, rest = output.content.partition(" ")
    now = dt.datetime.fromisoformat(stamp)
    assert now.utcoffset() == zoneinfo.ZoneInfo("Asia/Kolkata").utcoffset(now.replace(tzinfo=None))
    assert rest == f"({now:%A}, Asia/Kolkata, IST)"


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", "x" * 100, "UTC\nEurope/Paris"]
)
async def test_an_unknown_time_zone_is_refused(zone: str) -> None:
    with pytest.raises(ToolError, match="timezone: "):
        await CurrentTime().run({"timezone": zone}, context())
    with pytest.raises(ToolError, match="timezone: a string is required"):
        await CurrentTime().run({"timezone": 5}, context())


# --- kb_search ------------------------------------------------------------------------------------

pytestmark_kb = pytest.mark.django_db(transaction=True)


def indexed_base(**kwargs: Any) -> Any:
    base = make_base(**kwargs)
    for names in (("try", "while", "lambda"), ("import", "with", "assert")):
        document = add_document(base, f"{'-'.join(names)}.md", topic_text(*names))
        indexing.index(str(document.pk))
    base.refresh_from_db()
    return base


async def kb_search(ids: tuple[str, ...], **arguments: Any) -> ToolOutput:
    return await KbSearch().run(arguments, context(knowledge_base_ids=ids))


@pytestmark_kb
async def test_kb_search_numbers_passages_and_gives_their_sources(channel: Any) -> None:
    base = await db_call(indexed_base)(channel=channel, name="Python reference")
    output = await kb_search(
        (str(base.pk),), query="how does the with statement use a context manager", top_k=3
    )

    assert output.ok and output.private_to is None  # a room's base: nobody's personal data
    assert output.content.startswith("[1] import-with-assert.md, with — Python reference\n")
    assert "context manager" in output.content
    assert output.sources and 1 <= len(output.sources) <= 3
    first = output.sources[0]
    assert first["n"] == 1
    assert first["kb"] == {"id": str(base.pk), "name": "Python reference"}
    assert first["document"]["name"] == "import-with-assert.md"
    assert isinstance(first["chunk"], int) and 0 < first["score"] <= 1
    assert first["snippet"] and "page" in first
    assert [source["n"] for source in output.sources] == list(range(1, len(output.sources) + 1))


@pytestmark_kb
async def test_kb_search_from_a_personal_base_is_private_to_its_owner(channel: Any, alice: Any) -> None:
    shared = await db_call(make_base)(channel=channel, name="Empty room base")
    personal = await db_call(indexed_base)(owner=alice, name="Alice's notes")
    output = await kb_search((str(shared.pk), str(personal.pk)), query="the try statement and exceptions")

    assert output.ok and output.sources
    assert {source["kb"]["name"] for source in output.sources} == {"Alice's notes"}
    assert output.private_to == alice.pk


@pytestmark_kb
async def test_kb_search_with_nothing_relevant_or_nothing_in_scope(
    channel: Any, alice: Any, settings: Any
) -> None:
    personal = await db_call(indexed_base)(owner=alice, name="Alice's diary")
    settings.KB_SCORE_THRESHOLD = 0.999
    output = await kb_search((str(personal.pk),), query="lighthouse keepers of Skerryvore")
    assert output.ok and output.sources == []
    assert output.content == "No passage in the 1 knowledge base(s) in scope is relevant to this query."
    assert output.private_to is None  # the answer names nothing of Alice's

    output = await kb_search((), query="anything")
    assert (output.ok, output.content) == (False, "no knowledge bases are in scope")
    # A base deleted since the reply began is not in scope any more.
    gone = str(personal.pk)
    await db_call(personal.delete)()
    output = await kb_search((gone, "not-a-uuid"), query="anything")
    assert (output.ok, output.content) == (False, "no knowledge bases are in scope")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "query: a non-empty string is required"),
        ({"query": "  "}, "query: a non-empty string is required"),
        ({"query": 3}, "query: a non-empty string is required"),
        ({"query": "x", "top_k": 0}, "top_k: a whole number from 1 to 20"),
        ({"query": "x", "top_k": 21}, "top_k: a whole number from 1 to 20"),
        ({"query": "x", "top_k": "5"}, "top_k: a whole number from 1 to 20"),
        ({"query": "x", "top_k": True}, "top_k: a whole number from 1 to 20"),
    ],
)
async def test_kb_search_arguments_are_checked(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError, match=message):
        await KbSearch().run(arguments, context(knowledge_base_ids=("x",)))
