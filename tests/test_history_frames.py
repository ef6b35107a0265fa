"""Issue 11, item 20: no frame outgrows what the server may send. ``history`` and ``turn``
events leave the substrate of bot turns out (prompt, raw completion, framing); it is
served on demand by ``get_turn`` (bounded to one frame) and ``GET /api/turns/{id}``
(whole), under the channel's read rules."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from django.conf import settings
from django.contrib.auth.models import Group
from websockets.typing import Origin

from chat import services
from chat.framing import effective_framing, effective_params
from chat.models import Channel, Session, Turn
from chat.permissions import ensure_moderators_group
from chat.realtime.async_db import db_call
from tests.conftest import client_for, make_user
from tests.processes import live_servers
from tests.ws_helpers import open_socket, receive, receive_until, token_for

pytestmark = [pytest.mark.django_db(transaction=True)]

SUBSTRATE = {"prompt", "raw_completion", "framing"}
SENTENCE = "the quick brown fox jumps over a lazy dog while the model keeps talking about it"
WORDS = SENTENCE.split()


def prose(chars: int, seed: int) -> str:
    words = [WORDS[(seed + i * 7) % len(WORDS)] for i in range(chars // 4 + 1)]
    return " ".join(words)[:chars]


def long_session(
    channel: Channel, exchanges: int, *, chars: int = 300, context_chars: int = 32_000
) -> Session:
    """A session of ``exchanges`` user turns and bot answers, as a real model would leave
    it: every bot turn keeps the prompt it saw (the transcript before it, cut to the
    context window) and its raw completion."""
    session = channel.active_session
    assert session is not None and channel.owner is not None
    framing, params = effective_framing(channel.framing), effective_params(channel.params)
    transcript = framing["preamble"]
    rows = []
    for i in range(exchanges):
        asked = f"Question {i}: {prose(chars, i)}"
        transcript += f"{framing['user_prefix']}{asked}{framing['turn_suffix']}"
        answer = f"Answer {i}: {prose(chars, i + 3)}"
        rows += [
            Turn(session=session, role="user", author=channel.owner, text=asked),
            Turn(
                session=session,
                role="bot",
                text=answer,
                finish_reason="stop",
                reasoning=prose(chars // 3, i + 5),
                prompt=(transcript + framing["bot_prefix"])[-context_chars:],
                raw_completion=answer + framing["turn_suffix"],
                framing=framing,
                params=params,
                provider="local",
                model="big-model",
                usage={"prompt_tokens": 8000, "completion_tokens": 90, "estimated": False},
                timings={"ttft_ms": 180, "duration_ms": 2100},
            ),
        ]
        transcript += f"{framing['bot_prefix']}{answer}{framing['turn_suffix']}"
    Turn.objects.bulk_create(rows)
    return session


def frame_bytes(frame: str | bytes) -> int:
    return len(frame.encode() if isinstance(frame, str) else frame)


# --- real servers started as in production ------------------------------------------------


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def server(request, django_db_setup, django_db_blocker):
    """One server process with the production limits (daphne's
    --websocket-max-message-size, uvicorn's --ws-max-size: MAX_FRAME_BYTES)."""
    with live_servers(request.param, 1) as hosts:
        yield hosts[0]


def connect(host: str, path: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # No client-side limit: the test measures what the server sends.
    return websockets.connect(
        f"ws://{host}{path}",
        origin=Origin(f"http://{host}"),
        additional_headers=headers,
        open_timeout=10,
        max_size=None,
    )


async def next_frame(ws: Any, timeout: float = 15) -> tuple[dict[str, Any], int]:
    """The next frame other than presence, and its size in bytes."""
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            frame = json.loads(raw)
            if frame["type"] != "presence":
                return frame, frame_bytes(raw)


@pytest.mark.asyncio
async def test_a_500_turn_channel_with_big_prompts_connects_and_serves_each_turn_on_demand(server, channel):
    session = await db_call(long_session)(channel, 250)
    bot = await db_call(lambda: Turn.objects.filter(session=session, role="bot").order_by("-id")[3])()
    async with connect(server, "/ws/lobby?watch=1") as ws:
        history, size = await next_frame(ws)
        assert history["type"] == "history"
        assert size <= settings.MAX_FRAME_BYTES
        assert history["has_more"] is True and len(history["turns"]) == 50
        bots = [t for t in history["turns"] if t["role"] == "bot"]
        assert bots and all(SUBSTRATE.isdisjoint(t) for t in bots)
        assert all({"text", "reasoning", "params", "usage", "timings"} <= set(t) for t in bots)

        await ws.send(json.dumps({"type": "get_turn", "id": bot.pk}))
        detail, size = await next_frame(ws)
        assert detail["type"] == "turn_detail" and detail["id"] == bot.pk
        assert size <= settings.MAX_FRAME_BYTES
        assert (detail["prompt"], detail["raw_completion"]) == (bot.prompt, bot.raw_completion)
        assert detail["framing"] == bot.framing and "prompt_truncated" not in detail

        await ws.send(json.dumps({"type": "ping"}))
        assert (await next_frame(ws))[0]["type"] == "pong"  # still open: no 1011


@pytest.mark.asyncio
async def test_fifty_messages_of_the_longest_length_fit_one_history_frame_that_says_it_has_more(
    server, channel
):
    session = await db_call(lambda: channel.active_session)()
    longest = "é" * settings.MAX_MESSAGE_CHARS  # two bytes each in UTF-8
    turns = await db_call(Turn.objects.bulk_create)(
        [Turn(session=session, role="user", author_id=channel.owner_id, text=longest) for _ in range(50)]
    )
    async with connect(server, "/ws/lobby?watch=1") as ws:
        history, size = await next_frame(ws)
        assert size <= settings.MAX_FRAME_BYTES
        kept = [t["id"] for t in history["turns"]]
        assert 0 < len(kept) < 50 and history["has_more"] is True
        assert kept == [t.pk for t in turns][-len(kept) :]  # the newest ones, oldest first
        await ws.send(json.dumps({"type": "ping"}))
        assert (await next_frame(ws))[0]["type"] == "pong"


# --- get_turn over WebSocket ------------------------------------------------------------


def a_bot_turn(channel: Channel, *, prompt: str = "User: hi\n\nAssistant:", hidden: bool = False) -> Turn:
    session = channel.active_session
    assert session is not None
    return Turn.objects.create(
        session=session,
        role="bot",
        text="Hello.",
        finish_reason="stop",
        prompt=prompt,
        raw_completion="Hello.\n\nUser:",
        framing=effective_framing(channel.framing),
        params=effective_params(channel.params),
        provider="demo",
        model="demo",
        hidden=hidden,
    )


@pytest.mark.asyncio
async def test_get_turn_answers_only_the_sender_with_every_field_of_the_turn(channel, alice):
    bot = await db_call(a_bot_turn)(channel)
    other, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(other)
    asker, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(asker)
    await asker.send_json_to({"type": "get_turn", "id": bot.pk})
    detail = await receive(asker)
    expected = await db_call(lambda: Turn.objects.get(pk=bot.pk).to_dict(substrate=True))()
    assert detail == {"type": "turn_detail", "channel": "lobby", **expected}
    await other.send_json_to({"type": "ping"})
    assert (await receive(other))["type"] == "pong"  # the detail went to the asker alone
    await other.disconnect()
    await asker.disconnect()


@pytest.mark.asyncio
async def test_a_watcher_may_get_a_turn_of_an_archived_session_of_its_channel(channel, alice):
    bot = await db_call(a_bot_turn)(channel)
    await db_call(services.reset)(channel=channel, user=alice)
    socket, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(socket)
    await socket.send_json_to({"type": "get_turn", "id": bot.pk})
    assert (await receive(socket))["type"] == "turn_detail"
    await socket.disconnect()


@pytest.mark.asyncio
async def test_get_turn_of_a_hidden_turn_or_another_channels_turn_is_not_found(channel, private_channel, bob):
    hidden = await db_call(a_bot_turn)(channel, hidden=True)
    elsewhere = await db_call(a_bot_turn)(private_channel)
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(bob))
    await receive(socket)
    for turn_id in (hidden.pk, elsewhere.pk, 10**9):
        await socket.send_json_to({"type": "get_turn", "id": turn_id})
        error = await receive(socket)
        assert (error["type"], error["code"]) == ("error", "not_found")
    await socket.disconnect()


@pytest.mark.asyncio
async def test_a_moderator_gets_a_hidden_turn(channel):
    hidden = await db_call(a_bot_turn)(channel, hidden=True)

    def moderator() -> Any:
        ensure_moderators_group()
        user = make_user("mona")
        user.groups.add(Group.objects.get(name="moderators"))
        return user

    socket, _, _ = await open_socket("/ws/lobby?watch=1", token=await token_for(await db_call(moderator)()))
    await receive(socket)
    await socket.send_json_to({"type": "get_turn", "id": hidden.pk})
    detail = await receive(socket)
    assert detail["type"] == "turn_detail" and detail["hidden"] is True
    await socket.disconnect()


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [None, "17", 1.5, True, 0, -3, 2**63, [1], {"id": 1}])
async def test_get_turn_without_a_whole_positive_id_is_invalid(channel, bad):
    socket, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(socket)
    message: dict[str, Any] = {"type": "get_turn"}
    if bad is not None:
        message["id"] = bad
    await socket.send_json_to(message)
    error = await receive(socket)
    assert (error["type"], error["code"], list(error["fields"])) == ("error", "invalid", ["id"])
    await socket.disconnect()


@pytest.mark.asyncio
async def test_a_prompt_longer_than_a_frame_is_cut_in_turn_detail_keeping_its_end(channel):
    prompt = "".join(f"line {i}: {prose(60, i)}\n" for i in range(6000))  # ~400 KB, a long context
    bot = await db_call(a_bot_turn)(channel, prompt=prompt)
    socket, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(socket)
    await socket.send_json_to({"type": "get_turn", "id": bot.pk})
    output = await socket.receive_output(timeout=5)
    while json.loads(output["text"])["type"] == "presence":
        output = await socket.receive_output(timeout=5)
    assert frame_bytes(output["text"]) <= settings.MAX_FRAME_BYTES
    detail = json.loads(output["text"])
    assert detail["type"] == "turn_detail" and detail["prompt_truncated"] is True
    assert prompt.endswith(detail["prompt"]) and len(detail["prompt"]) > settings.MAX_FRAME_BYTES // 2
    assert detail["raw_completion"] == bot.raw_completion and "raw_completion_truncated" not in detail
    await socket.disconnect()


@pytest.mark.asyncio
async def test_get_turn_is_rate_limited_per_socket(channel):
    bot = await db_call(a_bot_turn)(channel)
    socket, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(socket)
    for _ in range(30):
        await socket.send_json_to({"type": "get_turn", "id": bot.pk})
    answers = [await receive(socket) for _ in range(30)]
    limited = [a for a in answers if a["type"] == "error"]
    assert limited and all(a["code"] == "rate_limited" and a["retry_after"] >= 1 for a in limited)
    assert sum(a["type"] == "turn_detail" for a in answers) >= 5
    await socket.disconnect()


# --- broadcast turn events --------------------------------------------------------------


@pytest.fixture
def unlimited(settings):
    settings.MESSAGES_PER_MINUTE = 0


@pytest.mark.asyncio
async def test_a_finished_bot_turn_is_broadcast_without_its_substrate(channel, alice, unlimited):
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(socket)
    await socket.send_json_to({"type": "message", "text": "I feel like talking"})
    frames = await receive_until(socket, "done")
    bot_event = [f for f in frames if f["type"] == "turn" and f["role"] == "bot"][-1]
    assert SUBSTRATE.isdisjoint(bot_event)
    saved = await db_call(Turn.objects.get)(pk=bot_event["id"])
    assert saved.prompt and saved.raw_completion  # kept, served by get_turn and the API
    await socket.disconnect()


# --- GET /api/turns/{id} ----------------------------------------------------------------


def test_the_api_serves_a_whole_turn_with_its_long_prompt(channel):
    prompt = "x" * (3 * settings.MAX_FRAME_BYTES)
    bot = a_bot_turn(channel, prompt=prompt)
    response = client_for().get(f"/api/turns/{bot.pk}")
    assert response.status_code == 200
    assert response.json() == Turn.objects.get(pk=bot.pk).to_dict(substrate=True)
    assert response.json()["prompt"] == prompt and "prompt_truncated" not in response.json()


def test_the_api_turn_follows_the_channels_read_rules(private_channel, alice, bob, carol, admin_user):
    bot = a_bot_turn(private_channel)
    hidden = a_bot_turn(private_channel, hidden=True)
    key = private_channel.watch_key
    cases = [
        (None, bot, "", 404),
        (carol, bot, "", 404),
        (None, bot, f"?key={key}", 200),
        (None, bot, "?key=wrong", 404),
        (bob, bot, "", 200),
        (alice, bot, "", 200),
        (admin_user, bot, "", 200),
        (bob, hidden, "", 404),
        (None, hidden, f"?key={key}", 404),
        (admin_user, hidden, "", 200),
    ]
    got = [client_for(user).get(f"/api/turns/{turn.pk}{query}").status_code for user, turn, query, _ in cases]
    assert got == [status for *_, status in cases]


def test_a_turn_of_an_archived_session_follows_its_channels_access(private_channel, alice, bob, carol):
    bot = a_bot_turn(private_channel)
    services.reset(channel=private_channel, user=alice)
    assert client_for(bob).get(f"/api/turns/{bot.pk}").status_code == 200
    assert client_for(carol).get(f"/api/turns/{bot.pk}").status_code == 404


@pytest.mark.parametrize("turn_id", ["abc", "1.5", "-1", "²", "9" * 30])
def test_an_api_turn_id_that_is_no_whole_number_is_not_found(channel, turn_id):
    assert client_for().get(f"/api/turns/{turn_id}").status_code == 404


def test_the_json_answer_to_a_message_still_carries_the_whole_bot_turn(channel, alice, unlimited):
    response = client_for(alice).post("/api/channels/lobby/messages", {"text": "hello there"}, format="json")
    assert response.status_code == 200
    assert {"prompt", "raw_completion", "framing"} <= set(response.json()["bot_turn"])
