"""Native tool calling in both wire formats (OpenAI-compatible over httpx, Anthropic through
its SDK), against real HTTP servers: the tools and the rounds as each server receives
them, the streamed calls as the providers hand them over, and a hostile server's shapes
as ProviderError."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chat.agents.tools import ToolSpec
from chat.generation.prompt import BuiltPrompt
from chat.generation.providers import make_provider
from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ProviderConfig,
    ProviderError,
    ToolCall,
    ToolRound,
)
from tests.fake_models import FakeModelServer
from tests.test_openai_stream_shapes import RawServer, sse

PARAMS = {"max_tokens": 64, "temperature": 0.5, "top_p": 1.0, "top_k": 0, "repeat_penalty": 1.0}
FLAVOURS = ["openai", "anthropic"]

CALCULATOR = ToolSpec(
    name="calculator",
    description="Arithmetic.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
CLOCK = ToolSpec(
    name="current_time",
    description="The time now.",
    parameters={"type": "object", "properties": {"timezone": {"type": "string"}}},
)


@pytest.fixture(params=FLAVOURS)
def server(request):
    server = FakeModelServer(request.param).start()
    yield server
    server.stop()


def provider_for(base_url: str, flavour: str):
    if flavour == "anthropic":
        return make_provider(
            ProviderConfig(name="claude", kind="anthropic", base_url=base_url.removesuffix("/v1"))
        )
    return make_provider(ProviderConfig(name="llama", kind="openai_compat", base_url=base_url))


def request_for(
    *,
    tools: list[ToolSpec] | None = None,
    rounds: list[ToolRound] | None = None,
    mode: str = "chat",
    params: dict[str, Any] | None = None,
) -> GenerationRequest:
    built = (
        BuiltPrompt(mode="completion", prompt="Q: 2+2?\nA:")
        if mode == "completion"
        else BuiltPrompt(
            mode="chat", system="Be brief.", messages=[{"role": "user", "content": "What is 2+2?"}]
        )
    )
    return GenerationRequest(
        built=built,
        model="m",
        params={**PARAMS, **(params or {})},
        tools=list(tools or []),
        rounds=list(rounds or []),
    )


def run(base_url: str, flavour: str, request: GenerationRequest) -> list[Delta | Finish]:
    provider = provider_for(base_url, flavour)

    async def read() -> list[Delta | Finish]:
        return [item async for item in provider.stream(request)]

    return asyncio.run(read())


def calls_of(items: list[Delta | Finish]) -> dict[int, dict[str, str]]:
    """The streamed calls put together as the tool loop does: by index, first id and name,
    arguments joined."""
    calls: dict[int, dict[str, str]] = {}
    for item in items:
        for piece in getattr(item, "tool_calls", []):
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = call["id"] or piece.id
            call["name"] = call["name"] or piece.name
            call["arguments"] += piece.arguments
    return calls


def text_of(items: list[Delta | Finish]) -> str:
    return "".join(item.text for item in items if isinstance(item, Delta))


def finish_of(items: list[Delta | Finish]) -> Finish:
    assert isinstance(items[-1], Finish)
    return items[-1]


def test_the_tools_are_sent_in_each_formats_shape(server):
    run(server.base_url, server.flavour, request_for(tools=[CALCULATOR, CLOCK]))
    sent = server.requests[0]["tools"]
    if server.flavour == "anthropic":
        assert sent == [
            {"name": "calculator", "description": "Arithmetic.", "input_schema": CALCULATOR.parameters},
            {"name": "current_time", "description": "The time now.", "input_schema": CLOCK.parameters},
        ]
    else:
        assert sent == [
            {
                "type": "function",
                "function": {
                    "name": "calculator",
                    "description": "Arithmetic.",
                    "parameters": CALCULATOR.parameters,
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "current_time",
                    "description": "The time now.",
                    "parameters": CLOCK.parameters,
                },
            },
        ]


def test_a_request_without_tools_sends_none(server):
    items = run(server.base_url, server.flavour, request_for())
    assert "tools" not in server.requests[0]
    assert text_of(items) == "Hello, world." and finish_of(items).reason == "stop"


def test_a_call_whose_arguments_come_in_fragments_is_put_back_together(server):
    arguments = json.dumps({"expression": "(2 + 2) * 3 - 1 / 7"})
    server.behaviour.tool_calls = [[{"id": "call_1", "name": "calculator", "arguments": arguments}]]
    server.behaviour.tool_fragment = 3
    items = run(server.base_url, server.flavour, request_for(tools=[CALCULATOR]))
    fragments = [p for item in items for p in getattr(item, "tool_calls", []) if p.arguments]
    assert len(fragments) == -(-len(arguments) // 3) > 5  # really in pieces
    (call,) = calls_of(items).values()
    assert call["id"] == "call_1" and call["name"] == "calculator"
    assert json.loads(call["arguments"]) == {"expression": "(2 + 2) * 3 - 1 / 7"}
    assert text_of(items) == ""
    assert finish_of(items).reason == "tool_calls"


def test_two_parallel_calls_interleaved_are_told_apart_by_index(server):
    server.behaviour.tool_calls = [
        [
            {"id": "call_a", "name": "calculator", "arguments": json.dumps({"expression": "1+1"})},
            {"id": "call_b", "name": "current_time", "arguments": json.dumps({"timezone": "Europe/Paris"})},
        ]
    ]
    server.behaviour.tool_fragment = 4
    server.behaviour.tool_interleave = True
    items = run(server.base_url, server.flavour, request_for(tools=[CALCULATOR, CLOCK]))
    order = [p.index for item in items for p in getattr(item, "tool_calls", [])]
    assert order[:4] == [order[0], order[1]] * 2 and order[0] != order[1]  # really alternating
    calls = calls_of(items)
    assert len(calls) == 2
    first, second = (calls[i] for i in sorted(calls))
    assert (first["id"], first["name"], json.loads(first["arguments"])) == (
        "call_a",
        "calculator",
        {"expression": "1+1"},
    )
    assert (second["id"], second["name"], json.loads(second["arguments"])) == (
        "call_b",
        "current_time",
        {"timezone": "Europe/Paris"},
    )
    assert finish_of(items).reason == "tool_calls"


def test_text_before_a_call_comes_first(server):
    server.behaviour.tool_text = ["Let me ", "compute."]
    server.behaviour.tool_calls = [
        [{"id": "call_1", "name": "calculator", "arguments": '{"expression": "2+2"}'}]
    ]
    items = run(server.base_url, server.flavour, request_for(tools=[CALCULATOR]))
    kinds = ["text" if getattr(i, "text", "") else "call" for i in items if isinstance(i, Delta)]
    assert kinds == ["text", "text", "call", "call"]
    assert text_of(items) == "Let me compute."
    assert [c["name"] for c in calls_of(items).values()] == ["calculator"]
    assert finish_of(items).reason == "tool_calls"


ROUNDS = [
    ToolRound(
        text="Let me check.",
        calls=(
            ToolCall(id="call_1", name="calculator", arguments={"expression": "2+2"}),
            ToolCall(id="call_2", name="current_time", arguments={"timezone": "Mars/Olympus"}),
        ),
        results=((True, "4"), (False, "unknown time zone: Mars/Olympus")),
    ),
    ToolRound(
        text="",
        calls=(ToolCall(id="call_3", name="calculator", arguments={"expression": "4*2"}),),
        results=((True, "8"),),
    ),
]


def test_rounds_are_sent_after_the_prompt_as_the_openai_format_has_them():
    server = FakeModelServer("openai").start()
    try:
        server.behaviour.tool_calls = [[{"id": "call_1", "name": "calculator", "arguments": "{}"}]]
        run(server.base_url, "openai", request_for(tools=[CALCULATOR]))
        items = run(server.base_url, "openai", request_for(tools=[CALCULATOR, CLOCK], rounds=ROUNDS))
    finally:
        server.stop()
    assert text_of(items) == "Hello, world." and finish_of(items).reason == "stop"  # beyond the script
    assert server.requests[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression":"2+2"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "current_time", "arguments": '{"timezone":"Mars/Olympus"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: unknown time zone: Mars/Olympus"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_3",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression":"4*2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": "8"},
    ]


def test_rounds_are_sent_after_the_prompt_as_the_messages_api_has_them():
    server = FakeModelServer("anthropic").start()
    try:
        items = run(server.base_url, "anthropic", request_for(tools=[CALCULATOR, CLOCK], rounds=ROUNDS))
    finally:
        server.stop()
    assert text_of(items) == "Hello, world." and finish_of(items).reason == "stop"
    body = server.requests[0]
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "calculator", "input": {"expression": "2+2"}},
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "current_time",
                    "input": {"timezone": "Mars/Olympus"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "4", "is_error": False},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": "unknown time zone: Mars/Olympus",
                    "is_error": True,
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_3", "name": "calculator", "input": {"expression": "4*2"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_3", "content": "8", "is_error": False}],
        },
    ]


def test_anthropic_does_not_think_when_tools_are_offered():
    """Thinking would need each round's signed thinking blocks sent back, and cannot be
    switched off in the middle of a tool loop: a request offering tools goes without
    it; one without tools still thinks."""
    server = FakeModelServer("anthropic").start()
    try:
        run(server.base_url, "anthropic", request_for(tools=[CALCULATOR], params={"thinking": "low"}))
        run(
            server.base_url,
            "anthropic",
            request_for(tools=[CALCULATOR], rounds=ROUNDS, params={"thinking": "low"}),
        )
        run(server.base_url, "anthropic", request_for(params={"thinking": "low"}))
    finally:
        server.stop()
    first, second, plain = server.requests
    assert "thinking" not in first and first["max_tokens"] == 64
    assert "thinking" not in second and second["max_tokens"] == 64
    assert (
        plain["thinking"] == {"type": "enabled", "budget_tokens": 1024} and plain["max_tokens"] == 64 + 1024
    )


def test_completion_mode_sends_no_tools_and_no_rounds():
    server = FakeModelServer("openai").start()
    try:
        server.behaviour.tool_calls = [[{"id": "call_1", "name": "calculator", "arguments": "{}"}]]
        items = run(
            server.base_url, "openai", request_for(tools=[CALCULATOR], rounds=ROUNDS, mode="completion")
        )
    finally:
        server.stop()
    assert server.paths == ["/v1/completions"]
    assert "tools" not in server.requests[0] and "messages" not in server.requests[0]
    assert text_of(items) == "Hello, world." and calls_of(items) == {}


# --- what an OpenAI-compatible server may send that the format does not allow, or leaves out


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def openai_calls(*pieces: Any) -> str:
    return openai_chunk({"tool_calls": list(pieces)})


END = openai_chunk({}, "tool_calls")
GOOD_START = {"index": 0, "id": "c1", "type": "function", "function": {"name": "calculator", "arguments": ""}}

OPENAI_MALFORMED = {
    "tool-calls-not-a-list": openai_chunk({"tool_calls": {"index": 0}}),
    "tool-call-not-an-object": openai_calls("call"),
    "index-a-string": openai_calls({**GOOD_START, "index": "0"}),
    "index-a-float": openai_calls({**GOOD_START, "index": 0.5}),
    "index-a-bool": openai_calls({**GOOD_START, "index": True}),
    "index-negative": openai_calls({**GOOD_START, "index": -1}),
    "function-not-an-object": openai_calls({**GOOD_START, "function": "calculator"}),
    "arguments-an-object": openai_calls({"index": 0, "function": {"arguments": {"expression": "2"}}}),
    "arguments-a-number": openai_calls({"index": 0, "function": {"arguments": 2}}),
    "name-a-list": openai_calls({**GOOD_START, "function": {"name": ["calculator"]}}),
    "id-a-number": openai_calls({**GOOD_START, "id": 7}),
}


@pytest.mark.parametrize("case", sorted(OPENAI_MALFORMED))
def test_malformed_openai_tool_calls_are_a_provider_error(case):
    server = RawServer(sse(openai_calls(GOOD_START), OPENAI_MALFORMED[case], END, "[DONE]"), {})
    try:
        with pytest.raises(ProviderError, match="the stream sent"):
            run(server.base_url, "openai", request_for(tools=[CALCULATOR]))
    finally:
        server.stop()


def test_openai_calls_without_an_index_are_told_apart_by_id():
    """Some servers leave the index out: a piece with a new id starts a call, one without
    (or with the same id) continues the latest."""
    body = sse(
        openai_calls({"id": "c1", "function": {"name": "calculator", "arguments": '{"expression"'}}),
        openai_calls({"function": {"arguments": ': "1+1"'}}),
        openai_calls({"id": "c1", "function": {"arguments": "}"}}),  # the id again: the same call
        openai_calls({"id": "c2", "function": {"name": "current_time", "arguments": "{}"}}),
        END,
        "[DONE]",
    )
    server = RawServer(body, {})
    try:
        items = run(server.base_url, "openai", request_for(tools=[CALCULATOR, CLOCK]))
    finally:
        server.stop()
    assert calls_of(items) == {
        0: {"id": "c1", "name": "calculator", "arguments": '{"expression": "1+1"}'},
        1: {"id": "c2", "name": "current_time", "arguments": "{}"},
    }


@pytest.mark.parametrize("reason", ["stop", "function_call"])
def test_a_reply_that_made_calls_finishes_as_tool_calls(reason):
    """Some servers end a reply that called tools with "stop"; legacy function calling
    ends with "function_call"."""
    body = sse(openai_calls({**GOOD_START, "function": {"name": "calculator", "arguments": "{}"}}))
    body += sse(openai_chunk({}, reason), "[DONE]")
    server = RawServer(body, {})
    try:
        items = run(server.base_url, "openai", request_for(tools=[CALCULATOR]))
    finally:
        server.stop()
    assert finish_of(items).reason == "tool_calls"


# --- and what an Anthropic-compatible server may send wrong


def anthropic_events(*events: dict[str, Any]) -> bytes:
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "m",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    events = (
        {"type": "message_start", "message": message},
        *events,
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"},
    )
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {}}
PIECE = {"type": "input_json_delta", "partial_json": "{}"}

ANTHROPIC_MALFORMED: dict[str, list[dict[str, Any]]] = {
    # (the SDK turns a numeric string such as "0" into the number: not a case)
    "start-index-a-word": [{"type": "content_block_start", "index": "zero", "content_block": TOOL_USE}],
    "start-index-missing": [{"type": "content_block_start", "content_block": TOOL_USE}],
    "tool-use-without-id": [
        {"type": "content_block_start", "index": 0, "content_block": {**TOOL_USE, "id": None}},
    ],
    "tool-use-id-empty": [
        {"type": "content_block_start", "index": 0, "content_block": {**TOOL_USE, "id": ""}},
    ],
    "tool-use-name-a-number": [
        {"type": "content_block_start", "index": 0, "content_block": {**TOOL_USE, "name": 5}},
    ],
    "delta-index-a-float": [
        {"type": "content_block_start", "index": 0, "content_block": TOOL_USE},
        {"type": "content_block_delta", "index": 0.5, "delta": PIECE},
    ],
    "partial-json-an-object": [
        {"type": "content_block_start", "index": 0, "content_block": TOOL_USE},
        {"type": "content_block_delta", "index": 0, "delta": {**PIECE, "partial_json": {"a": 1}}},
    ],
    "partial-json-missing": [
        {"type": "content_block_start", "index": 0, "content_block": TOOL_USE},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta"}},
    ],
}


@pytest.mark.parametrize("case", sorted(ANTHROPIC_MALFORMED))
def test_malformed_anthropic_tool_use_is_a_provider_error(case):
    server = RawServer(anthropic_events(*ANTHROPIC_MALFORMED[case]), {})
    try:
        with pytest.raises(ProviderError, match="the stream sent"):
            run(server.base_url, "anthropic", request_for(tools=[CALCULATOR]))
    finally:
        server.stop()


def test_a_well_formed_raw_anthropic_stream_reads_as_a_call():
    """The control for the cases above: the same events, well formed."""
    events = [
        {"type": "content_block_start", "index": 0, "content_block": TOOL_USE},
        {"type": "content_block_delta", "index": 0, "delta": {**PIECE, "partial_json": '{"expression": '}},
        {"type": "content_block_delta", "index": 0, "delta": {**PIECE, "partial_json": '"2"}'}},
        {"type": "content_block_stop", "index": 0},
    ]
    server = RawServer(anthropic_events(*events), {})
    try:
        items = run(server.base_url, "anthropic", request_for(tools=[CALCULATOR]))
    finally:
        server.stop()
    assert calls_of(items) == {0: {"id": "toolu_1", "name": "calculator", "arguments": '{"expression": "2"}'}}
    assert finish_of(items).reason == "tool_calls"
