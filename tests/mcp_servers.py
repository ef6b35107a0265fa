"""A real MCP server written with the SDK (``MCPServer``, v1's FastMCP), for the tests of
chat/agents/mcp.py.

    python -m tests.mcp_servers http PORT   # streamable HTTP on 127.0.0.1:PORT/mcp
    python -m tests.mcp_servers stdio       # over stdin/stdout

Tools: add(a, b), echo(text), slow(seconds), fail(), whoami() (its pid and the variable
MCP_TEST_SECRET, to show what a stdio server is given), picture() (an image block).
With MCP_REQUIRE_TOKEN set, the HTTP server answers 401 to any request without
``Authorization: Bearer <that token>``; with MCP_HANDSHAKE_ERA set, it speaks only the
2025-era protocol (sessions)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Image
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("colloquy-test", log_level="WARNING")

# A 1×1 transparent PNG.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


def mark(what: str) -> None:
    """Leave a file named ``what`` in MCP_TEST_MARKS (when set): how a test sees, without
    guessing with sleeps, that a call has started or was cancelled at the server."""
    folder = os.environ.get("MCP_TEST_MARKS")
    if folder:
        with open(os.path.join(folder, what), "w") as f:
            f.write(str(os.getpid()))


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then say so."""
    mark("slow-started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        mark("slow-cancelled")
        raise
    return f"slept {seconds}"


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ToolError("the fail tool failed, as asked")


@server.tool()
def whoami() -> str:
    """This process's id, the secret it was given, and whether it sees an unlisted variable."""
    secret = os.environ.get("MCP_TEST_SECRET", "")
    return f"pid={os.getpid()} secret={secret} leak={os.environ.get('MCP_TEST_UNLISTED', '')}"


@server.tool(structured_output=False)
def picture() -> list[Any]:
    """A caption and an image."""
    return ["a pixel", Image(data=PIXEL, format="png")]


def require_token(app: Any, token: str) -> Any:
    """ASGI middleware: 401 unless the request carries the bearer token."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"no token"})
                return
        await app(scope, receive, send)

    return guarded


def handshake_era_only(app: Any) -> Any:
    """ASGI middleware: 404 to ``server/discover``, so clients fall back to the 2025-era
    ``initialize`` handshake and its sessions (``Mcp-Session-Id``), as most servers
    deployed today still speak."""

    async def legacy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        messages = [await receive()]
        while messages[-1].get("more_body"):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages)
        if b'"server/discover"' in body:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        replay = iter(messages)

        async def replayed() -> Any:
            return next(replay, None) or await receive()

        await app(scope, replayed, send)

    return legacy


def serve_http(port: int) -> None:
    import uvicorn

    app: Any = server.streamable_http_app()
    if os.environ.get("MCP_HANDSHAKE_ERA"):
        app = handshake_era_only(app)
    token = os.environ.get("MCP_REQUIRE_TOKEN")
    if token:
        app = require_token(app, token)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if sys.argv[1] == "http":
        serve_http(int(sys.argv[2]))
    else:
        server.run("stdio")
