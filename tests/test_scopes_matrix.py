"""The scope matrix (issue 18), generated from the urlconf and the consumer's table so it
cannot miss an endpoint or a message type:

- every route under /api/ is a DRF view that names a scope for each method it serves,
  checks it (TokenScopes), and shows it in the OpenAPI document; a view that names none
  is refused to everyone;
- for every endpoint and method, a token without the scope gets 403 naming it, and a
  token with it gets past the check;
- on a real server: every WebSocket message type likewise (the socket stays open), a
  socket needs chats:read to open, a read-only token watches and reads but never writes.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from django.contrib.auth.models import AnonymousUser
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate
from rest_framework.views import APIView
from websockets.typing import Origin

from channels_app.consumers import CONNECT_SCOPE, MESSAGE_SCOPES, READ_TYPES, WRITE_TYPES
from chat.api import docs
from chat.api.scopes import TokenScopes
from chat.models import SCOPES, ApiToken, hash_token
from chat.realtime.async_db import db_call
from chat.schemas import SOCKET_MESSAGES
from tests.processes import live_servers

# Routes under /api/ that are not DRF views, and why no token is read there.
PLAIN_PAGES = {"api/docs": docs.api_docs}  # the HTML page of the public schema; reads no token
DRF_ONLY = ("options", "head")  # answered by DRF itself (HEAD as GET)


def api_routes() -> Iterator[tuple[str, Any]]:
    """(route, callback) of every URL pattern of the site whose path starts with api/."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    for route, callback in walk(get_resolver().url_patterns, ""):
        if route.lstrip("^").startswith("api/"):
            yield route.lstrip("^"), callback


def operations() -> list[tuple[str, str, Any]]:
    """(route, method, declared scope) of every method of every API view."""
    found = []
    for route, callback in api_routes():
        view = getattr(callback, "cls", None)
        if view is None:
            continue
        for method in view.http_method_names:
            if method not in DRF_ONLY and hasattr(view, method):
                found.append(
                    (route, method, (getattr(view, "required_scopes", None) or {}).get(method.upper()))
                )
    return found


def concrete(route: str) -> str:
    """The route with its parameters filled: nothing need exist for the scope check,
    which comes first."""
    return "/" + re.sub(r"<(?:\w+:)?\w+>", "0", route)


def needed_list(needed: str | tuple[str, ...] | None) -> list[str]:
    return [] if needed is None else [needed] if isinstance(needed, str) else list(needed)


def test_the_walk_sees_every_api_route():
    routes = {route for route, _ in api_routes()}
    assert {"api/channels", "api/me/tokens", "api/me/tokens/<str:token_id>", "api/schema"} <= routes
    assert len(operations()) > 60


def test_every_api_view_names_a_scope_for_each_method_and_checks_it():
    problems = []
    for route, callback in api_routes():
        view = getattr(callback, "cls", None)
        if view is None:
            if PLAIN_PAGES.get(route) is not callback:
                problems.append(f"{route}: not a DRF view, so no scope is checked")
            continue
        if not issubclass(view, APIView):
            problems.append(f"{route}: {view.__name__} is not an APIView")
            continue
        if TokenScopes not in [type(p) for p in view().get_permissions()]:
            problems.append(f"{route}: {view.__name__} does not check scopes (TokenScopes)")
        declared = getattr(view, "required_scopes", None)
        if not isinstance(declared, dict):
            problems.append(f"{route}: {view.__name__} has no required_scopes")
            continue
        served = {m.upper() for m in view.http_method_names if m not in DRF_ONLY and hasattr(view, m)}
        for method in sorted(served - set(declared)):
            problems.append(f"{route}: {method} names no scope")
        for method in sorted(set(declared) - served):
            problems.append(f"{route}: names a scope for {method}, which it does not serve")
        for method, needed in declared.items():
            if not set(needed_list(needed)) <= set(SCOPES):
                problems.append(f"{route}: {method} names an unknown scope {needed!r}")
    assert problems == []


class Undeclared(APIView):
    required_scopes = {"GET": "chats:read"}  # and nothing for POST

    def get(self, request: Any) -> Response:
        return Response({"ok": True})

    def post(self, request: Any) -> Response:
        return Response({"ok": True})


class Bare(APIView):
    def get(self, request: Any) -> Response:
        return Response({"ok": True})


def test_a_view_or_method_that_names_no_scope_is_refused_to_everyone(admin_user):
    factory = APIRequestFactory()
    for view, method in ((Undeclared, "post"), (Bare, "get")):
        request = getattr(factory, method)("/api/new-thing")
        force_authenticate(request, user=admin_user)  # a session-like login: every scope
        response = view.as_view()(request)
        assert response.status_code == 403, (view, method)
        assert response.data["code"] == "forbidden"
        assert "names no scope" in response.data["detail"]
    request = factory.get("/api/new-thing")
    force_authenticate(request, user=AnonymousUser())
    assert Undeclared.as_view()(request).status_code in (401, 403)
    request = factory.get("/api/new-thing")
    force_authenticate(request, user=admin_user)
    assert Undeclared.as_view()(request).status_code == 200


def token(user: Any, scopes: list[str]) -> str:
    raw = secrets.token_urlsafe(32)
    ApiToken.objects.create(
        user=user, name=f"t{secrets.token_hex(4)}", scopes=scopes, key_hash=hash_token(raw)
    )
    return raw


def call(raw: str, method: str, path: str) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    if method == "get":
        return client.get(path)
    return getattr(client, method)(path, {}, format="json")


def scope_refusal(response: Any) -> str | None:
    """The scope named by a 403 for want of one, or None."""
    if response.status_code != 403:
        return None
    found = re.fullmatch(r"This token lacks the scopes? (.+)\.", response.json().get("detail", ""))
    return found.group(1) if found else None


@pytest.mark.django_db
def test_the_rest_matrix(alice, channel):
    """Every endpoint and method: without its scope, 403 naming it; with it, past the
    check (whatever the view answers next)."""
    tokens: dict[frozenset[str], str] = {}

    def with_scopes(scopes: list[str]) -> str:
        key = frozenset(scopes)
        if key not in tokens:
            tokens[key] = token(alice, [s for s in SCOPES if s in key])
        return tokens[key]

    problems = []
    for route, method, needed in operations():
        path, label = concrete(route), f"{method.upper()} /{route}"
        for scope in needed_list(needed):
            response = call(with_scopes([s for s in SCOPES if s != scope]), method, path)
            body = response.json() if response.content else None
            if body != {"detail": f"This token lacks the scope {scope}.", "code": "forbidden"}:
                problems.append(f"{label} without {scope}: {response.status_code} {body}")
        held = needed_list(needed) or ["files:write"]  # None: any token at all
        response = call(with_scopes(held), method, path)
        if scope_refusal(response) is not None:
            problems.append(f"{label} with {held}: refused for a scope: {response.json()}")
    assert problems == []


@pytest.mark.django_db
def test_head_needs_what_get_needs_and_options_needs_nothing(alice, channel):
    writer = token(alice, ["chats:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {writer}")
    assert client.head("/api/channels").status_code == 403
    assert client.options("/api/channels").status_code == 200
    reader = token(alice, ["chats:read"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reader}")
    assert client.head("/api/channels").status_code == 200
    assert client.put("/api/channels", {}, format="json").status_code == 405  # not a scope refusal


@pytest.mark.django_db
def test_the_openapi_document_names_every_operations_scope():
    document = APIClient().get("/api/schema?format=json").json()
    expected = {
        ("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route), method): needed_list(needed)
        for route, method, needed in operations()
        if route != "api/schema"
    }
    seen = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                seen[(path, method)] = operation["x-required-scopes"]
                assert "Token scope:" in operation["description"], (path, method)
                assert "403" in operation["responses"], (path, method)
    assert seen == expected


@pytest.mark.django_db
def test_a_read_only_token_reads_but_never_writes_on_rest(alice, bob, channel):
    reader = token(alice, ["chats:read"])
    assert call(reader, "get", "/api/channels/lobby").status_code == 200
    assert call(reader, "get", f"/api/sessions/{channel.active_session.pk}/turns").status_code == 200
    refused = call(reader, "post", "/api/channels/lobby/messages")
    assert refused.status_code == 403 and scope_refusal(refused) == "chats:write"
    # a PATCH that deletes needs chats:delete, as DELETE does
    writer = token(alice, ["chats:read", "chats:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {writer}")
    path = f"/api/sessions/{channel.active_session.pk}"
    assert scope_refusal(client.patch(path, {"status": "deleted"}, format="json")) == "chats:delete"
    assert client.patch(path, {"title": "renamed"}, format="json").status_code == 200


@pytest.mark.django_db
def test_admin_moderate_is_the_moderators_own_power(mona, alice, private_channel):
    """A moderator's token without admin:moderate acts as the plain user: no private
    channel of others to read, nothing of others' to change."""
    plain = token(mona, [s for s in SCOPES if s != "admin:moderate"])
    full = token(mona, list(SCOPES))
    assert call(plain, "get", "/api/channels/backroom").status_code == 404
    assert call(full, "get", "/api/channels/backroom").status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert client.patch("/api/channels/backroom", {"title": "x"}, format="json").status_code == 404
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {full}")
    assert client.patch("/api/channels/backroom", {"title": "x"}, format="json").status_code == 200


# --- the WebSocket, on a real server ----------------------------------------------------------


def test_every_message_type_names_a_scope():
    assert set(MESSAGE_SCOPES) == WRITE_TYPES | READ_TYPES
    assert set(SOCKET_MESSAGES) <= set(MESSAGE_SCOPES)
    assert set(MESSAGE_SCOPES.values()) <= set(SCOPES)
    assert all(MESSAGE_SCOPES[kind] == "chats:write" for kind in WRITE_TYPES)
    assert CONNECT_SCOPE == "chats:read"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 1) as hosts:
        yield hosts[0]


def connect(host: str, path: str, raw: str | None) -> Any:
    return websockets.connect(
        f"ws://{host}{path}",
        origin=Origin(f"http://{host}"),
        additional_headers={"Authorization": f"Bearer {raw}"} if raw else {},
        open_timeout=10,
    )


async def frame(ws: Any, timeout: float = 10) -> dict[str, Any]:
    """The next frame but presence."""
    async with asyncio.timeout(timeout):
        while True:
            data = json.loads(await ws.recv())
            if data["type"] != "presence":
                return data


async def until_pong(ws: Any) -> list[dict[str, Any]]:
    """Sends a ping; every frame up to its pong (the socket answers in order)."""
    await ws.send(json.dumps({"type": "ping"}))
    seen = []
    while (got := await frame(ws))["type"] != "pong":
        seen.append(got)
    return seen


async def close_code(ws: Any, timeout: float = 10) -> int | None:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


pytest_live = [pytest.mark.django_db(transaction=True)]


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_matrix(server, channel, alice):
    """Each message type: without its scope, `error` forbidden naming it and the socket
    stays open; with it, past the check (a bare frame then fails its schema, or runs)."""
    problems = []
    for kind, scope in sorted(MESSAGE_SCOPES.items()):
        if scope == CONNECT_SCOPE:
            continue  # a socket without it does not open (below)
        lacking = await db_call(token)(alice, [s for s in SCOPES if s != scope])
        async with connect(server, "/ws/lobby", lacking) as ws:
            assert (await frame(ws))["type"] == "history"
            await ws.send(json.dumps({"type": kind}))
            answer = await frame(ws)
            expected = {
                "type": "error",
                "code": "forbidden",
                "text": f"This token lacks the scope {scope}.",
                "channel": "lobby",
            }
            if answer != expected:
                problems.append(f"{kind} without {scope}: {answer}")
            await until_pong(ws)  # still open
        holding = await db_call(token)(alice, ["chats:read", scope])
        async with connect(server, "/ws/lobby", holding) as ws:
            assert (await frame(ws))["type"] == "history"
            await ws.send(json.dumps({"type": kind}))
            for got in await until_pong(ws):
                if got["type"] == "error" and "lacks the scope" in got["text"]:
                    problems.append(f"{kind} with {scope}: {got}")
    assert problems == []


@pytest.mark.django_db(transaction=True)
async def test_a_socket_needs_chats_read_to_open(server, channel, alice):
    for path in ("/ws/lobby", "/ws/lobby?watch=1"):
        writer = await db_call(token)(alice, ["chats:write", "chats:delete", "files:write"])
        async with connect(server, path, writer) as ws:
            assert await frame(ws) == {
                "type": "error",
                "code": "forbidden",
                "text": f"This token lacks the scope {CONNECT_SCOPE}.",
                "channel": "lobby",
            }
            assert await close_code(ws) == 4003


@pytest.mark.django_db(transaction=True)
async def test_a_read_only_token_watches_and_reads_but_never_writes(server, channel, alice):
    reader = await db_call(token)(alice, ["chats:read"])
    async with (
        connect(server, "/ws/lobby?watch=1", reader) as watch,
        connect(server, "/ws/lobby", reader) as ws,
    ):
        assert (await frame(watch))["type"] == "history"
        assert (await frame(ws))["type"] == "history"
        await ws.send(json.dumps({"type": "get_history"}))
        assert (await frame(ws))["type"] == "history"
        for kind in sorted(WRITE_TYPES):
            await ws.send(json.dumps({"type": kind, "text": "hello", "role": "user"}))
            answer = await frame(ws)
            assert (answer["code"], answer["text"]) == (
                "forbidden",
                "This token lacks the scope chats:write.",
            )
        assert await until_pong(ws) == []
        assert await until_pong(watch) == []  # nothing was written
