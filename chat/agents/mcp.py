"""The tools of MCP servers (issue 17), through the official ``mcp`` SDK (2.x).

Per process and event loop, one live connection per ``McpServer`` row, opened when first
needed and kept: an SDK connection is a nest of anyio task groups that must be entered
and left by one task, so each lives in a task of its own (``_Connection``) and callers use
its session from their tasks (the SDK correlates requests and answers itself). A changed
row (or token) makes a new connection; a connection found dead is replaced before the
call; a call that failed because the connection broke is retried on a new one only when
it surely never reached the server (``_Probe``), otherwise its error is reported: a
tool may have side effects, and running it twice is worse than one error.

stdio servers run a command on this machine: only when the row says stdio *and* its
creator is a superuser now (checked at every connect, not only when the row was saved).
HTTP servers are configured by admins, so their URLs skip web_fetch's SSRF guard; only
http and https. Secrets stay in the environment: the row names the variables.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2
import mcp_types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from chat.agents.registry import split_mcp_name
from chat.agents.tools import Tool, ToolContext, ToolError, ToolOutput, ToolSpec
from chat.models import McpServer
from chat.realtime.async_db import db_call

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds to connect (process start or HTTP) and negotiate
LIST_TIMEOUT = 5.0  # seconds for a whole tools listing, connecting included
LIST_TTL = 60.0  # a listing is reused this long
FAILURE_TTL = 5.0  # and a failed one this long, so a dead server costs each reply nothing
MAX_PAGES = 20  # of a tools listing
STDIO_ADMIN_ONLY = "stdio servers must be configured by an admin"


class McpUnavailableError(Exception):
    """A server that cannot be used now; the message says why ("unavailable: …")."""


# --- what a row says, read once per use -------------------------------------------------------


@dataclass(frozen=True)
class McpConfig:
    """A ``McpServer`` row as the pool uses it, with whether its creator is a superuser
    now (read from the database when the config is made)."""

    id: int
    name: str
    transport: str
    url: str
    command: tuple[str, ...]
    token_env: str
    env_names: tuple[str, ...]
    timeout: float
    enabled: bool
    admin_made: bool

    @classmethod
    def of(cls, server: McpServer) -> McpConfig:
        """Synchronous (ORM): call it through ``db_call`` from async code."""
        from django.contrib.auth import get_user_model

        admin_made = bool(
            server.created_by_id
            and get_user_model()
            .objects.filter(pk=server.created_by_id, is_superuser=True, is_active=True)
            .exists()
        )
        command = server.command if isinstance(server.command, list) else []
        env_names = server.env_names if isinstance(server.env_names, list) else []
        return cls(
            id=server.pk,
            name=server.name,
            transport=server.transport,
            url=server.url,
            command=tuple(str(part) for part in command),
            token_env=server.token_env,
            env_names=tuple(str(name) for name in env_names),
            timeout=float(server.timeout),
            enabled=server.enabled,
            admin_made=admin_made,
        )

    def fingerprint(self) -> str:
        """Changes when anything a connection depends on does, the secrets' values
        included (hashed: they are never kept or logged)."""
        secrets = [os.environ.get(name, "") for name in (self.token_env, *self.env_names) if name]
        material = json.dumps([repr(self), secrets])
        return hashlib.sha256(material.encode()).hexdigest()

    def refusal(self) -> str | None:
        """Why this server may not be connected to, or None."""
        if not self.enabled:
            return "the server is disabled"
        if self.transport == McpServer.Transport.STDIO:
            if not self.admin_made:
                return STDIO_ADMIN_ONLY
            if not self.command:
                return "no command configured"
            return None
        if self.transport != McpServer.Transport.HTTP:
            return f"unknown transport {self.transport!r}"
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).hostname:
            return "the URL must be http or https"
        if self.token_env and not os.environ.get(self.token_env):
            return f"the token variable {self.token_env} is not set"
        return None


# --- transports -------------------------------------------------------------------------------


@dataclass
class _Probe:
    """What one call's HTTP requests met: ``refused`` counts requests that never left
    (connection refused or connect timeout, or a 404 for a session the server no longer
    knows: it ran nothing), ``reached`` is whether any may have reached the server."""

    refused: int = 0
    reached: bool = False

    @property
    def surely_undelivered(self) -> bool:
        return self.refused > 0 and not self.reached


# The SDK runs each request's POST in a task started in the caller's context (it carries
# contextvars across, for tracing): the probe set around a call sees that call's requests.
# Nothing seen (probe untouched) counts as "may have reached": no retry.
_PROBE: ContextVar[_Probe | None] = ContextVar("mcp_probe", default=None)


class _ProbingTransport(httpx2.AsyncBaseTransport):
    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        probe = _PROBE.get()
        try:
            response = await self._inner.handle_async_request(request)
        except (httpx2.ConnectError, httpx2.ConnectTimeout):
            if probe is not None:
                probe.refused += 1
            raise
        except BaseException:
            if probe is not None:
                probe.reached = True
            raise
        if probe is not None:
            if response.status_code == 404 and request.headers.get("mcp-session-id"):
                probe.refused += 1  # a restarted server: the session is gone, nothing ran
            else:
                probe.reached = True
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.asynccontextmanager
async def _http_transport(config: McpConfig) -> AsyncIterator[Any]:
    headers = {}
    if config.token_env:
        headers["Authorization"] = f"Bearer {os.environ.get(config.token_env, '')}"
    http = httpx2.AsyncClient(
        headers=headers,
        # Read stays long: a tool call's answer streams back on its POST. Calls have
        # their own timeout (the server's) in the session.
        timeout=httpx2.Timeout(CONNECT_TIMEOUT, read=300.0),
        transport=_ProbingTransport(),
    )
    async with http, streamable_http_client(config.url, http_client=http) as streams:
        yield streams


def _stdio_transport(config: McpConfig) -> Any:
    # The SDK adds only a few harmless variables (PATH, HOME, USER, LOGNAME, SHELL,
    # TERM) to what we pass: the server's secrets are the ones the row names.
    env = {name: os.environ[name] for name in config.env_names if name in os.environ}
    params = StdioServerParameters(command=config.command[0], args=list(config.command[1:]), env=env)
    return stdio_client(params)


def _describe(exc: BaseException) -> str:
    """A short reason for an admin or a model; never a header (the token) or a traceback."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, McpUnavailableError):
        return str(exc)
    if isinstance(exc, httpx2.ConnectError | ConnectionRefusedError):
        return "cannot connect"
    if isinstance(exc, TimeoutError | httpx2.TimeoutException):
        return "no answer in time"
    if isinstance(exc, MCPError):
        return exc.error.message or f"MCP error {exc.error.code}"
    if isinstance(exc, FileNotFoundError | PermissionError):
        return f"cannot start the command: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"[:300]


# --- one connection ---------------------------------------------------------------------------


class _Connection:
    """One server's live session, inside a task of its own that enters and leaves the
    SDK's context managers; it stays until ``stop()`` or until the connection breaks."""

    def __init__(self, config: McpConfig, fingerprint: str) -> None:
        loop = asyncio.get_running_loop()
        self.config = config
        self.fingerprint = fingerprint
        self.client: Client | None = None
        self.ready: asyncio.Future[Client] = loop.create_future()
        # Nobody may be waiting any more when a connect fails: no "never retrieved" noise.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._stop = asyncio.Event()
        self.task = loop.create_task(self._own(), name=f"mcp:{config.name}")
        # A connect that hangs (a black-holed address, a command that never speaks).
        self._deadline = loop.call_later(CONNECT_TIMEOUT, self._give_up)

    def _give_up(self) -> None:
        if not self.ready.done():
            self.ready.set_exception(McpUnavailableError(f"no answer within {CONNECT_TIMEOUT:g} s"))
            self.task.cancel()

    async def _own(self) -> None:
        target = (
            _stdio_transport(self.config)
            if self.config.transport == "stdio"
            else _http_transport(self.config)
        )
        try:
            # The SDK's response cache is off: listings are cached here, with our TTL.
            async with Client(target, read_timeout_seconds=LIST_TIMEOUT, cache=None) as client:
                self.client = client
                if not self.ready.done():
                    self.ready.set_result(client)
                self._deadline.cancel()
                await self._stop.wait()
        except BaseException as exc:
            reason = _describe(exc)
            if not self.ready.done():
                self.ready.set_exception(McpUnavailableError(reason))
            elif not self._stop.is_set() and not isinstance(exc, asyncio.CancelledError):
                log.info("MCP server %s: connection lost (%s)", self.config.name, reason)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.client = None
            self._deadline.cancel()

    def usable(self) -> bool:
        """Connected (or connecting) and not known to be broken."""
        if self.task.done() or self._stop.is_set():
            return False
        if self.client is None:
            return not self.ready.done()
        # The SDK marks its dispatcher closed when the transport ended (a stdio server
        # that exited): a request would fail at once. Private, hence the care.
        dispatcher = getattr(self.client.session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)

    def stop(self) -> None:
        self._stop.set()
        if not self.ready.done():
            self.task.cancel()


# --- the pool ---------------------------------------------------------------------------------


@dataclass
class _Listing:
    expires: float
    specs: list[ToolSpec] | None = None
    error: str | None = None


@dataclass
class _Pool:
    connections: dict[int, _Connection] = field(default_factory=dict)
    listings: dict[tuple[int, str], _Listing] = field(default_factory=dict)
    last_known: dict[int, list[ToolSpec]] = field(default_factory=dict)
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    stopping: set[asyncio.Task[None]] = field(default_factory=set)

    def _retire(self, conn: _Connection) -> None:
        if self.connections.get(conn.config.id) is conn:
            del self.connections[conn.config.id]
        conn.stop()
        if not conn.task.done():  # keep a reference until it has closed
            self.stopping.add(conn.task)
            conn.task.add_done_callback(self.stopping.discard)

    async def connection(self, config: McpConfig) -> _Connection:
        fingerprint = config.fingerprint()
        conn = self.connections.get(config.id)
        if conn is not None and (conn.fingerprint != fingerprint or not conn.usable()):
            self._retire(conn)
            conn = None
        if conn is None:
            refusal = config.refusal()
            if refusal:
                raise McpUnavailableError(f"unavailable: {refusal}")
            conn = self.connections[config.id] = _Connection(config, fingerprint)
        try:
            # Shielded: one caller's interrupt must not cancel a connect others wait for.
            await asyncio.shield(conn.ready)
        except McpUnavailableError as exc:
            self._retire(conn)
            raise McpUnavailableError(f"unavailable: {exc}") from None
        return conn

    async def specs(self, config: McpConfig, fresh: bool = False) -> list[ToolSpec]:
        key = (config.id, config.fingerprint())
        lock = self.locks.setdefault(config.id, asyncio.Lock())
        async with lock:  # one listing at a time per server; the others reuse it
            loop = asyncio.get_running_loop()
            cached = self.listings.get(key)
            if cached is not None and cached.expires > loop.time() and not fresh:
                if cached.error is not None:
                    raise McpUnavailableError(cached.error)
                return list(cached.specs or [])
            try:
                async with asyncio.timeout(LIST_TIMEOUT):
                    specs = await self._list(config)
            except (McpUnavailableError, TimeoutError) as exc:
                reason = (
                    str(exc)
                    if isinstance(exc, McpUnavailableError)
                    else f"unavailable: no answer within {LIST_TIMEOUT:g} s"
                )
                self.listings[key] = _Listing(loop.time() + FAILURE_TTL, error=reason)
                raise McpUnavailableError(reason) from None
            self.listings[key] = _Listing(loop.time() + LIST_TTL, specs=specs)
            self.last_known[config.id] = specs
            return list(specs)

    async def _list(self, config: McpConfig) -> list[ToolSpec]:
        # Listing has no side effects: a connection that broke under it is replaced
        # and the listing asked again, once.
        for attempt in (1, 2):
            conn = await self.connection(config)
            assert conn.client is not None
            try:
                tools: list[mcp_types.Tool] = []
                cursor: str | None = None
                for _ in range(MAX_PAGES):
                    page = await conn.client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                return [_spec(config, tool) for tool in tools]
            except MCPError as exc:
                if exc.error.code != mcp_types.CONNECTION_CLOSED and conn.usable():
                    raise McpUnavailableError(f"unavailable: {_describe(exc)}") from None
                self._retire(conn)
                if attempt == 2:
                    raise McpUnavailableError(f"unavailable: {_describe(exc)}") from None
            except Exception as exc:
                self._retire(conn)
                raise McpUnavailableError(f"unavailable: {_describe(exc)}") from None
        raise AssertionError("unreachable")

    async def call(self, config: McpConfig, tool: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        for attempt in (1, 2):
            try:
                conn = await self.connection(config)
            except McpUnavailableError as exc:
                raise ToolError(f"MCP server {config.name} {exc}") from None
            assert conn.client is not None
            probe = _Probe()
            token = _PROBE.set(probe)
            try:
                return await conn.client.call_tool(tool, arguments, read_timeout_seconds=config.timeout)
            except MCPError as exc:
                code = exc.error.code
                if code == mcp_types.REQUEST_TIMEOUT:
                    raise ToolError(f"{tool} did not answer within {config.timeout:g} s") from None
                broken = code == mcp_types.CONNECTION_CLOSED or probe.refused > 0 or not conn.usable()
                if not broken:  # the server's own answer, e.g. an unknown tool or bad arguments
                    raise ToolError(_describe(exc)) from None
                self._retire(conn)
                if attempt == 1 and probe.surely_undelivered:
                    continue
                raise ToolError(
                    f"the connection to MCP server {config.name} broke during the call ({_describe(exc)})"
                ) from None
            except Exception as exc:  # a reply the SDK could not read, say
                raise ToolError(f"MCP server {config.name}: {_describe(exc)}") from None
            finally:
                _PROBE.reset(token)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for conn in list(self.connections.values()):
            self._retire(conn)
        if self.stopping:
            await asyncio.wait(list(self.stopping), timeout=10)


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    with _pools_lock:
        pool = _pools.get(loop)
        if pool is None:
            pool = _pools[loop] = _Pool()
        return pool


async def close_pool() -> None:
    """Close this event loop's connections (stdio servers are stopped)."""
    with _pools_lock:
        pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


@atexit.register
def _close_at_exit() -> None:
    """At process exit, close the pools of loops still running in other threads (the
    background loop): stdio servers get their orderly shutdown."""
    with _pools_lock:
        loops = list(_pools.keys())
    for loop in loops:
        if loop.is_running() and not loop.is_closed():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close_pool(), loop).result(10)


# --- tools ------------------------------------------------------------------------------------


def _spec(config: McpConfig, tool: mcp_types.Tool) -> ToolSpec:
    schema = tool.input_schema if isinstance(tool.input_schema, dict) else {"type": "object"}
    return ToolSpec(
        name=f"mcp:{config.name}/{tool.name}",
        description=tool.description or tool.title or "",
        parameters=schema,
    )


def result_text(result: mcp_types.CallToolResult) -> str:
    """A call's content blocks as text for the model: text as is, everything else named
    (an image or a file is no use to a text prompt, and would fill it)."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent):
            parts.append(f"[image: {block.mime_type}]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio: {block.mime_type}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource: {block.name} {block.uri}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            mime = block.resource.mime_type or "unknown type"
            parts.append(f"[resource: {block.resource.uri} ({mime})]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class McpTool:
    """One tool of one MCP server (``mcp:<server>/<tool>``)."""

    def __init__(self, config: McpConfig, spec: ToolSpec) -> None:
        self.config = config
        self.spec = spec
        self.tool_name = spec.name.partition("/")[2]
        self.status = f"calling {config.name}/{self.tool_name}…"
        # Connecting may come first.
        self.timeout = config.timeout + CONNECT_TIMEOUT

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        result = await _pool().call(self.config, self.tool_name, arguments)
        return ToolOutput(ok=not result.is_error, content=result_text(result))


# --- what the rest of the site calls ----------------------------------------------------------


async def _config(server: McpServer | McpConfig) -> McpConfig:
    return server if isinstance(server, McpConfig) else await db_call(McpConfig.of)(server)


async def list_tools(server: McpServer | McpConfig, *, fresh: bool = False) -> list[ToolSpec]:
    """The server's tools, named ``mcp:<server>/<tool>``; cached LIST_TTL, answered within
    LIST_TIMEOUT. Raises McpUnavailableError ("unavailable: …") for a server that cannot be
    used now."""
    return await _pool().specs(await _config(server), fresh=fresh)


def _configs(names: Iterable[str] | None) -> list[McpConfig]:
    rows = McpServer.objects.all() if names is None else McpServer.objects.filter(name__in=list(names))
    return [McpConfig.of(row) for row in rows]


async def tools_for(names: list[str]) -> tuple[list[Tool], list[str]]:
    """The tools among ``names`` ("mcp:<server>/<tool>") that exist now, in order, and
    the names that are unavailable (unknown, disabled or dead server, unknown tool)."""
    wanted = {name: split_mcp_name(name) for name in names}
    servers = {parts[0] for parts in wanted.values() if parts}
    configs = {config.name: config for config in await db_call(_configs)(servers)} if servers else {}

    async def listed(config: McpConfig) -> dict[str, ToolSpec]:
        try:
            return {spec.name: spec for spec in await list_tools(config)}
        except McpUnavailableError:
            return {}

    found = await asyncio.gather(*(listed(config) for config in configs.values()))
    specs = {name: spec for listing in found for name, spec in listing.items()}
    tools: list[Tool] = []
    unavailable: list[str] = []
    for name, parts in wanted.items():
        spec = specs.get(name)
        if parts is None or spec is None:
            unavailable.append(name)
        else:
            tools.append(McpTool(configs[parts[0]], spec))
    return tools, unavailable


async def available_mcp_tools() -> list[dict[str, Any]]:
    """Every enabled server's tools for ``GET /api/tools``: ``{"name", "description",
    "server", "available"}``, plus ``"error"`` when the server cannot be used now. A
    dead server's tools are the ones it last listed in this process; if it never did,
    one entry ``mcp:<server>/*`` stands for them."""
    configs = [config for config in await db_call(_configs)(None) if config.enabled]
    pool = _pool()

    async def entries(config: McpConfig) -> list[dict[str, Any]]:
        try:
            specs = await list_tools(config)
        except McpUnavailableError as exc:
            known = pool.last_known.get(config.id)
            if not known:
                known = [ToolSpec(name=f"mcp:{config.name}/*", description="", parameters={})]
            return [
                {
                    "name": spec.name,
                    "description": spec.description,
                    "server": config.name,
                    "available": False,
                    "error": str(exc),
                }
                for spec in known
            ]
        return [
            {"name": spec.name, "description": spec.description, "server": config.name, "available": True}
            for spec in specs
        ]

    listed = await asyncio.gather(*(entries(config) for config in configs))
    return [entry for group in listed for entry in group]
