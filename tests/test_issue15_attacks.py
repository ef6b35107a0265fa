"""Issue 15 attacked from outside: files that outlive what they were sent with, bodies
that the guard let through, limits a second door skipped, and the headers an attacker
would shape with a file's name. Each test here failed on the code it guards, or keeps a
real risk shut."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from chat import limits
from chat.models import ApiToken, Upload
from chat.services import delete_channel, delete_turn, post_message, purge_session
from chat.uploads import services as upload_services
from tests import files
from tests.conftest import add_provider, client_for, use_provider, wait_until_no_generation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_remove_new_upload_files")]


def stored(upload: Upload) -> Path:
    return Path(django_settings.UPLOADS_DIR) / upload.file.name


def post_file(client, data: bytes, name: str, **extra):
    return client.post("/api/uploads", {"file": SimpleUploadedFile(name, data), **extra}, format="multipart")


def content(client, upload_id, query: str = "", method: str = "get", **headers):
    response = getattr(client, method)(f"/api/uploads/{upload_id}/content{query}", **headers)
    if response.status_code == 200 and response.streaming:
        response.body = b"".join(response.streaming_content)
    return response


@pytest.fixture
def channel(channel, openai_server):
    """The public channel, answered by a model that reads images."""
    add_provider("eyes", openai_server.base_url, vision=True)
    use_provider(channel, "eyes")
    return channel


def sent_image(channel, user) -> Upload:
    turn = post_message(channel=channel, user=user, text="look", image=base64.b64encode(files.png()).decode())
    wait_until_no_generation()
    return Upload.objects.get(turn=turn)


# --- files outlive what they belonged to -------------------------------------------------


def test_a_turn_deleted_by_a_moderator_takes_its_files(channel, alice, bob, mona):
    """Was: the upload lost its turn (SET_NULL) and stayed stored, readable and sendable
    again by its owner: a moderator's removal did not remove the picture."""
    sent = sent_image(channel, bob)
    path = stored(sent)
    assert path.exists()
    assert sent.turn is not None
    delete_turn(actor=mona, turn=sent.turn)
    assert not Upload.objects.filter(pk=sent.pk).exists()
    assert not path.exists()
    assert content(client_for(bob), sent.pk).status_code == 404
    again = {"text": "again", "attachments": [str(sent.pk)]}
    refused = client_for(bob).post(f"/api/channels/{channel.name}/messages", again, format="json")
    assert refused.status_code == 400 and "attachments" in refused.json()["fields"]


def test_a_purged_session_takes_its_files(channel, alice, bob, mona):
    sent = sent_image(channel, bob)
    path = stored(sent)
    assert sent.turn is not None
    purge_session(actor=mona, session=sent.turn.session)
    assert not Upload.objects.filter(pk=sent.pk).exists() and not path.exists()


def test_a_deleted_channel_or_user_leaves_no_files_behind(channel, alice, bob):
    """Was: the rows went by cascade and their files stayed on disk for good."""
    sent = sent_image(channel, bob)
    loose = Upload.objects.get(pk=post_file(client_for(bob), files.pdf(1), "cv.pdf").json()["id"])
    paths = [stored(sent), stored(loose)]
    assert all(p.exists() for p in paths)
    delete_channel(channel=channel, user=alice)
    assert not paths[0].exists() and paths[1].exists()
    bob.delete()
    assert not paths[1].exists()
    assert not Upload.objects.exists()


# --- limits through a second door -----------------------------------------------------------


def test_the_seed_image_counts_among_the_attachments(channel, alice, settings):
    """Was: MAX_ATTACHMENTS_PER_MESSAGE ready uploads plus a seed image made one more."""
    settings.MAX_ATTACHMENTS_PER_MESSAGE = 1
    seed = upload_services.prepare_seed_image(base64.b64encode(files.png()).decode(), None)
    ready = upload_services.store_seed_image(user=alice, channel=channel, seed=seed)
    response = client_for(alice).post(
        f"/api/channels/{channel.name}/messages",
        {"text": "two", "attachments": [str(ready.pk)], "image": base64.b64encode(files.png()).decode()},
        format="json",
    )
    assert response.status_code == 413, response.content
    body = response.json()
    assert body["code"] == "too_large" and "MAX_ATTACHMENTS_PER_MESSAGE" in body["detail"]
    assert Upload.objects.filter(owner=alice).count() == 1  # the seed was not kept


def test_transcription_counts_against_the_daily_bytes(alice, settings):
    """Was: /api/transcribe read any number of recordings a day (the provider's paid
    engine, or the CPU's): it is an upload like the others, and counted as one."""
    wav = files.audio("wav", seconds=0.3)
    settings.DAILY_UPLOAD_BYTES = len(wav) + 10
    limits.check_and_count_upload(alice, 20)  # the day's uploads so far
    response = client_for(alice).post(
        "/api/transcribe", {"file": SimpleUploadedFile("a.wav", wav)}, format="multipart"
    )
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "quota_exceeded" and "DAILY_UPLOAD_BYTES" in response.json()["detail"]
    assert limits.upload_bytes_today(alice) == 20
    # a refused recording counts nothing
    junk = client_for(alice).post(
        "/api/transcribe", {"file": SimpleUploadedFile("a.wav", b"not audio at all")}, format="multipart"
    )
    assert junk.status_code == 400 and "file" in junk.json()["fields"]
    assert limits.upload_bytes_today(alice) == 20


# --- what the bytes are served as --------------------------------------------------------


def test_a_file_name_cannot_shape_the_headers(alice):
    name = 'evil"; filename=x.html\r\nSet-Cookie: a=b\u202e\u0000gnp.html'
    made = post_file(client_for(alice), files.utf8_text(), name).json()
    assert not any(ch in made["name"] for ch in "\r\n\x00\u202e/")
    response = content(client_for(alice), made["id"], "?inline=1")
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;") and "\r" not in disposition and "\n" not in disposition
    assert response["Content-Type"] == "text/plain" and not response.has_header("Set-Cookie")
    # HTML is not taken at all (415), whatever it is called
    assert post_file(client_for(alice), files.html(), "page.txt").status_code == 415
    long = post_file(client_for(alice), files.utf8_text(), "é" * 400 + ".txt").json()
    assert len(long["name"]) == 255


def test_head_range_and_options_answer_like_get(channel, alice, bob, carol):
    made = post_file(client_for(bob), files.pdf(1), "a.pdf").json()
    assert content(client_for(carol), made["id"], method="head").status_code == 404
    head = content(client_for(bob), made["id"], method="head")
    assert head.status_code == 200 and head["Content-Disposition"].startswith("attachment;")
    ranged = content(client_for(bob), made["id"], HTTP_RANGE="bytes=0-3")
    assert ranged.status_code == 200 and ranged.body == Upload.objects.get(pk=made["id"]).file.read()
    options = client_for(carol).options(f"/api/uploads/{made['id']}/content")
    assert options.status_code == 200 and made["name"] not in options.content.decode()


def test_session_logins_need_the_csrf_token_to_post_files(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    refused = post_file(client, files.pdf(1), "a.pdf")
    assert refused.status_code == 403
    wav = SimpleUploadedFile("a.wav", files.audio("wav"))
    assert client.post("/api/transcribe", {"file": wav}, format="multipart").status_code == 403
    assert not Upload.objects.exists()


def test_a_decompression_bomb_as_a_seed_image_is_refused_naming_it(channel, alice):
    bomb = base64.b64encode(files.bomb_png()).decode()
    response = client_for(alice).post(
        f"/api/channels/{channel.name}/messages", {"text": "x", "image": bomb}, format="json"
    )
    assert response.status_code == 400 and "image" in response.json()["fields"]
    assert not Upload.objects.exists()


# --- the body guard, for every other request --------------------------------------------


def raw_request(host: str, method: str, path: str, headers: list[str], chunks=()) -> bytes:
    """Send a request by hand (headers, then ``chunks`` of a chunked body, as far as the
    server reads them) and return what the server answered."""
    import contextlib
    import socket

    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        head = "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {host}", *headers])
        sock.sendall((head + "\r\n\r\n").encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for chunk in chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        return answer


@pytest.fixture(scope="module")
def small_limit_server(django_db_setup, django_db_blocker):
    from tests.processes import live_servers

    with django_db_blocker.unblock(), live_servers("uvicorn", 1, MAX_UPLOAD_BYTES="200000") as hosts:
        yield hosts[0]


def test_no_request_body_is_read_without_bound(small_limit_server, alice):
    """Was: the guard looked at POSTs to the file paths only; Django's ASGI handler reads
    any other body whole (to a temporary file) before a view answers 405 or 401: a PUT of
    gigabytes filled the disk, without logging in."""
    token = ApiToken.issue(alice)
    chunks = [b"a" * 65536] * 60  # 3.75 MiB: over DATA_UPLOAD_MAX_MEMORY_SIZE
    chunked = ["Transfer-Encoding: chunked"]
    for method_path in ("PUT /api/uploads", "POST /api/channels", "PATCH /api/channels/lobby"):
        method, path = method_path.split()
        answer = raw_request(
            small_limit_server,
            method,
            path,
            [f"Authorization: Bearer {token}", "Content-Type: application/json", *chunked],
            chunks,
        )
        assert answer.startswith(b"HTTP/1.1 413"), (method_path, answer[:200])
