"""Tool steps across two real server processes (issue 17): a reply with a tool call
runs on A; a watcher that joins on B mid-run gets the steps so far in its history and
every later step in order; the approval comes through B; interrupt through B stops a
slow tool running on A."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat.models import Membership, Turn
from chat.realtime.async_db import db_call
from tests.conftest import add_provider, use_provider
from tests.processes import live_servers
from tests.test_ws_servers import connect, frames_until
from tests.ws_helpers import token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


class SlowPage:
    """A local web page that takes its time, and says when its client hung up."""

    def __init__(self) -> None:
        self.hung_up = threading.Event()
        self.asked = threading.Event()
        page = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                page.asked.set()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    for _ in range(600):
                        self.wfile.write(b"x" * 100)
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    page.hung_up.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])


@pytest.fixture(scope="module")
def slow_page():
    page = SlowPage()
    yield page
    page.httpd.shutdown()


@pytest.fixture(scope="module")
def servers(slow_page, django_db_setup, django_db_blocker):
    exempt = f"127.0.0.1:{slow_page.port}"
    with live_servers("uvicorn", 2, WEB_FETCH_PRIVATE_EXEMPT=exempt) as hosts:
        yield {"A": hosts[0], "B": hosts[1]}


def tool_channel(channel, server, tools, approval=()):
    add_provider("tooly", server.base_url)
    use_provider(channel, "tooly")
    channel.tools = list(tools)
    channel.tools_requiring_approval = list(approval)
    channel.save()


def call(call_id, name, **arguments):
    return {"id": call_id, "name": name, "arguments": json.dumps(arguments)}


async def test_a_watcher_joining_mid_run_on_b_sees_every_step_in_order(
    servers, channel, alice, bob, carol, openai_server
):
    openai_server.behaviour.tool_calls = [[call("c1", "calculator", expression="6*7")]]
    openai_server.behaviour.tool_fragment = 3
    openai_server.behaviour.tokens = ["It is", " 42."]
    await db_call(tool_channel)(channel, openai_server, ["calculator"], ["calculator"])
    await db_call(Membership.objects.create)(user=carol, channel=channel)
    async with (
        connect(servers["A"], "/ws/lobby", await token_for(bob)) as author,
        connect(servers["B"], "/ws/lobby", await token_for(alice)) as owner,
        connect(servers["B"], "/ws/lobby", await token_for(carol)) as other,
    ):
        for ws in (author, owner, other):
            await ws.recv()
        await author.send(json.dumps({"type": "message", "text": "what is 6*7?"}))
        before = await frames_until(author, "tool_approval")
        # The reply waits: a watcher joining now on B gets the step in its history.
        async with connect(servers["B"], "/ws/lobby?watch=1") as watcher:
            history = json.loads(await watcher.recv())
            assert history["type"] == "history"
            [step] = history["generating"]["steps"]
            assert step["call_id"] == "c1" and step["status"] == "awaiting_approval"
            assert step["arguments"] == {"expression": "6*7"}
            # Neither a watcher nor another member may decide; the owner may.
            await watcher.send(json.dumps({"type": "approve_tool", "call_id": "c1"}))
            refused = await frames_until(watcher, "error")
            assert refused[-1]["code"] == "read_only"
            await other.send(json.dumps({"type": "approve_tool", "call_id": "c1"}))
            assert (await frames_until(other, "error"))[-1]["code"] == "forbidden"
            await owner.send(json.dumps({"type": "approve_tool", "call_id": "c1"}))
            seen = await frames_until(watcher, "done")
        rest = await frames_until(author, "done")
    # The watcher saw what the author saw from the moment it joined, in order.
    assert [f for f in rest if f["seq"] > history["seq"]] == seen
    kinds = [f["type"] for f in seen]
    assert kinds.index("tool_result") < kinds.index("token") < kinds.index("turn") < kinds.index("done")
    running = next(f for f in seen if f["type"] == "tool_call")
    assert running["status"] == "running" and running["approved_by"] == "alice"
    result = next(f for f in seen if f["type"] == "tool_result")
    assert result["ok"] is True and result["content"].strip() == "42"
    deltas = [f for f in before if f["type"] == "tool_call" and "arguments_delta" in f]
    assert json.loads("".join(f["arguments_delta"] for f in deltas)) == {"expression": "6*7"}
    bot = await db_call(Turn.objects.get)(role="bot")
    assert bot.text == "It is 42." and bot.steps[0]["approved_by"] == "alice"
    final = next(f for f in seen if f["type"] == "turn")
    assert final["steps"][0]["status"] == "ok"


async def test_interrupt_through_b_stops_a_slow_tool_running_on_a(
    servers, slow_page, channel, alice, bob, openai_server
):
    url = f"http://127.0.0.1:{slow_page.port}/slow"
    openai_server.behaviour.tool_calls = [[call("f1", "web_fetch", url=url)]]
    await db_call(tool_channel)(channel, openai_server, ["web_fetch"])
    async with (
        connect(servers["A"], "/ws/lobby", await token_for(alice)) as chat_a,
        connect(servers["B"], "/ws/lobby", await token_for(bob)) as chat_b,
    ):
        await chat_a.recv()
        await chat_b.recv()
        await chat_a.send(json.dumps({"type": "message", "text": "read that page"}))
        await frames_until(chat_b, "status")
        assert await asyncio.to_thread(slow_page.asked.wait, 10)
        await chat_b.send(json.dumps({"type": "interrupt"}))
        started = asyncio.get_running_loop().time()
        tail = await frames_until(chat_b, "done", timeout=10)
        assert asyncio.get_running_loop().time() - started < 2.0
    assert [f["type"] for f in tail][-3:] == ["turn", "interrupted", "done"]
    bot = await db_call(Turn.objects.get)(role="bot")
    assert bot.finish_reason == "interrupted"
    assert bot.steps[0]["status"] == "interrupted"
    assert len(openai_server.requests) == 1  # the model was not asked again
    assert await asyncio.to_thread(slow_page.hung_up.wait, 10), "the fetch went on after the interrupt"
