"""Knowledge bases attacked from outside: who may read, search, cite and manage a
personal base and a room's base — outsiders, a removed member, anonymous callers, a
watcher with the watch key, a moderator — and the room's events across two real server
processes. A private room's base is a 404 everywhere for those outside it, the same
answer as a base that does not exist."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
import websockets
from rest_framework.test import APIClient
from websockets.typing import Origin

from chat.knowledge import services as kb_services
from chat.models import ApiToken, KnowledgeBase, KnowledgeChunk, KnowledgeDocument, Turn
from chat.services import remove_member, rotate_watch_key
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

KB = "/api/knowledge-bases"
MISSING = "22222222-2222-2222-2222-222222222222"


def room_base(channel, user, name: str = "Room notes") -> KnowledgeBase:
    return kb_services.create_base(user=user, name=name, channel=channel)


def passage(base: KnowledgeBase, text: str = "The vault code is 4711.") -> KnowledgeChunk:
    """A document of the base with one indexed passage (as the indexer leaves it)."""
    (document,) = kb_services.add_documents(
        user=None or base.created_by, base=base, texts=[{"name": "Secrets", "text": text}]
    )
    KnowledgeDocument.objects.filter(pk=document.pk).update(status="ready", progress=100, chunk_count=1)
    return KnowledgeChunk.objects.create(
        knowledge_base=base,
        document=document,
        generation=base.generation,
        ordinal=0,
        text=text,
        page=2,
        start=0,
        end=len(text),
        dims=base.dims,
    )


def reads(client, base_id: str, chunk_id: int, channel_name: str) -> dict[str, int]:
    """What each read path answers."""
    listed = client.get(KB)
    in_list = listed.status_code == 200 and base_id in {b["id"] for b in listed.json()["knowledge_bases"]}
    return {
        "get": client.get(f"{KB}/{base_id}").status_code,
        "chunk": client.get(f"{KB}/{base_id}/chunks/{chunk_id}").status_code,
        "available": client.get(f"{KB}/available?channel={channel_name}").status_code,
        "documents": client.post(
            f"{KB}/{base_id}/documents", {"name": "x", "text": "y"}, format="json"
        ).status_code,
        "delete": client.delete(f"{KB}/{base_id}").status_code,
        "listed": int(in_list),
    }


def test_a_private_rooms_base_is_invisible_to_an_outsider_everywhere(private_channel, alice, carol):
    base = room_base(private_channel, alice)
    chunk = passage(base)
    outsider = client_for(carol)
    assert reads(outsider, str(base.pk), chunk.pk, "backroom") == {
        "get": 404,
        "chunk": 404,
        "available": 404,
        "documents": 404,
        "delete": 404,
        "listed": 0,
    }
    # the same answers as for a base that does not exist
    assert outsider.get(f"{KB}/{MISSING}").json() == outsider.get(f"{KB}/{base.pk}").json()
    assert outsider.get(f"{KB}?channel=backroom").status_code == 404
    search = outsider.post(f"{KB}/{base.pk}/search", {"query": "vault"}, format="json")
    assert search.status_code == 404
    # nor can it be attached elsewhere or named by a message elsewhere
    from chat.services import create_channel

    create_channel(name="carols", owner=carol)
    refused = outsider.patch("/api/channels/carols", {"knowledge_base_ids": [str(base.pk)]}, format="json")
    assert refused.status_code == 400
    assert KnowledgeDocument.objects.count() == 1 and KnowledgeBase.objects.filter(pk=base.pk).exists()


def test_members_read_a_private_rooms_base_and_a_removed_member_loses_it_at_once(private_channel, alice, bob):
    base = room_base(private_channel, alice)
    chunk = passage(base)
    member = client_for(bob)
    assert member.get(f"{KB}/{base.pk}").status_code == 200
    assert member.get(f"{KB}/{base.pk}/chunks/{chunk.pk}").json()["text"] == "The vault code is 4711."
    assert str(base.pk) in {b["id"] for b in member.get(KB).json()["knowledge_bases"]}
    assert member.delete(f"{KB}/{base.pk}").status_code == 403  # may read, not manage
    remove_member(actor=alice, channel=private_channel, user=bob)
    assert reads(member, str(base.pk), chunk.pk, "backroom") == {
        "get": 404,
        "chunk": 404,
        "available": 404,
        "documents": 404,
        "delete": 404,
        "listed": 0,
    }


def test_a_moderator_reads_and_manages_a_private_rooms_base(private_channel, alice, mona):
    base = room_base(private_channel, alice)
    chunk = passage(base)
    moderator = client_for(mona)
    seen = moderator.get(f"{KB}/{base.pk}").json()
    assert seen["can_manage"] is True
    assert moderator.get(f"{KB}/{base.pk}/chunks/{chunk.pk}").status_code == 200
    assert moderator.patch(f"{KB}/{base.pk}", {"name": "Checked"}, format="json").status_code == 200
    from chat.models import ModerationAction

    assert ModerationAction.objects.filter(action="update_knowledge_base", actor=mona).exists()


def test_a_personal_base_is_its_owners_alone_even_for_moderators(alice, bob, mona):
    base = kb_services.create_base(user=bob, name="Diary")
    chunk = passage(base)
    for outsider in (alice, mona):
        client = client_for(outsider)
        assert client.get(f"{KB}/{base.pk}").status_code == 404
        assert client.get(f"{KB}/{base.pk}/chunks/{chunk.pk}").status_code == 404
        assert client.post(f"{KB}/{base.pk}/search", {"query": "x"}, format="json").status_code == 404
        assert client.delete(f"{KB}/{base.pk}").status_code == 404
    assert client_for(bob).get(f"{KB}/{base.pk}/chunks/{chunk.pk}").status_code == 200


def test_a_public_rooms_base_is_readable_by_anyone_logged_in_and_its_passages_by_anyone(
    channel, alice, carol
):
    base = room_base(channel, alice)
    chunk = passage(base)
    assert client_for(carol).get(f"{KB}/{base.pk}").json()["can_manage"] is False
    # not in carol's own list (she is not in the room), but under the room's
    assert client_for(carol).get(KB).json() == {"knowledge_bases": []}
    assert [b["id"] for b in client_for(carol).get(f"{KB}?channel=lobby").json()["knowledge_bases"]] == [
        str(base.pk)
    ]
    anonymous = APIClient()
    assert anonymous.get(f"{KB}/{base.pk}").status_code == 401
    cited = anonymous.get(f"{KB}/{base.pk}/chunks/{chunk.pk}")
    assert cited.status_code == 200 and cited.json()["page"] == 2  # a public citation link
    assert anonymous.get(f"{KB}/{MISSING}/chunks/{chunk.pk}").status_code == 404  # the base must match


def cite(channel, chunk: KnowledgeChunk) -> Turn:
    """A bot reply of the channel whose sources cite the passage (as a reply leaves it)."""
    session = channel.active_session
    return Turn.objects.create(
        session=session,
        role=Turn.Role.BOT,
        text="The code is in your notes [1].",
        finish_reason="stop",
        sources=[
            {
                "n": 1,
                "kb": {"id": str(chunk.knowledge_base_id), "name": chunk.knowledge_base.name},
                "document": {"id": str(chunk.document_id), "name": chunk.document.name},
                "chunk": chunk.pk,
                "score": 0.9,
                "snippet": chunk.text[:300],
                "page": chunk.page,
            }
        ],
    )


def test_a_watcher_with_the_key_reads_a_cited_passage_and_only_that(private_channel, alice, carol):
    """A personal base attached to a private room: its passages reach the room's replies;
    a watcher with the watch key follows a citation to the passage the reply cites, and
    to no other, and not once the key is rotated."""
    base = kb_services.create_base(user=alice, name="Alice's")
    kb_services.set_channel_bases(user=alice, channel=private_channel, ids=[str(base.pk)])
    chunk = passage(base)
    other = passage(base, "Another secret.")
    turn = cite(private_channel, chunk)
    key = private_channel.watch_key
    anonymous = APIClient()
    url = f"{KB}/{base.pk}/chunks/{chunk.pk}"
    assert anonymous.get(url).status_code == 404
    assert anonymous.get(f"{url}?turn={turn.pk}").status_code == 404  # no key
    assert anonymous.get(f"{url}?turn={turn.pk}&key=wrong").status_code == 404
    assert anonymous.get(f"{url}?turn={turn.pk}&key={key}").json()["text"] == chunk.text
    assert client_for(carol).get(f"{url}?turn={turn.pk}&key={key}").status_code == 200
    uncited = f"{KB}/{base.pk}/chunks/{other.pk}?turn={turn.pk}&key={key}"
    assert anonymous.get(uncited).status_code == 404
    assert anonymous.get(f"{url}?turn=x&key={key}").status_code == 400
    assert anonymous.get(f"{url}?turn={turn.pk}&key={key}&extra=1").status_code == 400
    Turn.objects.filter(pk=turn.pk).update(hidden=True)
    assert anonymous.get(f"{url}?turn={turn.pk}&key={key}").status_code == 404  # hidden: moderators
    Turn.objects.filter(pk=turn.pk).update(hidden=False)
    rotate_watch_key(channel=private_channel, user=alice)
    assert anonymous.get(f"{url}?turn={turn.pk}&key={key}").status_code == 404


def test_a_message_may_name_its_senders_and_the_rooms_bases_only(channel, alice, bob, carol):
    from chat.errors import ServiceError

    own = room_base(channel, alice)
    bobs = kb_services.create_base(user=bob, name="Bob's")
    carols = kb_services.create_base(user=carol, name="Carol's")
    checked = kb_services.check_message_bases(
        user=bob, channel=channel, ids=[str(own.pk), str(bobs.pk), str(bobs.pk)]
    )
    assert [b.pk for b in checked] == [own.pk, bobs.pk]
    for ids in ([str(carols.pk)], [MISSING], ["nope"], "x", [str(own.pk)] * 1 + [5]):
        with pytest.raises(ServiceError) as refused:
            kb_services.check_message_bases(user=bob, channel=channel, ids=ids)
        assert refused.value.code == "invalid" and "knowledge_base_ids" in (refused.value.fields or {})
    with pytest.raises(ServiceError) as same:
        kb_services.check_message_bases(user=bob, channel=channel, ids=[str(carols.pk)])
    with pytest.raises(ServiceError) as absent:
        kb_services.check_message_bases(user=bob, channel=channel, ids=[MISSING])
    assert same.value.text.replace(str(carols.pk), "ID") == absent.value.text.replace(MISSING, "ID")


def test_another_users_base_cannot_be_attached_by_a_moderator_either(channel, alice, bob, mona):
    bobs = kb_services.create_base(user=bob, name="Bob's")
    refused = client_for(mona).patch(
        "/api/channels/lobby", {"knowledge_base_ids": [str(bobs.pk)]}, format="json"
    )
    assert refused.status_code == 400 and str(bobs.pk) in refused.json()["detail"]
    assert list(channel.knowledge_bases.all()) == []


# --- search (chat.knowledge.search, H1's; these run once it is merged) ----------------------


def test_search_answers_passages_best_first_for_readers_only(channel, private_channel, alice, bob, carol):
    base = room_base(private_channel, alice)
    url = f"{KB}/{base.pk}/search"
    ok = client_for(bob).post(url, {"query": "vault code", "limit": 5, "threshold": 0}, format="json")
    assert ok.status_code == 200, ok.content
    assert ok.json()["results"] == []  # nothing indexed yet, and no error
    assert client_for(carol).post(url, {"query": "vault"}, format="json").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 2001}, "query"),
        ({"query": "x", "limit": 0}, "limit"),
        ({"query": "x", "limit": 51}, "limit"),
        ({"query": "x", "limit": "5"}, "limit"),
        ({"query": "x", "threshold": 1.5}, "threshold"),
        ({"query": "x", "threshold": -0.1}, "threshold"),
        ({"query": "x", "threshold": True}, "threshold"),
        ({"query": "x", "rerank": True}, "rerank"),
    ],
)
def test_bad_search_input_is_400_naming_the_field(alice, body, field):
    base = kb_services.create_base(user=alice, name="Mine")
    response = client_for(alice).post(f"{KB}/{base.pk}/search", body, format="json")
    assert response.status_code == 400 and field in response.json()["fields"], response.content


# --- through real server processes ---------------------------------------------------------


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker):
    from tests.processes import live_servers

    with django_db_blocker.unblock(), live_servers("uvicorn", 2) as hosts:
        yield {"A": hosts[0], "B": hosts[1]}


async def next_of(ws, kind: str, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame


@pytest.mark.asyncio
async def test_a_change_made_through_one_process_reaches_a_watcher_on_the_other(servers, channel, alice):
    from chat.realtime.async_db import db_call

    token = await db_call(ApiToken.issue)(alice)
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(
        f"ws://{servers['B']}/ws/lobby?watch=1", origin=Origin(f"http://{servers['B']}"), open_timeout=10
    ) as watcher:
        history = json.loads(await watcher.recv())
        assert history["type"] == "history" and history["knowledge_base_ids"] == []

        def create() -> requests.Response:
            return requests.post(
                f"http://{servers['A']}{KB}",
                json={"name": "Lobby FAQ", "channel": "lobby"},
                headers=headers,
                timeout=10,
            )

        made = await asyncio.to_thread(create)
        assert made.status_code == 201, made.text
        base_id = made.json()["id"]
        told = await next_of(watcher, "knowledge_base_updated")
        assert told["knowledge_base"] == base_id and told["document"] is None and told["channel"] == "lobby"
        updated = await next_of(watcher, "channel_updated")
        assert updated["knowledge_base_ids"] == [base_id]

        def add() -> requests.Response:
            return requests.post(
                f"http://{servers['A']}{KB}/{base_id}/documents",
                json={"name": "Hours", "text": "Open 9 to 5."},
                headers=headers,
                timeout=10,
            )

        added = await asyncio.to_thread(add)
        assert added.status_code == 201, added.text
        document = await next_of(watcher, "knowledge_base_updated")
        assert document["document"]["name"] == "Hours"
        assert document["document"]["id"] == added.json()["documents"][0]["id"]


def test_a_private_rooms_base_is_a_404_through_a_real_server(servers, private_channel, alice, carol):
    base = room_base(private_channel, alice)
    for user, expected in ((carol, 404), (alice, 200)):
        answer = requests.get(
            f"http://{servers['A']}{KB}/{base.pk}",
            headers={"Authorization": f"Bearer {ApiToken.issue(user)}"},
            timeout=10,
        )
        assert answer.status_code == expected
    anonymous = requests.get(f"http://{servers['B']}{KB}/{base.pk}", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "auth_required"


def test_a_pasted_text_body_past_its_limit_is_refused_unread(servers, alice):
    base = kb_services.create_base(user=alice, name="Mine")
    from tests.test_issue15_attacks import raw_request

    answer = raw_request(
        servers["A"],
        "POST",
        f"{KB}/{base.pk}/documents",
        [
            f"Authorization: Bearer {ApiToken.issue(alice)}",
            "Content-Type: application/json",
            "Content-Length: 99999999",
        ],
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"KB_MAX_TEXT_CHARS" in answer
    assert not KnowledgeDocument.objects.exists()
