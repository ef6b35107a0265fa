"""POST/GET/DELETE /api/uploads: who may upload where, the size, type and daily limits
(atomic: parallel uploads cannot slip past), and the owner-only reads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from chat import limits
from chat.models import ApiToken, ModerationAction, Upload
from chat.services import remove_member
from tests import files
from tests.conftest import channel_events, client_for

pytestmark = pytest.mark.django_db(transaction=True)


def upload(client, data: bytes, name: str = "notes.txt", **extra):
    return client.post("/api/uploads", {"file": SimpleUploadedFile(name, data), **extra}, format="multipart")


def all_stored() -> set[Path]:
    root = Path(django_settings.UPLOADS_DIR)
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture(autouse=True)
def _files_before():
    global BEFORE
    BEFORE = all_stored()


def stored_files() -> list[Path]:
    """Files the uploads storage holds that it did not hold when the test began."""
    return sorted(all_stored() - BEFORE)


BEFORE: set[Path] = set()


def test_an_upload_is_stored_by_its_real_type_and_listed_for_its_owner_only(channel, alice, bob):
    response = upload(client_for(alice), files.png(), name="holiday.pdf", channel="lobby")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["mime"] == "image/png" and body["kind"] == "image"  # its bytes, not its name
    assert body["name"] == "holiday.pdf" and body["size"] == len(files.png())
    assert body["status"] == "uploaded" and body["channel"] == "lobby"
    assert body["url"] == f"/api/uploads/{body['id']}/content"
    row = Upload.objects.get(pk=body["id"])
    assert row.file.name == f"uploads/{alice.pk}/{row.pk}"  # never by the name it came with
    assert row.file.read() == files.png()
    # The room hears of it
    (told,) = [e for e in channel_events(channel) if e["type"] == "attachment_updated"]
    assert (told["id"], told["status"], told["progress"], told["error"]) == (body["id"], "uploaded", 0, None)

    assert client_for(alice).get(f"/api/uploads/{body['id']}").json() == body
    assert client_for(bob).get(f"/api/uploads/{body['id']}").status_code == 404
    assert client_for(alice).get("/api/uploads").json() == {"uploads": [body]}
    assert client_for(alice).get("/api/uploads?channel=lobby").json() == {"uploads": [body]}
    assert client_for(alice).get("/api/uploads?channel=other").json() == {"uploads": []}
    assert client_for(bob).get("/api/uploads").json() == {"uploads": []}
    assert client_for(alice).get("/api/uploads?page=2").status_code == 400


def test_lists_are_newest_first(alice):
    client = client_for(alice)
    ids = [upload(client, f"note {i}\n".encode()).json()["id"] for i in range(3)]
    assert [u["id"] for u in client.get("/api/uploads").json()["uploads"]] == ids[::-1]


def test_an_upload_without_a_channel_is_allowed(alice):
    response = upload(client_for(alice), files.pdf(2), name="report.pdf")
    assert response.status_code == 201 and response.json()["channel"] is None
    assert response.json()["mime"] == "application/pdf" and response.json()["kind"] == "document"


def test_anonymous_uploads_and_reads_are_401(alice):
    anonymous = APIClient()
    assert upload(anonymous, b"hello\n").status_code == 401
    assert anonymous.get("/api/uploads").status_code == 401
    assert not Upload.objects.exists() and stored_files() == []


def test_an_outsider_cannot_upload_to_a_private_channel_nor_tell_it_exists(private_channel, carol):
    hidden = upload(client_for(carol), b"hello\n", channel="backroom")
    missing = upload(client_for(carol), b"hello\n", channel="nowhere")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["code"] == "not_found"
    assert not Upload.objects.exists()


def test_a_removed_member_can_no_longer_upload_there(private_channel, alice, bob):
    assert upload(client_for(bob), b"one\n", channel="backroom").status_code == 201
    remove_member(actor=alice, channel=private_channel, user=bob)
    assert upload(client_for(bob), b"two\n", channel="backroom").status_code == 404
    assert Upload.objects.count() == 1


def test_a_locked_channel_refuses_uploads_from_members(channel, alice, bob):
    channel.locked = True
    channel.save()
    response = upload(client_for(bob), b"hi\n", channel="lobby")
    assert response.status_code == 409 and response.json()["code"] == "locked"


def test_a_26_mb_upload_is_413_naming_the_limit_and_nothing_is_stored_or_counted(alice):
    data = b"a" * (26 * 1024 * 1024)
    response = upload(client_for(alice), data)
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "too_large"
    assert "MAX_UPLOAD_BYTES (26214400 bytes)" in body["detail"]
    assert not Upload.objects.exists() and stored_files() == []
    assert limits.upload_bytes_today(alice) == 0


def test_a_file_just_over_the_limit_is_stopped_as_it_is_read(alice, settings):
    """Its Content-Length is within the multipart margin: the upload handler counting
    the bytes read stops it (as it would a chunked body, which has no length)."""
    settings.MAX_UPLOAD_BYTES = 1000
    response = upload(client_for(alice), b"b" * 1001)
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert "MAX_UPLOAD_BYTES (1000 bytes)" in response.json()["detail"]
    assert not Upload.objects.exists() and stored_files() == []


def test_a_file_lying_about_its_type_is_judged_by_its_bytes(alice):
    response = upload(client_for(alice), files.html(), name="photo.png")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_type"
    assert response.json()["fields"]["file"]
    assert not Upload.objects.exists() and stored_files() == []


@pytest.mark.parametrize(
    "data", [b"\x7fELF\x02\x01\x01" + b"\x00" * 200, b"MZ\x90\x00" + b"\x00" * 200], ids=["elf", "exe"]
)
def test_an_unsupported_type_is_415(alice, data):
    response = upload(client_for(alice), data, name="tool.txt")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_type"
    assert limits.upload_bytes_today(alice) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "file"), ({"channel": "lobby"}, "file"), ({"file": b"x", "color": "red"}, "color")],
)
def test_a_form_without_one_file_is_400_naming_the_field(channel, alice, body, field):
    data = {k: SimpleUploadedFile("a.txt", v) if k == "file" else v for k, v in body.items()}
    response = client_for(alice).post("/api/uploads", data, format="multipart")
    assert response.status_code == 400 and field in response.json()["fields"]


def test_an_empty_file_and_a_json_body_are_refused(alice):
    assert upload(client_for(alice), b"").status_code == 400
    response = client_for(alice).post("/api/uploads", {"file": "x"}, format="json")
    assert response.status_code == 415 and response.json()["code"] == "invalid"


def test_the_daily_bytes_limit_is_429_naming_it_and_counts_nothing_refused(alice, settings):
    settings.DAILY_UPLOAD_BYTES = 100
    client = client_for(alice)
    assert upload(client, b"x" * 60 + b"\n").status_code == 201
    refused = upload(client, b"y" * 60 + b"\n")
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "quota_exceeded" and "DAILY_UPLOAD_BYTES (100 bytes)" in body["detail"]
    assert 0 < body["retry_after"] <= 86400 and refused["Retry-After"] == str(body["retry_after"])
    assert limits.upload_bytes_today(alice) == 61
    assert upload(client, b"z" * 38 + b"\n").status_code == 201  # exactly up to the limit
    assert Upload.objects.count() == 2


def test_parallel_uploads_cannot_slip_past_the_daily_bytes(alice, settings):
    """Eight uploads at once, room for three: exactly three get in."""
    settings.DAILY_UPLOAD_BYTES = 3 * 1000
    client = client_for(alice)
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def send(i: int) -> None:
        barrier.wait()
        statuses.append(upload(client, bytes([65 + i]) * 999 + b"\n").status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] * 3 + [429] * 5
    assert Upload.objects.count() == 3 and limits.upload_bytes_today(alice) == 3000


def test_the_owner_deletes_an_upload_and_its_file(channel, alice, bob):
    made = upload(client_for(alice), b"secret\n", channel="lobby").json()
    path = Path(django_settings.UPLOADS_DIR) / Upload.objects.get(pk=made["id"]).file.name
    assert path.exists()
    assert client_for(bob).delete(f"/api/uploads/{made['id']}").status_code == 404
    assert client_for(alice).delete(f"/api/uploads/{made['id']}").status_code == 204
    assert not Upload.objects.exists() and not path.exists()
    assert client_for(alice).get(f"/api/uploads/{made['id']}").status_code == 404
    assert client_for(alice).delete(f"/api/uploads/{made['id']}").status_code == 404
    assert client_for(alice).get("/api/uploads/not-an-id").status_code == 404


def test_an_admin_may_delete_anyones_upload_and_it_is_audited(alice, admin_user):
    made = upload(client_for(alice), b"spam\n").json()
    assert client_for(admin_user).delete(f"/api/uploads/{made['id']}").status_code == 204
    record = ModerationAction.objects.get(action="delete_upload")
    assert record.actor == admin_user and record.target_id == made["id"]


# --- through a real server: Django's ASGI handler reads a body whole before any view,
# so the guard in front of it (chat/uploads/body_limit.py) must refuse it first.


@pytest.fixture(scope="module")
def small_limit_server(django_db_setup, django_db_blocker):
    from tests.processes import live_servers

    with django_db_blocker.unblock(), live_servers("uvicorn", 1, MAX_UPLOAD_BYTES="200000") as hosts:
        yield hosts[0]


def raw_post(host: str, path: str, headers: list[str], chunks=()) -> bytes:
    """Send a request by hand (headers, then ``chunks`` of chunked body, as far as the
    server lets us) and return what the server answered."""
    import contextlib
    import socket

    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        sock.sendall(
            ("\r\n".join([f"POST {path} HTTP/1.1", f"Host: {host}", *headers]) + "\r\n\r\n").encode()
        )
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


def test_a_declared_26_mb_body_is_refused_before_it_is_sent(small_limit_server, alice):
    token = ApiToken.issue(alice)
    answer = raw_post(
        small_limit_server,
        "/api/uploads",
        [
            f"Authorization: Bearer {token}",
            "Content-Type: multipart/form-data; boundary=x",
            f"Content-Length: {26 * 1024 * 1024}",
        ],
    )  # no body at all: the answer comes on the headers alone
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"too_large"' in answer and b"MAX_UPLOAD_BYTES (200000 bytes)" in answer


def test_a_chunked_body_is_cut_off_where_it_passes_the_limit(small_limit_server, alice):
    token = ApiToken.issue(alice)
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    chunks = [head] + [b"a" * 16384] * 20  # 320 KiB
    answer = raw_post(
        small_limit_server,
        "/api/uploads",
        [
            f"Authorization: Bearer {token}",
            "Content-Type: multipart/form-data; boundary=x",
            "Transfer-Encoding: chunked",
        ],
        chunks,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert not Upload.objects.exists()
    # a message body too long for any message is refused the same way
    answer = raw_post(
        small_limit_server,
        "/api/channels/lobby/messages",
        [f"Authorization: Bearer {token}", "Content-Type: application/json", "Content-Length: 99999999"],
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_an_office_file_whose_document_comes_after_a_megabyte_of_pictures_is_still_a_docx(alice):
    import io
    import os
    import zipfile

    from chat.uploads.services import create_upload
    from chat.uploads.sniff import DOCX

    original = zipfile.ZipFile(io.BytesIO(files.docx(["after the pictures"])))
    padded = io.BytesIO()
    with zipfile.ZipFile(padded, "w") as out:
        out.writestr(zipfile.ZipInfo("word/media/image1.png"), os.urandom(2 * 1024 * 1024))
        for info in original.infolist():
            out.writestr(info, original.read(info))
    upload = create_upload(user=alice, data_or_file=padded.getvalue(), name="report.docx")
    assert (upload.kind, upload.mime) == ("document", DOCX)
