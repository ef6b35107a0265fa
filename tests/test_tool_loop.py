"""The tool loop (issue 17): model -> calls -> results -> model, in both wire formats,
against real HTTP model servers that stream tool calls (split arguments, parallel
calls); steps saved on the turn and streamed in order; approvals; limits; interrupt."""

from __future__ import annotations

import json
import re
from typing import Any, cast

import pytest
from django.test import override_settings

from chat.errors import ServiceError
from chat.generation import engine
from chat.models import Agent, Membership, Turn
from chat.services import decide_tool_call, post_message
from tests.conftest import add_provider, channel_events, use_provider, wait_for, wait_for_done

pytestmark = pytest.mark.django_db(transaction=True)


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": json.dumps(arguments)}


def use_tools(
    channel, server, *tools: str, approval: tuple[str, ...] = (), kind: str = "openai_compat"
) -> None:
    add_provider("tooly", server.base_url, kind=kind)
    use_provider(channel, "tooly")
    channel.tools = list(tools)
    channel.tools_requiring_approval = list(approval)
    channel.save(update_fields=["tools", "tools_requiring_approval"])


def bot(channel) -> Turn:
    return cast(Turn, Turn.objects.filter(session__channel=channel, role="bot").order_by("-id").first())


def tool_messages(body: dict[str, Any], flavour: str) -> list[Any]:
    """The results a request sent back to the model, in the wire format's shape."""
    if flavour == "openai":
        return [m["content"] for m in body["messages"] if m["role"] == "tool"]
    return [
        block["content"]
        for m in body["messages"]
        if m["role"] == "user" and isinstance(m["content"], list)
        for block in m["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]


@pytest.fixture(params=["openai", "anthropic"])
def model(request, openai_server, anthropic_server):
    return (openai_server, "openai_compat") if request.param == "openai" else (anthropic_server, "anthropic")


def test_a_call_is_run_and_its_result_goes_back_to_the_model(channel, alice, model):
    server, kind = model
    server.behaviour.tool_calls = [[call("c1", "calculator", expression="6*7")]]
    server.behaviour.tool_fragment = 3
    server.behaviour.tokens = ["The answer", " is 42."]
    use_tools(channel, server, "calculator", kind=kind)
    post_message(channel=channel, user=alice, text="What is 6*7?")
    events = wait_for_done(channel)
    turn = bot(channel)
    assert turn.finish_reason == "stop" and turn.text == "The answer is 42."
    [step] = turn.steps
    assert step["name"] == "calculator" and step["arguments"] == {"expression": "6*7"}
    assert step["status"] == "ok" and step["ok"] is True and step["content"].strip() == "42"
    assert step["text_offset"] == 0 and step["round"] == 1
    assert turn.timings["tool_rounds"] == 1
    # What the room saw, in order: the arguments as they streamed, the whole call, what
    # it is doing, its result, then the answer's tokens.
    kinds = [e["type"] for e in events if e["type"] not in ("presence",)]
    first_token = kinds.index("token")
    assert kinds.index("tool_result") < first_token
    deltas = [e for e in events if e["type"] == "tool_call" and "arguments_delta" in e]
    assert json.loads("".join(e["arguments_delta"] for e in deltas)) == {"expression": "6*7"}
    whole = [e for e in events if e["type"] == "tool_call" and "arguments" in e]
    assert whole[0]["call_id"] == step["call_id"] and whole[0]["status"] == "running"
    assert any(e["type"] == "status" and e["turn_id"] == turn.pk for e in events)
    [result] = [e for e in events if e["type"] == "tool_result"]
    assert result["ok"] is True and result["content"].strip() == "42"
    # The second request carried the call and its result in the provider's format.
    assert len(server.requests) == 2
    flavour = "openai" if kind == "openai_compat" else "anthropic"
    assert [str(c).strip() for c in tool_messages(server.requests[1], flavour)] == ["42"]
    # The final turn event carries the steps, as history will.
    final = [e for e in events if e["type"] == "turn"][-1]
    assert final["steps"][0]["content"].strip() == "42"


def test_parallel_calls_run_together_and_come_back_in_order(channel, alice, model):
    server, kind = model
    server.behaviour.tool_calls = [
        [call("a", "calculator", expression="2**10"), call("b", "current_time", timezone="Europe/Paris")]
    ]
    server.behaviour.tool_fragment = 3
    server.behaviour.tool_interleave = True
    use_tools(channel, server, "calculator", "current_time", kind=kind)
    post_message(channel=channel, user=alice, text="go")
    wait_for_done(channel)
    steps = bot(channel).steps
    assert [s["name"] for s in steps] == ["calculator", "current_time"]
    assert steps[0]["content"].strip() == "1024"
    assert (steps[1]["ok"] is True and "+01:00" in steps[1]["content"]) or "+02:00" in steps[1]["content"]
    flavour = "openai" if kind == "openai_compat" else "anthropic"
    results = tool_messages(server.requests[1], flavour)
    assert len(results) == 2 and str(results[0]).strip() == "1024"


def test_bad_calls_go_back_to_the_model_as_errors_never_as_success(channel, alice, openai_server):
    openai_server.behaviour.tool_calls = [
        [
            call("u", "no_such_tool"),
            {"id": "j", "name": "calculator", "arguments": "{not json"},
            call("z", "calculator", expression="1/0"),
            call("w", "calculator", expression="__import__('os')"),
        ]
    ]
    use_tools(channel, openai_server, "calculator")
    post_message(channel=channel, user=alice, text="go")
    wait_for_done(channel)
    steps = bot(channel).steps
    assert [s["status"] for s in steps] == ["error"] * 4
    assert all(s["ok"] is False and s["content"].startswith("Error:") for s in steps)
    assert "no tool named" in steps[0]["content"]
    assert "not valid JSON" in steps[1]["content"]
    sent = tool_messages(openai_server.requests[1], "openai")
    assert len(sent) == 4 and all("Error" in str(c) for c in sent)


@override_settings(MAX_TOOL_ROUNDS=2)
def test_the_loop_stops_after_max_tool_rounds(channel, alice, openai_server):
    openai_server.behaviour.tool_calls = [
        [call(f"r{i}", "calculator", expression=f"{i}+1")] for i in range(5)
    ]
    use_tools(channel, openai_server, "calculator")
    post_message(channel=channel, user=alice, text="loop forever")
    events = wait_for_done(channel)
    turn = bot(channel)
    assert len(openai_server.requests) == 3  # two rounds run, the third's calls refused
    assert [s["status"] for s in turn.steps] == ["ok", "ok", "error"]
    assert "limit of 2 tool rounds" in turn.steps[2]["content"]
    assert turn.truncated is True and turn.finish_reason == "stop"
    assert any(e["type"] == "status" and "limit" in e["text"] for e in events)


def test_completion_mode_sends_no_tools(channel, alice, openai_server):
    use_tools(channel, openai_server, "calculator")
    channel.mode = "completion"
    channel.save(update_fields=["mode"])
    post_message(channel=channel, user=alice, text="go")
    wait_for_done(channel)
    assert "tools" not in openai_server.requests[0]
    assert bot(channel).steps == []


def test_a_channel_without_tools_sends_none(channel, alice, openai_server):
    add_provider("plain", openai_server.base_url)
    use_provider(channel, "plain")
    post_message(channel=channel, user=alice, text="go")
    wait_for_done(channel)
    assert "tools" not in openai_server.requests[0]


def test_unavailable_tools_are_said_and_left_out(channel, alice, openai_server):
    use_tools(channel, openai_server, "calculator", "mcp:nowhere/thing")
    post_message(channel=channel, user=alice, text="go")
    events = wait_for_done(channel)
    names = [t["function"]["name"] for t in openai_server.requests[0]["tools"]]
    assert names == ["calculator"]
    assert any(e["type"] == "status" and "mcp:nowhere/thing" in e["text"] for e in events)


# --- approval -----------------------------------------------------------------------


def awaiting(channel) -> dict[str, Any]:
    def found():
        turn = bot(channel)
        return next((s for s in (turn.steps if turn else []) if s["status"] == "awaiting_approval"), None)

    return wait_for(found, timeout=10)


def test_a_call_needing_approval_waits_for_the_author(channel, alice, bob, openai_server):
    openai_server.behaviour.tool_calls = [[call("c1", "calculator", expression="3*3")]]
    use_tools(channel, openai_server, "calculator", approval=("calculator",))
    post_message(channel=channel, user=bob, text="compute")
    step = awaiting(channel)
    wait_for(
        lambda: any(e["type"] == "tool_approval" and e["call_id"] == "c1" for e in channel_events(channel))
    )
    assert len(openai_server.requests) == 1  # the model waits with the call
    with pytest.raises(ServiceError) as bad:
        decide_tool_call(channel=channel, user=bob, call_id="nope", approve=True)
    assert bad.value.code == "not_found"
    decide_tool_call(channel=channel, user=bob, call_id=step["call_id"], approve=True)
    wait_for_done(channel)
    [done] = bot(channel).steps
    assert done["status"] == "ok" and done["approved_by"] == "bob" and done["content"].strip() == "9"


def test_a_denied_call_goes_back_to_the_model_as_denied(channel, alice, bob, openai_server):
    openai_server.behaviour.tool_calls = [[call("c1", "calculator", expression="3*3")]]
    use_tools(channel, openai_server, "calculator", approval=("calculator",))
    post_message(channel=channel, user=bob, text="compute")
    step = awaiting(channel)
    decide_tool_call(channel=channel, user=alice, call_id=step["call_id"], approve=False)  # the owner
    wait_for_done(channel)
    [done] = bot(channel).steps
    assert done["status"] == "denied" and done["ok"] is False and "denied by alice" in done["content"]
    assert "denied by alice" in str(tool_messages(openai_server.requests[1], "openai")[0])


def test_only_the_author_or_the_owner_may_approve(channel, alice, bob, carol, openai_server):
    Membership.objects.create(user=carol, channel=channel)
    openai_server.behaviour.tool_calls = [[call("c1", "calculator", expression="1+1")]]
    use_tools(channel, openai_server, "calculator", approval=("calculator",))
    post_message(channel=channel, user=bob, text="compute")
    step = awaiting(channel)
    with pytest.raises(ServiceError) as refused:
        decide_tool_call(channel=channel, user=carol, call_id=step["call_id"], approve=True)
    assert refused.value.code == "forbidden"
    engine.interrupt(channel.pk)
    wait_for_done(channel)
    [done] = bot(channel).steps
    assert done["status"] == "interrupted"  # interrupt reaches a reply waiting for approval


@override_settings(TOOL_APPROVAL_TIMEOUT=0.5)
def test_a_call_nobody_approves_is_denied_in_time(channel, alice, openai_server):
    openai_server.behaviour.tool_calls = [[call("c1", "calculator", expression="1+1")]]
    use_tools(channel, openai_server, "calculator", approval=("calculator",))
    post_message(channel=channel, user=alice, text="compute")
    wait_for_done(channel)
    [done] = bot(channel).steps
    assert done["status"] == "denied" and "not approved in time" in done["content"]


def test_an_agent_named_by_a_member_keeps_the_rooms_approvals(channel, alice, bob, openai_server):
    """The owner requires approval for a tool: a member naming an agent that has the tool
    (with no approval of its own) still waits for it — the room's rules hold for every
    tool run in it."""
    openai_server.behaviour.tool_calls = [[call("c1", "calculator", expression="3*3")]]
    use_tools(channel, openai_server, "calculator", approval=("calculator",))
    Agent.objects.create(name="free", tools=["calculator"], tools_requiring_approval=[])
    channel.agent_choice = "members"
    channel.save(update_fields=["agent_choice"])
    post_message(channel=channel, user=bob, text="compute", agent="free")
    step = awaiting(channel)
    assert step["name"] == "calculator" and len(openai_server.requests) == 1
    decide_tool_call(channel=channel, user=bob, call_id=step["call_id"], approve=True)
    wait_for_done(channel)
    assert bot(channel).steps[0]["status"] == "ok"


# --- the context window -------------------------------------------------------------


def long_calls(rounds: int, size: int) -> list[list[dict[str, Any]]]:
    """Calls whose arguments are ``size`` characters: each round adds that to the prompt."""
    return [[call(f"c{n}", "calculator", expression="1+" * (size // 2) + "1")] for n in range(rounds)]


def fill_history(channel, user, turns: int, size: int) -> None:
    from chat.services import inject

    for n in range(turns):
        inject(channel=channel, user=user, role="user", text=f"old {n} " + "x" * size)


def test_rounds_that_outgrow_the_window_push_out_the_oldest_turns(channel, alice, openai_server):
    """Each request, rounds included, fits the model's context window: the conversation's
    oldest turns make room for the rounds (as drop-oldest does for any prompt)."""
    add_provider("tooly", openai_server.base_url, context_window=2000)
    use_provider(channel, "tooly", max_tokens=200)
    channel.tools = ["calculator"]
    channel.save(update_fields=["tools"])
    fill_history(channel, alice, turns=10, size=500)  # ~1,300 tokens of history
    openai_server.behaviour.tool_calls = long_calls(3, 1200)  # ~300 tokens a round
    post_message(channel=channel, user=alice, text="go")
    wait_for_done(channel)
    assert bot(channel).finish_reason == "stop" and len(openai_server.requests) == 4
    old_turns = [
        len(re.findall(r"old \d+ ", json.dumps(body["messages"]))) for body in openai_server.requests
    ]
    assert old_turns == sorted(old_turns, reverse=True) and old_turns[-1] < old_turns[0], old_turns
    for body in openai_server.requests:  # by the engine's own estimate (4 characters a token)
        assert len(json.dumps(body["messages"])) // 4 <= 2000 - 200 + 150, len(json.dumps(body["messages"]))


def test_when_dropping_turns_is_not_enough_the_oldest_rounds_results_are_left_out(
    channel, alice, openai_server
):
    """No old turns to drop: the first round's large result makes way for the third's."""
    from chat.generation.generation import RESULT_LEFT_OUT

    add_provider("tooly", openai_server.base_url, context_window=800)
    use_provider(channel, "tooly", max_tokens=100)
    channel.tools = ["calculator"]
    channel.save(update_fields=["tools"])
    # Each result is 904 digits (~230 tokens): three of them do not fit in 700.
    openai_server.behaviour.tool_calls = [
        [call(f"c{n}", "calculator", expression="2**3000")] for n in range(3)
    ]
    post_message(channel=channel, user=alice, text="go")
    wait_for_done(channel)
    assert bot(channel).finish_reason == "stop" and len(openai_server.requests) == 4
    first, *rest = tool_messages(openai_server.requests[3], "openai")
    assert first == RESULT_LEFT_OUT and rest and all(len(str(r).strip()) == 904 for r in rest)
    assert tool_messages(openai_server.requests[2], "openai")[0] != RESULT_LEFT_OUT  # only when needed
    assert all(len(s["content"].strip()) == 904 for s in bot(channel).steps)  # the room saw them whole


def test_rounds_that_cannot_fit_end_the_reply_as_length_with_a_status(channel, alice, openai_server):
    add_provider("tooly", openai_server.base_url, context_window=700)
    use_provider(channel, "tooly", max_tokens=100)
    channel.tools = ["calculator"]
    channel.save(update_fields=["tools"])
    openai_server.behaviour.tool_calls = long_calls(5, 3000)  # ~750 tokens a round: never fits
    post_message(channel=channel, user=alice, text="go")
    events = wait_for_done(channel)
    turn = bot(channel)
    assert turn.finish_reason == "length" and turn.truncated
    assert len(openai_server.requests) == 1  # the round's results were never sent
    statuses = [e["text"] for e in events if e["type"] == "status"]
    assert any("context window" in text for text in statuses), statuses


# --- a call's time limit and output cap ----------------------------------------------


class LocalSite:
    """A local web page for web_fetch that answers after 5 s."""

    def __init__(self) -> None:
        import contextlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                import time

                time.sleep(5)
                body = ("word " * 1000).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the reply gave up on it
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.origin = f"127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture(scope="module")
def local_site():
    site = LocalSite()
    yield site
    site.httpd.shutdown()


def test_a_call_over_the_time_limit_goes_back_to_the_model_as_an_error(
    channel, alice, openai_server, local_site, settings
):
    settings.WEB_FETCH_PRIVATE_EXEMPT = [local_site.origin]
    settings.TOOL_TIMEOUT = 0.5
    openai_server.behaviour.tool_calls = [[call("c1", "web_fetch", url=f"http://{local_site.origin}/slow")]]
    use_tools(channel, openai_server, "web_fetch")
    post_message(channel=channel, user=alice, text="fetch it")
    wait_for_done(channel, timeout=4)  # well before the page would answer
    [step] = bot(channel).steps
    assert step["status"] == "error" and step["ok"] is False
    assert step["content"] == "Error: timed out after 0.5 s" and step["duration_ms"] < 3000
    assert tool_messages(openai_server.requests[1], "openai") == ["Error: timed out after 0.5 s"]
    assert bot(channel).finish_reason == "stop"


def test_a_result_over_the_cap_is_cut_for_the_model_and_the_room_and_flagged(
    channel, alice, openai_server, settings
):
    settings.TOOL_OUTPUT_CHARS = 100
    openai_server.behaviour.tool_calls = [[call("c1", "calculator", expression="2**3000")]]  # 904 digits
    use_tools(channel, openai_server, "calculator")
    post_message(channel=channel, user=alice, text="fetch it")
    events = wait_for_done(channel)
    [step] = bot(channel).steps
    assert step["ok"] is True and step["truncated"] is True and len(step["content"]) == 100
    [sent] = tool_messages(openai_server.requests[1], "openai")
    assert sent == step["content"]
    [result] = [e for e in events if e["type"] == "tool_result"]
    assert result["truncated"] is True and result["content"] == step["content"]


# --- MCP, through a reply ------------------------------------------------------------


@pytest.fixture
def mcp_http(tmp_path):
    from tests.test_mcp import HttpMcpServer

    server = HttpMcpServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_an_mcp_tool_is_called_through_a_reply_and_its_result_reaches_the_model(
    channel, alice, admin_user, mcp_http, openai_server, anthropic_server, flavour
):
    """End to end: the channel names `mcp:<server>/<tool>`; the model calls it by its wire
    name; the real SDK server (a subprocess, streamable HTTP) runs it; the result is the
    step's and goes back to the model."""
    from chat.models import McpServer

    McpServer.objects.create(
        name="desk", transport="http", url=mcp_http.url, created_by=admin_user, timeout=10
    )
    server = openai_server if flavour == "openai" else anthropic_server
    server.behaviour.tool_calls = [[call("m1", "mcp_desk_add", a=2, b=40)]]
    server.behaviour.tokens = ["Forty-two."]
    use_tools(channel, server, "mcp:desk/add", kind="openai_compat" if flavour == "openai" else "anthropic")
    post_message(channel=channel, user=alice, text="add them")
    events = wait_for_done(channel, timeout=20)
    turn = bot(channel)
    [step] = turn.steps
    assert step["name"] == "mcp:desk/add" and step["arguments"] == {"a": 2, "b": 40}
    assert step["ok"] is True and step["content"].strip() == "42", step
    [sent] = tool_messages(server.requests[1], flavour)
    assert "42" in str(sent)
    assert turn.text == "Forty-two." and turn.finish_reason == "stop"
    assert [e["call_id"] for e in events if e["type"] == "tool_result"] == ["m1"]
