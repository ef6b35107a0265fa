"""Files sent with messages, through the real transports: REST and the WebSocket take
`attachments` (ids of the sender's ready uploads, processed by a real Celery worker),
REST also the seed form `image`; the turn, its `turn` event, history and the session's
turns carry them; every refusal names the id and counts nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
import websockets
from django.core.files.uploadedfile import SimpleUploadedFile
from websockets.typing import Origin

from chat import limits
from chat.models import Turn, Upload
from chat.selectors import history_state
from tests import files
from tests.conftest import channel_events, client_for, wait_for, wait_until_no_generation
from tests.processes import live_servers
from tests.ws_helpers import open_socket, receive, receive_until, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def upload(user: Any, data: bytes, name: str, channel: str | None = None) -> dict[str, Any]:
    form: dict[str, Any] = {"file": SimpleUploadedFile(name, data)}
    if channel:
        form["channel"] = channel
    response = client_for(user).post("/api/uploads", form, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def ended(upload_id: str, timeout: float = 30) -> Upload:
    """The upload once the worker is done with it."""

    def done() -> Upload | None:
        row = Upload.objects.get(pk=upload_id)
        return row if row.status in ("ready", "failed") else None

    return wait_for(done, timeout)


def ready_upload(user: Any, data: bytes, name: str, channel: str | None = None) -> dict[str, Any]:
    made = upload(user, data, name, channel)
    row = ended(made["id"])
    assert row.status == "ready", row.error
    return row.to_attachment()


def post(user: Any, body: dict[str, Any], channel: str = "lobby") -> Any:
    response = client_for(user).post(f"/api/channels/{channel}/messages", body, format="json")
    wait_until_no_generation()
    return response


def test_a_rest_message_carries_its_attachments_everywhere(worker, channel, alice):
    doc = ready_upload(alice, files.pdf(2), "report.pdf", channel="lobby")
    pic = ready_upload(alice, files.png(), "pic.png")  # no channel: takes the message's
    response = post(alice, {"text": "", "attachments": [doc["id"], pic["id"]]})  # blank text is fine
    assert response.status_code == 200, response.content
    user_turn = response.json()["user_turn"]
    assert user_turn["attachments"] == [doc, pic]
    assert all(a["status"] == "ready" and a["url"] == f"/api/uploads/{a['id']}/content" for a in [doc, pic])
    turn = Turn.objects.get(pk=user_turn["id"])
    assert set(turn.uploads.values_list("channel__name", flat=True)) == {"lobby"}
    # the turn event, history and the session's turns
    (event,) = [e for e in channel_events(channel) if e["type"] == "turn" and e["id"] == turn.pk]
    assert event["attachments"] == [doc, pic]
    (listed,) = [t for t in history_state(channel)["turns"] if t["id"] == turn.pk]
    assert listed["attachments"] == [doc, pic]
    turns = client_for(alice).get(f"/api/sessions/{turn.session_id}/turns").json()["turns"]
    assert turns[0]["attachments"] == [doc, pic]
    assert Upload.objects.get(pk=pic["id"]).to_dict()["channel"] == "lobby"


def test_a_socket_message_carries_its_attachments(worker, channel, alice, bob):
    doc = ready_upload(alice, files.utf8_text(), "notes.txt")

    async def scenario() -> tuple[dict, dict]:
        sender, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
        watcher, _, _ = await open_socket("/ws/lobby?watch=1")
        await receive(sender)
        await receive(watcher)
        await sender.send_json_to({"type": "message", "text": "see attached", "attachments": [doc["id"]]})
        sent = (await receive_until(sender, "turn"))[-1]
        seen = (await receive_until(watcher, "turn"))[-1]
        await sender.disconnect()
        await watcher.disconnect()
        return sent, seen

    sent, seen = asyncio.run(scenario())
    wait_until_no_generation()
    assert sent["attachments"] == seen["attachments"] == [doc]
    assert Turn.objects.get(pk=sent["id"]).attachments == [doc]


def refusal(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    return body


def test_attachment_refusals_name_the_id_and_count_nothing(worker, channel, alice, bob, settings):
    mine = ready_upload(alice, files.utf8_text(), "mine.txt")
    theirs = ready_upload(bob, files.utf8_text(), "theirs.txt")
    broken = upload(alice, files.broken_pdf(), "broken.pdf")
    assert ended(broken["id"]).status == "failed"
    elsewhere = ready_upload(alice, files.utf8_text(), "elsewhere.txt")
    stranger = str(uuid.uuid4())

    body = refusal(post(alice, {"text": "x", "attachments": [stranger]}), 400, "invalid")
    assert stranger in body["fields"]["attachments"][0]
    body = refusal(post(alice, {"text": "x", "attachments": [theirs["id"]]}), 400, "invalid")
    assert theirs["id"] in body["fields"]["attachments"][0]  # another user's: as if it did not exist
    body = refusal(post(alice, {"text": "x", "attachments": ["nope"]}), 400, "invalid")
    assert "nope" in body["detail"]
    body = refusal(post(alice, {"text": "x", "attachments": [mine["id"], mine["id"]]}), 400, "invalid")
    body = refusal(post(alice, {"text": "x", "attachments": [broken["id"]]}), 409, "not_ready")
    assert broken["id"] in body["detail"] and "failed" in body["detail"]
    body = refusal(post(alice, {"text": "x", "attachments": "abc"}), 400, "invalid")
    assert "attachments" in body["fields"]
    settings.MAX_ATTACHMENTS_PER_MESSAGE = 1
    body = refusal(post(alice, {"text": "x", "attachments": [mine["id"], elsewhere["id"]]}), 413, "too_large")
    assert "MAX_ATTACHMENTS_PER_MESSAGE (1)" in body["detail"]
    assert not Turn.objects.exists() and limits.usage_today(alice)["messages"] == 0

    assert post(alice, {"text": "", "attachments": [mine["id"]]}).status_code == 200
    body = refusal(post(alice, {"text": "again", "attachments": [mine["id"]]}), 400, "invalid")
    assert "already" in body["detail"] and mine["id"] in body["detail"]
    refusal(post(alice, {"text": "", "attachments": []}), 400, "invalid")  # nothing to send


def test_an_upload_made_for_one_channel_cannot_be_sent_to_another(worker, channel, private_channel, alice):
    made = ready_upload(alice, files.utf8_text(), "notes.txt", channel="backroom")
    body = refusal(post(alice, {"text": "x", "attachments": [made["id"]]}), 400, "invalid")
    assert "another channel" in body["detail"]


def test_a_socket_refuses_like_rest_and_the_seed_image(worker, channel, alice, bob):
    theirs = ready_upload(bob, files.utf8_text(), "theirs.txt")

    async def scenario() -> list[dict]:
        sender, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
        await receive(sender)
        answers = []
        for frame in (
            {"type": "message", "text": "x", "attachments": [theirs["id"]]},
            {"type": "message", "text": "x", "image": base64.b64encode(files.png()).decode()},
        ):
            await sender.send_json_to(frame)
            answers.append(await receive(sender))
        await sender.disconnect()
        return answers

    owned, seed = asyncio.run(scenario())
    assert owned["type"] == "error" and owned["code"] == "invalid" and theirs["id"] in owned["text"]
    assert seed["code"] == "invalid" and seed["fields"] == {"image": ["Unknown field."]}
    assert not Turn.objects.exists()


def test_the_seed_image_form_becomes_a_processed_upload_of_the_sender(channel, alice):
    jpeg = files.jpeg()
    response = post(alice, {"text": "", "image": base64.b64encode(jpeg).decode(), "image_mime": "image/png"})
    assert response.status_code == 200, response.content
    (attached,) = response.json()["user_turn"]["attachments"]
    row = Upload.objects.get(pk=attached["id"])
    assert (row.owner, row.status, row.kind, row.mime) == (alice, "ready", "image", "image/jpeg")
    assert row.file.open("rb").read() != jpeg  # re-encoded: EXIF and GPS gone
    assert b"Exif" not in row.file.open("rb").read()
    assert limits.upload_bytes_today(alice) == len(jpeg)
    # a data: URL is taken too
    url = "data:image/png;base64," + base64.b64encode(files.png()).decode()
    assert post(alice, {"text": "again", "image": url}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"text": "x", "image": "not base64!"}, 400, "image"),
        ({"text": "x", "image": ""}, 400, "image"),
        ({"text": "x", "image_mime": "image/png"}, 400, "image_mime"),
        ({"text": "x", "image": base64.b64encode(b"%PDF-1.4 hello").decode()}, 415, "image"),
        ({"text": "x", "image": base64.b64encode(files.bomb_png()).decode()}, 400, "image"),
    ],
    ids=["bad-base64", "empty", "mime-alone", "not-an-image", "bomb"],
)
def test_a_bad_seed_image_is_refused_naming_it(channel, alice, body, status, field):
    response = post(alice, body)
    assert response.status_code == status, response.content
    assert field in response.json()["fields"]
    assert not Upload.objects.exists() and not Turn.objects.exists()
    assert limits.upload_bytes_today(alice) == 0 and limits.usage_today(alice)["messages"] == 0


def test_a_seed_image_over_the_limit_is_413(channel, alice, settings):
    settings.MAX_UPLOAD_BYTES = 100
    response = post(alice, {"text": "x", "image": base64.b64encode(files.png()).decode()})
    body = refusal(response, 413, "too_large")
    assert "MAX_UPLOAD_BYTES (100 bytes)" in body["detail"]


def test_a_body_too_long_for_any_message_is_413_unread(channel, alice, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    response = post(alice, {"text": "x", "image": "A" * (400 * 1024)})
    body = refusal(response, 413, "too_large")
    assert "MAX_UPLOAD_BYTES (1000 bytes)" in body["detail"]


def test_a_seed_image_whose_message_is_refused_leaves_nothing(channel, alice, settings):
    # (The day's quota, not the minute's: a minute can turn between the two messages.)
    settings.DAILY_MESSAGES = 1
    assert post(alice, {"text": "first"}).status_code == 200
    response = post(alice, {"text": "x", "image": base64.b64encode(files.png()).decode()})
    refusal(response, 429, "quota_exceeded")
    assert not Upload.objects.exists() and limits.upload_bytes_today(alice) == 0


def test_deleting_a_sent_upload_marks_it_deleted_on_its_turn(worker, channel, alice):
    pic = ready_upload(alice, files.png(), "pic.png")
    doc = ready_upload(alice, files.utf8_text(), "notes.txt")
    turn_id = post(alice, {"text": "two files", "attachments": [pic["id"], doc["id"]]}).json()["user_turn"][
        "id"
    ]
    assert client_for(alice).delete(f"/api/uploads/{pic['id']}").status_code == 204
    gone = {**pic, "status": "deleted", "url": None}
    assert Turn.objects.get(pk=turn_id).attachments == [gone, doc]
    updated = [e for e in channel_events(channel) if e["type"] == "turn" and e["id"] == turn_id][-1]
    assert updated["attachments"] == [gone, doc]
    assert client_for(alice).get(f"/api/uploads/{pic['id']}/content").status_code == 404


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 2) as hosts:
        yield hosts


def test_a_member_on_another_server_sees_the_attachment(worker, servers, channel, alice, bob):
    doc = ready_upload(alice, files.utf8_text(), "notes.txt", channel="lobby")
    token = asyncio.run(token_for(alice))

    async def scenario() -> dict:
        headers = {"Authorization": f"Bearer {await token_for(bob)}"}
        async with websockets.connect(
            f"ws://{servers[1]}/ws/lobby", origin=Origin(f"http://{servers[1]}"), additional_headers=headers
        ) as member:
            assert json.loads(await member.recv())["type"] == "history"
            async with websockets.connect(
                f"ws://{servers[0]}/ws/lobby",
                origin=Origin(f"http://{servers[0]}"),
                additional_headers={"Authorization": f"Bearer {token}"},
            ) as sender:
                await sender.recv()
                await sender.send(json.dumps({"type": "message", "text": "", "attachments": [doc["id"]]}))
                async with asyncio.timeout(15):
                    while True:
                        frame = json.loads(await member.recv())
                        if frame["type"] == "turn" and frame["role"] == "user":
                            return frame

    seen = asyncio.run(scenario())
    wait_until_no_generation()
    assert seen["attachments"] == [doc]
    # and bob reads its bytes through server 2
    import httpx

    response = httpx.get(
        f"http://{servers[1]}{doc['url']}", headers={"Authorization": f"Bearer {asyncio.run(token_for(bob))}"}
    )
    assert response.status_code == 200 and response.content == files.utf8_text()
    assert response.headers["content-disposition"].startswith("attachment")
