"""MCP servers' tools (issue 17, chat/agents/mcp.py) against a real MCP server written with
the SDK (tests/mcp_servers.py), over streamable HTTP in a subprocess and over stdio: the
listing, calls, a server's own errors, an interrupted call, a server that dies and comes
back, the stdio rule, the bearer token, and the admin's form."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client as DjangoClient

from chat.agents import mcp
from chat.agents.tools import ToolContext, ToolError
from chat.models import McpServer
from chat.realtime.async_db import db_call
from tests.conftest import make_user
from tests.processes import ROOT, clean_env, free_port

pytestmark = pytest.mark.django_db(transaction=True)

CTX = ToolContext(
    channel_id=1, channel_name="lobby", session_id=None, turn_id=1, requester_id=None, author_id=None
)
STDIO_COMMAND = [sys.executable, str(ROOT / "tests" / "mcp_servers.py"), "stdio"]


class HttpMcpServer:
    """tests/mcp_servers.py over streamable HTTP in a subprocess, on a port that stays
    its own across restarts."""

    def __init__(self, marks: Path, **env: str) -> None:
        self.port = free_port()
        self.marks = marks
        self.env = clean_env(MCP_TEST_MARKS=str(marks), **env)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="colloquy-mcp-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_servers", "http", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        import socket

        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MCP server exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the MCP server did not listen on {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye to its clients."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpMcpServer]:
    server = HttpMcpServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def _pool_closed() -> AsyncIterator[None]:
    """Each test's event loop has its own pool: close it (stdio servers stop) at the end."""
    yield
    await mcp.close_pool()


def add_server(name: str, creator: Any, **fields: Any) -> McpServer:
    return McpServer.objects.create(name=name, created_by=creator, timeout=10, **fields)


async def wait_for_mark(folder: Path, name: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {name} mark after {timeout} s")
        await asyncio.sleep(0.02)


async def tool(name: str) -> Any:
    tools, unavailable = await mcp.tools_for([name])
    assert not unavailable, unavailable
    return tools[0]


async def test_tools_over_http_are_listed_named_and_called(http_server, admin_user):
    server = await db_call(add_server)("web", admin_user, url=http_server.url)
    specs = {spec.name: spec for spec in await mcp.list_tools(server)}
    assert {"mcp:web/add", "mcp:web/echo", "mcp:web/slow", "mcp:web/fail"} <= set(specs)
    assert specs["mcp:web/add"].description == "Add two integers."
    assert specs["mcp:web/add"].parameters["required"] == ["a", "b"]

    names = ["mcp:web/add", "mcp:web/nope", "mcp:ghost/add", "mcp:web/echo", "mcp:web"]
    tools, unavailable = await mcp.tools_for(names)
    assert [t.spec.name for t in tools] == ["mcp:web/add", "mcp:web/echo"]
    assert unavailable == ["mcp:web/nope", "mcp:ghost/add", "mcp:web"]

    add, echo = tools
    assert add.timeout >= 10 and add.status
    out = await add.run({"a": 2, "b": 40}, CTX)
    assert (out.ok, out.content) == (True, "42")
    out = await echo.run({"text": "bonjour"}, CTX)
    assert (out.ok, out.content) == (True, "bonjour")

    # Other blocks are named, not inlined.
    out = await (await tool("mcp:web/picture")).run({}, CTX)
    assert (out.ok, out.content) == (True, "a pixel\n[image: image/png]")


async def test_a_failing_tool_is_not_ok_and_carries_the_servers_message(http_server, admin_user):
    await db_call(add_server)("web", admin_user, url=http_server.url)
    out = await (await tool("mcp:web/fail")).run({}, CTX)
    assert out.ok is False
    assert "the fail tool failed, as asked" in out.content
    # Arguments the tool's schema refuses: the server's answer, as an error.
    out = await (await tool("mcp:web/add")).run({"a": "two"}, CTX)
    assert out.ok is False


async def test_a_call_cancelled_midway_leaves_the_connection_usable(http_server, admin_user):
    await db_call(add_server)("web", admin_user, url=http_server.url)
    slow = await tool("mcp:web/slow")
    await (await tool("mcp:web/echo")).run({"text": "warm"}, CTX)
    connection = next(iter(mcp._pool().connections.values()))

    running = asyncio.create_task(slow.run({"seconds": 60}, CTX))
    await wait_for_mark(http_server.marks, "slow-started")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # The interrupt reached the server: its handler was cancelled.
    await wait_for_mark(http_server.marks, "slow-cancelled")

    out = await (await tool("mcp:web/add")).run({"a": 1, "b": 1}, CTX)
    assert (out.ok, out.content) == (True, "2")
    assert next(iter(mcp._pool().connections.values())) is connection  # the same connection


async def test_a_call_longer_than_the_servers_timeout_fails_cleanly(http_server, admin_user):
    await db_call(add_server)("web", admin_user, url=http_server.url)
    await db_call(McpServer.objects.filter(name="web").update)(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"did not answer within 0\.5 s"):
        await (await tool("mcp:web/slow")).run({"seconds": 30}, CTX)
    assert time.monotonic() - started < 5
    out = await (await tool("mcp:web/echo")).run({"text": "still here"}, CTX)
    assert out.content == "still here"


async def test_a_dead_server_is_unavailable_within_the_timeout_and_comes_back(http_server, admin_user):
    server = await db_call(add_server)("web", admin_user, url=http_server.url)
    add = await tool("mcp:web/add")
    assert (await add.run({"a": 1, "b": 2}, CTX)).content == "3"

    http_server.kill()
    started = time.monotonic()
    # Refused: it never reached the server, so a new connection is tried, and refused.
    with pytest.raises(ToolError, match="MCP server web unavailable: cannot connect"):
        await add.run({"a": 1, "b": 2}, CTX)
    with pytest.raises(mcp.McpUnavailableError, match="unavailable"):
        await mcp.list_tools(server, fresh=True)
    tools, unavailable = await mcp.tools_for(["mcp:web/add"])
    assert (tools, unavailable) == ([], ["mcp:web/add"])
    assert time.monotonic() - started < mcp.LIST_TIMEOUT + 1

    http_server.start()  # the same port
    assert (await add.run({"a": 2, "b": 2}, CTX)).content == "4"
    assert "mcp:web/add" in {spec.name for spec in await mcp.list_tools(server, fresh=True)}


@pytest.mark.parametrize("era", ["2026", "2025"])
async def test_a_server_restarted_between_two_calls_answers_the_second(tmp_path, admin_user, era):
    restarted = HttpMcpServer(tmp_path, **({"MCP_HANDSHAKE_ERA": "1"} if era == "2025" else {}))
    restarted.start()
    try:
        await db_call(add_server)("web", admin_user, url=restarted.url)
        echo = await tool("mcp:web/echo")
        assert (await echo.run({"text": "one"}, CTX)).content == "one"
        first = mcp._pool().connections[echo.config.id]
        assert first.client is not None and first.client.protocol_version.startswith(era)
        restarted.kill()
        restarted.start()
        assert (await echo.run({"text": "two"}, CTX)).content == "two"
        if era == "2025":
            # The new process does not know the old session (404): the call never ran
            # there, so it was sent again on a new connection.
            assert mcp._pool().connections[echo.config.id] is not first
        else:
            # Per-request (2026) connections have no session to lose.
            assert mcp._pool().connections[echo.config.id] is first
    finally:
        restarted.stop()


async def test_a_connection_lost_during_a_call_is_reported_not_retried(http_server, admin_user):
    await db_call(add_server)("web", admin_user, url=http_server.url)
    slow = await tool("mcp:web/slow")
    running = asyncio.create_task(slow.run({"seconds": 60}, CTX))
    await wait_for_mark(http_server.marks, "slow-started")
    http_server.kill()
    with pytest.raises(ToolError, match="broke during the call"):
        await asyncio.wait_for(running, mcp.LIST_TIMEOUT)


async def test_a_server_that_never_answers_is_unavailable_not_a_hang(admin_user):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are queued, never answered
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
        server = await db_call(add_server)("silent", admin_user, url=url)
        started = time.monotonic()
        with pytest.raises(mcp.McpUnavailableError, match="unavailable"):
            await mcp.list_tools(server)
        assert time.monotonic() - started < mcp.LIST_TIMEOUT + 1
        # Remembered briefly: the next reply does not wait again.
        started = time.monotonic()
        assert await mcp.tools_for(["mcp:silent/x"]) == ([], ["mcp:silent/x"])
        assert time.monotonic() - started < 1
    finally:
        silent.close()


async def test_stdio_tools_get_only_the_named_environment(admin_user, monkeypatch, tmp_path):
    monkeypatch.setenv("MCP_TEST_SECRET", "s3cret")
    monkeypatch.setenv("MCP_TEST_UNLISTED", "not-for-you")
    monkeypatch.setenv("MCP_TEST_MARKS", str(tmp_path))
    server = await db_call(add_server)(
        "local",
        admin_user,
        transport="stdio",
        command=STDIO_COMMAND,
        env_names=["MCP_TEST_SECRET", "MCP_TEST_MARKS"],
    )
    assert "mcp:local/add" in {spec.name for spec in await mcp.list_tools(server)}
    out = await (await tool("mcp:local/whoami")).run({}, CTX)
    assert "secret=s3cret leak=" in out.content and out.content.endswith("leak=")
    assert (await (await tool("mcp:local/add")).run({"a": 3, "b": 4}, CTX)).content == "7"
    out = await (await tool("mcp:local/fail")).run({}, CTX)
    assert out.ok is False and "the fail tool failed, as asked" in out.content

    # Interrupted mid-call, then used again.
    slow = await tool("mcp:local/slow")
    running = asyncio.create_task(slow.run({"seconds": 60}, CTX))
    await wait_for_mark(tmp_path, "slow-started")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (await (await tool("mcp:local/echo")).run({"text": "after"}, CTX)).content == "after"

    # The process dies between calls: the next call starts another.
    pid = int(out_pid((await (await tool("mcp:local/whoami")).run({}, CTX)).content))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while mcp._pool().connections[server.pk].usable():
        assert time.monotonic() < deadline, "the dead stdio server was never noticed"
        await asyncio.sleep(0.02)
    second = out_pid((await (await tool("mcp:local/whoami")).run({}, CTX)).content)
    assert int(second) != pid

    # Closing the pool stops the server process.
    await mcp.close_pool()
    deadline = time.monotonic() + 10
    while process_alive(int(second)):
        assert time.monotonic() < deadline, "the stdio server outlived the pool"
        await asyncio.sleep(0.02)


def out_pid(content: str) -> str:
    return content.split()[0].removeprefix("pid=")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


async def test_stdio_is_refused_unless_a_superuser_made_it(admin_user):
    staff = await db_call(make_user)("stafford", is_staff=True)
    server = await db_call(add_server)("sneaky", staff, transport="stdio", command=STDIO_COMMAND)
    with pytest.raises(
        mcp.McpUnavailableError, match="unavailable: stdio servers must be configured by an admin"
    ):
        await mcp.list_tools(server)
    assert await mcp.tools_for(["mcp:sneaky/add"]) == ([], ["mcp:sneaky/add"])

    # Checked at every connect: a creator who is no longer a superuser.
    server = await db_call(add_server)("local", admin_user, transport="stdio", command=STDIO_COMMAND)
    add = await tool("mcp:local/add")
    assert (await add.run({"a": 1, "b": 1}, CTX)).content == "2"
    admin_user.is_superuser = False
    await db_call(admin_user.save)()
    with pytest.raises(mcp.McpUnavailableError, match="must be configured by an admin"):
        await mcp.list_tools(server, fresh=True)
    assert await mcp.tools_for(["mcp:local/add"]) == ([], ["mcp:local/add"])


async def test_the_bearer_token_comes_from_the_named_variable(tmp_path, admin_user, monkeypatch):
    guarded = HttpMcpServer(tmp_path, MCP_REQUIRE_TOKEN="open-sesame")
    guarded.start()
    try:
        server = await db_call(add_server)("guarded", admin_user, url=guarded.url, token_env="MCP_TEST_TOKEN")
        monkeypatch.delenv("MCP_TEST_TOKEN", raising=False)
        with pytest.raises(mcp.McpUnavailableError, match="MCP_TEST_TOKEN is not set"):
            await mcp.list_tools(server)
        monkeypatch.setenv("MCP_TEST_TOKEN", "wrong")
        with pytest.raises(mcp.McpUnavailableError, match="unavailable"):
            await mcp.list_tools(server)
        monkeypatch.setenv("MCP_TEST_TOKEN", "open-sesame")  # a new value: a new connection
        assert "mcp:guarded/add" in {spec.name for spec in await mcp.list_tools(server)}
        assert (await (await tool("mcp:guarded/add")).run({"a": 5, "b": 5}, CTX)).content == "10"
    finally:
        guarded.stop()


async def test_available_mcp_tools_lists_live_and_dead_servers(http_server, admin_user):
    await db_call(add_server)("web", admin_user, url=http_server.url)
    await db_call(add_server)("gone", admin_user, url=f"http://127.0.0.1:{free_port()}/mcp")
    await db_call(add_server)("off", admin_user, url=http_server.url, enabled=False)
    entries = await mcp.available_mcp_tools()
    add = next(e for e in entries if e["name"] == "mcp:web/add")
    assert add == {
        "name": "mcp:web/add",
        "description": "Add two integers.",
        "server": "web",
        "available": True,
    }
    gone = [e for e in entries if e["server"] == "gone"]
    assert gone == [
        {
            "name": "mcp:gone/*",
            "description": "",
            "server": "gone",
            "available": False,
            "error": "unavailable: cannot connect",
        }
    ]
    assert not [e for e in entries if e["server"] == "off"]


# --- the admin ----------------------------------------------------------------------------------


def desk(user: Any) -> DjangoClient:
    client = DjangoClient()
    client.force_login(user)
    return client


def staff_with_mcp_rights() -> Any:
    from django.contrib.auth.models import Permission

    user = make_user("stafford", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__endswith="_mcpserver"))
    return user


FORM = {"name": "local", "url": "", "token_env": "", "env_names": "[]", "enabled": "on", "timeout": "30"}


def test_the_admin_form_refuses_stdio_to_a_staff_member_who_is_not_a_superuser():
    staff = staff_with_mcp_rights()
    response = desk(staff).post(
        "/admin/chat/mcpserver/add/", {**FORM, "transport": "stdio", "command": '["python", "-m", "x"]'}
    )
    assert response.status_code == 200
    assert "Only a superuser may configure a stdio server" in response.content.decode()
    assert not McpServer.objects.exists()

    # HTTP is theirs to add; they are its creator. Naming secrets is not.
    response = desk(staff).post(
        "/admin/chat/mcpserver/add/",
        {**FORM, "name": "web", "transport": "http", "url": "http://mcp.example/mcp", "command": "[]"},
    )
    assert response.status_code == 302
    assert McpServer.objects.get(name="web").created_by == staff
    response = desk(staff).post(
        "/admin/chat/mcpserver/add/",
        {
            **FORM,
            "name": "web2",
            "transport": "http",
            "url": "http://x.example/mcp",
            "command": "[]",
            "token_env": "K",
        },
    )
    assert "Only a superuser may name environment variables" in response.content.decode()


def test_the_admin_form_checks_each_transports_fields(admin_user):
    client = desk(admin_user)
    response = client.post("/admin/chat/mcpserver/add/", {**FORM, "transport": "http", "command": "[]"})
    assert "An HTTP server needs its URL." in response.content.decode()
    response = client.post(
        "/admin/chat/mcpserver/add/",
        {**FORM, "transport": "http", "url": "ftp://x.example/", "command": "[]"},
    )
    assert "Only http and https URLs." in response.content.decode()
    for command in ("[]", '"python"', "[1, 2]"):
        response = client.post(
            "/admin/chat/mcpserver/add/", {**FORM, "transport": "stdio", "command": command}
        )
        assert "A stdio server needs its command" in response.content.decode(), command
    assert not McpServer.objects.exists()

    response = client.post(
        "/admin/chat/mcpserver/add/",
        {**FORM, "transport": "stdio", "command": '["python", "-m", "x"]', "env_names": '["GITHUB_TOKEN"]'},
    )
    assert response.status_code == 302
    created = McpServer.objects.get(name="local")
    assert (created.created_by, created.command, created.env_names) == (
        admin_user,
        ["python", "-m", "x"],
        ["GITHUB_TOKEN"],
    )

    # A staff member may not change a stdio server at all.
    staff = staff_with_mcp_rights()
    response = desk(staff).post(f"/admin/chat/mcpserver/{created.pk}/change/", {**FORM, "command": '["sh"]'})
    assert response.status_code == 403


def test_the_admin_page_shows_the_servers_tools_or_why_not(http_server, admin_user):
    web = add_server("web", admin_user, url=http_server.url)
    page = desk(admin_user).get(f"/admin/chat/mcpserver/{web.pk}/change/").content.decode()
    assert "mcp:web/add" in page and "Add two integers." in page
    gone = add_server("gone", admin_user, url=f"http://127.0.0.1:{free_port()}/mcp")
    page = desk(admin_user).get(f"/admin/chat/mcpserver/{gone.pk}/change/").content.decode()
    assert "unavailable: cannot connect" in page
