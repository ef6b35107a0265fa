"""Retrieval inside a reply (issue 16), through the real transports: a WebSocket through
the whole ASGI application, REST, and SSE and sockets on real server processes; the
prompt checked in what a real HTTP model server (tests/fake_models.py) received.

- the passages of the channel's bases and of the message's own reach the model, each
  named by its document, page and base, numbered as the ``sources`` that the bot turn
  stores, the ``sources`` event announces (after ``thinking``, before any token) and
  history gives back (mid-reply too);
- nothing over the threshold: the prompt says so in words;
- a base whose embedding service is down is searched by keywords, and the reply comes;
- a long file sent with the message gives its best passages, not its head;
- a message naming a base it may not use is refused naming the id; a private room's
  sources reach its watch link and nobody else."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import numpy as np
import pytest
import websockets
from httpx_sse import connect_sse
from websockets.typing import Origin

from chat.models import ApiToken, Turn
from chat.realtime.async_db import db_call
from chat.realtime.history import bounded_replay
from chat.services import add_member, create_channel, post_message
from tests.conftest import (
    add_provider,
    channel_events,
    client_for,
    use_provider,
    use_slow_model,
    wait_for_done,
)
from tests.knowledge_rows import HANDBOOK, add_document, make_base
from tests.processes import free_port, live_servers
from tests.test_attachment_prompts import document_upload, uploads_in_tmp  # noqa: F401 (a fixture)
from tests.ws_helpers import open_socket, receive, receive_until, token_for

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "How many days do I have to return a purchase for a refund?"


def bot_turn(channel) -> Turn:
    return Turn.objects.filter(session__channel=channel, role="bot").latest("id")


def last_user_content(server) -> str:
    content = server.requests[-1]["messages"][-1]["content"]
    assert isinstance(content, str)
    return content


def by_type(events: list[dict], kind: str) -> list[dict]:
    return [event for event in events if event["type"] == kind]


def assert_sources_before_tokens(events: list[dict], turn_id: int) -> dict:
    """The reply's ``sources`` event comes right after its ``thinking``, before any of
    its tokens (by seq); returns it."""
    own = [e for e in events if e.get("turn_id") == turn_id]
    kinds = [e["type"] for e in own]
    assert kinds[:2] == ["thinking", "sources"], kinds
    sources = own[1]
    tokens = [e["seq"] for e in own if e["type"] == "token"]
    assert own[0]["seq"] < sources["seq"] and (not tokens or sources["seq"] < min(tokens))
    return sources


@pytest.fixture
def llama(channel, openai_server):
    add_provider("llama", openai_server.base_url, context_window=100_000)
    use_provider(channel, "llama")
    return openai_server


@pytest.fixture
def handbook(channel):
    """The lobby's own base (attached to it), holding the handbook."""
    base = make_base("Staff handbook", channel=channel)
    add_document(base, "handbook.pdf", HANDBOOK)
    return base


# --- the prompt ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_rooms_passages_reach_the_model_named_and_numbered_as_the_sources(
    channel, alice, llama, handbook
):
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(socket)
    await socket.send_json_to({"type": "message", "text": QUESTION})
    frames = await receive_until(socket, "done", timeout=30)
    await socket.disconnect()
    bot = await db_call(bot_turn)(channel)
    sent = last_user_content(llama)
    assert sent.startswith(
        '[knowledge base passages: the most relevant to this message from "Staff handbook"'
    )
    assert (
        "[1] handbook.pdf, page 3 — Staff handbook\nRefunds and returns: a purchase may be returned" in sent
    )
    assert sent.endswith(f"[end of knowledge base passages]\n\n{QUESTION}")
    assert sent in bot.prompt  # the substrate shows the block
    first = bot.sources[0]
    assert first["n"] == 1 and first["page"] == 3 and first["chunk"] is not None
    assert first["kb"] == {"id": str(handbook.pk), "name": "Staff handbook"}
    assert first["document"]["name"] == "handbook.pdf"
    assert first["snippet"].startswith("Refunds and returns") and len(first["snippet"]) <= 300
    assert [s["n"] for s in bot.sources] == list(range(1, len(bot.sources) + 1))
    for source in bot.sources:  # each numbered passage is in the prompt under its number
        assert f"[{source['n']}] {source['document']['name']}" in sent
    event = assert_sources_before_tokens(frames, bot.pk)
    assert event["sources"] == bot.sources
    final = frames[-2]
    assert final["type"] == "turn" and final["sources"] == bot.sources
    assert isinstance(final["timings"]["retrieval_ms"], int)


def test_nothing_over_the_threshold_is_said_in_words(channel, alice, llama, handbook, settings):
    settings.KB_SCORE_THRESHOLD = 0.999
    post_message(channel=channel, user=alice, text="What colour is the sky on Mars?")
    events = wait_for_done(channel, timeout=30)
    sent = last_user_content(llama)
    assert sent.startswith('[knowledge bases searched for this message: "Staff handbook". No passage')
    assert "do not say that a file or document does not exist" in sent
    assert sent.endswith("\n\nWhat colour is the sky on Mars?")
    bot = bot_turn(channel)
    assert bot.sources == []
    assert assert_sources_before_tokens(events, bot.pk)["sources"] == []


def test_without_bases_there_is_no_block_and_no_sources_event(channel, alice, llama):
    post_message(channel=channel, user=alice, text=QUESTION)
    events = wait_for_done(channel, timeout=30)
    assert last_user_content(llama) == QUESTION
    assert not by_type(events, "sources")
    assert bot_turn(channel).to_dict()["sources"] == []


def test_a_personal_base_named_by_the_message_and_the_rooms_base_together(channel, alice, llama, handbook):
    mine = make_base("Alice's notes", owner=alice)
    add_document(mine, "returns.txt", [(None, "My own note: the refund window for purchases is 45 days.")])
    answer = client_for(alice).post(
        "/api/channels/lobby/messages",
        {"text": QUESTION, "knowledge_base_ids": [str(mine.pk)]},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    user = Turn.objects.get(role="user")
    assert user.request["knowledge_base_ids"] == [str(mine.pk)]
    assert answer.json()["user_turn"]["request"]["knowledge_base_ids"] == [str(mine.pk)]
    bot = bot_turn(channel)
    assert {s["kb"]["id"] for s in bot.sources} == {str(handbook.pk), str(mine.pk)}
    sent = last_user_content(llama)
    assert '"Staff handbook", "Alice\'s notes"' in sent
    assert "returns.txt — Alice's notes\nMy own note" in sent
    # A regenerate keeps the bases the message named, whatever choices it makes.
    regenerated = client_for(alice).post(
        "/api/channels/lobby/regenerate", {"params": {"temperature": 0.5}}, content_type="application/json"
    )
    assert regenerated.status_code in (200, 202), regenerated.content
    wait_for_done(channel, timeout=30)  # the regenerate dropped the log: its own done
    user.refresh_from_db()
    assert user.request["knowledge_base_ids"] == [str(mine.pk)]
    assert {s["kb"]["id"] for s in bot_turn(channel).sources} == {str(handbook.pk), str(mine.pk)}


def test_a_base_the_author_may_no_longer_use_is_not_searched(channel, alice, bob, llama):
    """The message's bases are read again when its reply is written: one detached from
    the room since (another room's, here) is left out, not searched."""
    other = create_channel(name="elsewhere", owner=bob)
    theirs = make_base("Elsewhere", channel=other)
    add_document(theirs, "secret.txt", [(None, "The refund window is 45 days, says the secret file.")])
    channel.knowledge_bases.add(theirs)  # as if attached, then taken off below
    post_message(channel=channel, user=alice, text=QUESTION, knowledge_base_ids=[str(theirs.pk)])
    channel.knowledge_bases.remove(theirs)
    wait_for_done(channel, timeout=30)
    # Generation may have started before the removal: only a later reply is asserted.
    client_for(alice).post("/api/channels/lobby/regenerate", {}, content_type="application/json")
    wait_for_done(channel, timeout=30)  # the regenerate dropped the log: its own done
    assert "secret" not in last_user_content(llama)
    assert bot_turn(channel).sources == []


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_message_naming_a_base_it_may_not_use_is_refused_naming_the_id(channel, alice, bob):
    bobs = await db_call(make_base)("Bob's own", owner=bob)
    private = await db_call(create_channel)(name="hideout", owner=bob, visibility="private")
    hidden = await db_call(make_base)("Hideout base", channel=private)
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(socket)
    for base in (bobs, hidden):
        await socket.send_json_to({"type": "message", "text": "hi", "knowledge_base_ids": [str(base.pk)]})
        error = await receive(socket)
        assert error["type"] == "error" and error["code"] == "invalid"
        assert str(base.pk) in error["fields"]["knowledge_base_ids"][0]
    await socket.disconnect()
    assert await db_call(Turn.objects.count)() == 0


@pytest.mark.parametrize(
    ("ids", "said"),
    [
        (["not-a-uuid"], "not-a-uuid is not a knowledge base id"),
        ([str(uuid.UUID(int=7))] * 2, f"{uuid.UUID(int=7)} does not exist or is not yours or this channel's"),
        ([str(uuid.uuid4()) for _ in range(21)], "Ensure this field has no more than 20 elements."),
        ("x", "Expected a list."),
        ([7], "Expected a string."),
    ],
)
def test_bad_knowledge_base_ids_get_a_400_naming_the_field(channel, alice, ids, said):
    answer = client_for(alice).post(
        "/api/channels/lobby/messages",
        {"text": "hi", "knowledge_base_ids": ids},
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert said in json.dumps(answer.json()["fields"]["knowledge_base_ids"])
    assert Turn.objects.count() == 0


# --- a long file ------------------------------------------------------------------------------


def test_a_long_file_sent_with_the_message_gives_its_best_passages_not_its_head(
    channel, alice, llama, settings
):
    settings.ATTACHMENT_PROMPT_CHARS = 2000
    filler = "".join(
        f"Section {i}. The quarterly report discusses warehouse logistics and shipping schedules.\n\n"
        for i in range(200)
    )
    needle = "The secret launch code for project Bluebird is TANGERINE-42."
    text = filler + needle + "\n\n" + filler
    upload = document_upload(alice, "report.txt", text)
    post_message(
        channel=channel,
        user=alice,
        text="What is the launch code for project Bluebird?",
        attachments=[str(upload.pk)],
    )
    wait_for_done(channel, timeout=30)
    sent = last_user_content(llama)
    assert sent.startswith(f"[file: report.txt — {len(text):,} characters, too long to give whole")
    assert "TANGERINE-42" in sent
    assert not sent.startswith("[file: report.txt]\n")  # not the head
    assert "\n[end of report.txt]\n\nWhat is the launch code" in sent
    sources = bot_turn(channel).sources
    assert sources and all(s["kb"] is None and s["chunk"] is None for s in sources)
    assert {s["document"]["id"] for s in sources} == {str(upload.pk)}
    assert sources[0]["n"] == 1 and "TANGERINE-42" in sources[0]["snippet"]


# --- the embedding service down -----------------------------------------------------------------


def test_a_base_whose_embedding_service_is_down_is_searched_by_keywords_and_the_reply_comes(
    channel, alice, llama
):
    add_provider("embedder", f"http://127.0.0.1:{free_port()}/v1", priority=99)
    base = make_base("Remote handbook", channel=channel, embedder="provider:embedder:text-embed", dims=8)
    vectors = np.eye(8, dtype=np.float32)[: len(HANDBOOK)]
    add_document(base, "handbook.pdf", HANDBOOK, vectors=vectors)
    post_message(channel=channel, user=alice, text="refund purchase returned days")
    events = wait_for_done(channel, timeout=60)
    bot = bot_turn(channel)
    assert bot.finish_reason == "stop" and bot.text == "Hello, world."
    sent = last_user_content(llama)
    assert (
        '[knowledge base "Remote handbook" was searched by keywords only: its embedding service failed'
        in sent
    )
    assert "Refunds and returns" in sent
    assert bot.sources and bot.sources[0]["page"] == 3
    assert by_type(events, "sources")[0]["sources"] == bot.sources


# --- history and replay -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sources_come_back_in_history_mid_reply_and_after_it(channel, alice, openai_server, handbook):
    await db_call(use_slow_model)(channel, openai_server, delay=0.05, tokens=[" w"] * 100, max_tokens=200)
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(socket)
    await socket.send_json_to({"type": "message", "text": QUESTION})
    frames = await receive_until(socket, "token", timeout=30)
    sources = by_type(frames, "sources")[0]["sources"]
    assert sources
    joiner, _, _ = await open_socket("/ws/lobby?watch=1")
    history = await receive(joiner)
    assert history["generating"]["sources"] == sources
    await receive_until(socket, "done", timeout=30)
    await joiner.disconnect()
    late, _, _ = await open_socket("/ws/lobby?watch=1")
    history = await receive(late)
    bot = history["turns"][-1]
    assert bot["role"] == "bot" and bot["sources"] == sources
    await late.disconnect()
    await socket.disconnect()
    detail = await db_call(lambda: client_for(alice).get(f"/api/turns/{bot['id']}").json())()
    assert detail["sources"] == sources


def test_no_replay_serves_the_sources_of_a_regenerated_reply(channel, alice, llama, handbook):
    post_message(channel=channel, user=alice, text=QUESTION)
    events = wait_for_done(channel, timeout=30)
    since = by_type(events, "thinking")[0]["seq"] - 1
    assert asyncio.run(bounded_replay(channel.pk, since))  # replayable while the reply shows
    client_for(alice).post("/api/channels/lobby/regenerate", {}, content_type="application/json")
    wait_for_done(channel, count=1, timeout=30)
    # The reply is hidden: a replay from before it would carry its sources; none is served.
    assert asyncio.run(bounded_replay(channel.pk, since)) is None
    assert all(
        e["type"] != "sources" or e["turn_id"] != events[-1]["turn_id"] for e in channel_events(channel)
    )


# --- real server processes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 2) as hosts:
        yield hosts


def connect(host: str, path: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return websockets.connect(
        f"ws://{host}{path}", origin=Origin(f"http://{host}"), additional_headers=headers, open_timeout=10
    )


async def frames_until(ws, kind: str, timeout: float = 30) -> list[dict]:
    out = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "presence":
                continue
            out.append(frame)
            if frame["type"] == kind:
                return out


@pytest.fixture
def private_room(alice, bob, openai_server):
    room = create_channel(name="backroom", owner=alice, visibility="private")
    add_member(actor=alice, channel=room, user=bob)
    add_provider("llama", openai_server.base_url, context_window=100_000)
    use_provider(room, "llama")
    base = make_base("Backroom handbook", channel=room)
    add_document(base, "handbook.pdf", HANDBOOK)
    return room


def test_sources_reach_a_private_rooms_watch_link_on_another_process_before_any_token(
    servers, private_room, alice, carol
):
    async def scenario():
        key = private_room.watch_key
        async with connect(servers[1], f"/ws/backroom?watch=1&key={key}") as watcher:
            assert json.loads(await watcher.recv())["type"] == "history"
            async with connect(servers[0], "/ws/backroom", await token_for(alice)) as chat:
                await chat.recv()
                await chat.send(json.dumps({"type": "message", "text": QUESTION}))
                sent = await frames_until(chat, "done")
            seen = await frames_until(watcher, "done")
        return sent, seen

    sent, seen = asyncio.run(scenario())
    assert seen == sent
    bot = bot_turn(private_room)
    assert assert_sources_before_tokens(seen, bot.pk)["sources"] == bot.sources and bot.sources
    # An outsider gets no stream at all: neither the socket nor SSE, nor a passage.
    with httpx.Client(base_url=f"http://{servers[1]}", timeout=10) as client:
        outsider = {"Authorization": f"Bearer {ApiToken.issue(carol)}"}
        assert client.get("/api/channels/backroom/events", headers=outsider).status_code == 404
        assert client.get("/api/channels/backroom/events?key=wrong").status_code == 404


def test_an_sse_exchange_carries_the_sources_event_between_thinking_and_the_tokens(
    servers, channel, alice, llama, handbook
):
    mine = make_base("Alice's notes", owner=alice)
    add_document(mine, "returns.txt", [(None, "My own note: the refund window for purchases is 45 days.")])
    with (
        httpx.Client(base_url=f"http://{servers[0]}", timeout=30) as client,
        connect_sse(
            client,
            "POST",
            "/api/channels/lobby/messages?stream=1",
            json={"text": QUESTION, "knowledge_base_ids": [str(mine.pk)]},
            headers={"Authorization": f"Bearer {ApiToken.issue(alice)}"},
        ) as source,
    ):
        events = [
            {**json.loads(e.data), "seq": int(e.id)} for e in source.iter_sse() if e.event != "presence"
        ]
    bot = bot_turn(channel)
    event = assert_sources_before_tokens(events, bot.pk)
    assert event["sources"] == bot.sources
    assert {s["kb"]["name"] for s in bot.sources} == {"Staff handbook", "Alice's notes"}
