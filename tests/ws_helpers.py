"""Helpers for WebSocket tests: connecting through the real ASGI application (origin
check and auth middleware included), and a client-side model of the channel state."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chat.models import ApiToken
from chat.realtime.async_db import db_call

ORIGIN = (b"origin", b"http://localhost")


def application() -> Any:
    from chatsite.asgi import application as app

    return app


@db_call
def _issue_token(user: Any) -> str:
    return ApiToken.issue(user)


@db_call
def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


# Coroutine functions rather than the bare db_call wrappers (typed as returning an
# Awaitable), so that sync tests can hand them to asyncio.run as well as await them.
async def token_for(user: Any) -> str:
    return await _issue_token(user)


async def session_cookie_for(user: Any) -> str:
    return await _session_cookie(user)


async def open_socket(
    path: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    origin: bytes | None = b"http://localhost",
    host: bytes | None = b"localhost",
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> tuple[WebsocketCommunicator, bool, Any]:
    # WebsocketCommunicator sends no Host header of its own; a browser always does, and
    # the origin check compares the Origin with it.
    headers = [(b"host", host)] if host is not None else []
    headers += list(extra_headers)
    if origin is not None:
        headers.append((b"origin", origin))
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application(), path, headers=headers)
    connected, detail = await communicator.connect(timeout=5)
    return communicator, connected, detail


async def receive(communicator: WebsocketCommunicator, timeout: float = 5) -> dict[str, Any]:
    """The next frame, skipping presence (which comes whenever counts change)."""
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message["type"] != "presence":
            return message


async def receive_until(
    communicator: WebsocketCommunicator, kind: str, timeout: float = 10
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await receive(communicator, timeout=timeout)
            frames.append(frame)
            if frame["type"] == kind:
                return frames


async def close_code(communicator: WebsocketCommunicator, timeout: float = 5) -> int:
    """Read frames until the server closes the socket; return its close code."""
    async with asyncio.timeout(timeout):
        while True:
            output = await communicator.receive_output(timeout)
            if output["type"] == "websocket.close":
                return int(output.get("code", 1000))


class ChannelState:
    """What a client knows: ``history``, then events applied one by one (turn events
    are upserts by id, so a turn seen twice is harmless)."""

    def __init__(self, history: dict[str, Any]):
        self.session = history["session"]
        self.framing = history["framing"]
        self.params = history["params"]
        self.member_params = history["member_params"]
        self.instruction = history["instruction"]
        self.turns = {t["id"]: t for t in history["turns"]}
        self.generating = copy.deepcopy(history["generating"])
        self.seq = history["seq"]

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if "seq" in event:
            assert event["seq"] == self.seq + 1, f"gap or repeat: {self.seq} then {event['seq']}"
            self.seq = event["seq"]
        if kind == "turn":
            turn = {k: v for k, v in event.items() if k not in ("type", "channel", "seq")}
            if turn["session"] == self.session:
                self.turns[turn["id"]] = turn
        elif kind == "turn_removed":
            self.turns.pop(event["id"], None)
        elif kind == "thinking":
            self.generating = {"turn_id": event["turn_id"], "text": "", "reasoning": ""}
        elif kind == "token" and self.generating:
            self.generating["text"] += event["data"]
        elif kind == "reasoning" and self.generating:
            self.generating["reasoning"] += event["data"]
        elif kind == "done":
            self.generating = None
        elif kind == "reset":
            self.session, self.turns = event["session"], {}
        elif kind == "channel_updated":
            self.framing, self.params = event["framing"], event["params"]
            self.member_params, self.instruction = event["member_params"], event["instruction"]

    def snapshot(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "framing": self.framing,
            "params": self.params,
            "member_params": self.member_params,
            "instruction": self.instruction,
            "turns": [self.turns[i] for i in sorted(self.turns)],
            "generating": self.generating,
            "seq": self.seq,
        }
