"""GET /api/uploads/{id}/content: the bytes, only to those who may see them (checked on
every request), and never as something a browser would run."""

from __future__ import annotations

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from chat.models import Upload
from chat.services import hide_turn, post_message, rotate_watch_key, update_session
from tests import files
from tests.conftest import client_for, wait_until_no_generation

pytestmark = pytest.mark.django_db(transaction=True)

SANDBOX = "default-src 'none'; sandbox"


def own_upload(user, data: bytes, name: str) -> dict:
    response = client_for(user).post(
        "/api/uploads", {"file": SimpleUploadedFile(name, data)}, format="multipart"
    )
    assert response.status_code == 201, response.content
    return response.json()


def sent_image(channel, user):
    """A PNG sent with a message (the seed form: processed at once, ready)."""
    turn = post_message(channel=channel, user=user, text="look", image=base64.b64encode(files.png()).decode())
    wait_until_no_generation()
    return Upload.objects.get(turn=turn)


def content(client, upload_id, query: str = ""):
    response = client.get(f"/api/uploads/{upload_id}/content{query}")
    if response.status_code == 200:
        response.body = b"".join(response.streaming_content)
    return response


def test_the_owner_reads_a_document_before_sending_it_as_a_sandboxed_download(alice, bob):
    pdf = files.pdf(2)
    made = own_upload(alice, pdf, "Résumé 2026.pdf")
    response = content(client_for(alice), made["id"])
    assert response.status_code == 200 and response.body == pdf
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Length"] == str(len(pdf))
    assert response["Content-Disposition"].startswith("attachment;")
    assert "filename*=utf-8''R%C3%A9sum%C3%A9%202026.pdf" in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == SANDBOX
    assert "private" in response["Cache-Control"]
    # inline is for raster images only
    assert content(client_for(alice), made["id"], "?inline=1")["Content-Disposition"].startswith(
        "attachment;"
    )
    # not sent with a message: nobody else may read it
    assert content(client_for(bob), made["id"]).status_code == 404
    assert content(APIClient(), made["id"]).status_code == 404


def test_a_raster_image_is_inline_only_when_asked(alice):
    made = own_upload(alice, files.png(), "pic.png")
    assert content(client_for(alice), made["id"])["Content-Disposition"].startswith("attachment;")
    shown = content(client_for(alice), made["id"], "?inline=1")
    assert shown["Content-Disposition"].startswith("inline") and shown["Content-Type"] == "image/png"
    assert shown["Content-Security-Policy"] == SANDBOX and shown["X-Content-Type-Options"] == "nosniff"


def test_svg_is_never_inline(alice):
    made = own_upload(alice, files.svg(), "logo.svg")
    assert made["mime"] == "image/svg+xml"
    response = content(client_for(alice), made["id"], "?inline=1")
    assert response["Content-Type"] == "image/svg+xml"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Security-Policy"] == SANDBOX


@pytest.mark.parametrize("query", ["?inline=yes", "?inline=2", "?download=1"])
def test_odd_query_parameters_are_400(alice, query):
    made = own_upload(alice, files.png(), "pic.png")
    response = content(client_for(alice), made["id"], query)
    assert response.status_code == 400 and response.json()["code"] == "invalid"


def test_watchers_of_a_public_channel_read_what_was_sent_there(channel, alice, carol):
    sent = sent_image(channel, alice)
    for client in (APIClient(), client_for(carol)):
        response = content(client, sent.pk, "?inline=1")
        assert response.status_code == 200 and response["Content-Disposition"].startswith("inline")
        assert response.body == sent.file.open("rb").read()


def test_a_private_channels_files_need_membership_or_the_current_key(private_channel, alice, bob, carol):
    sent = sent_image(private_channel, bob)
    key = private_channel.watch_key
    assert content(client_for(alice), sent.pk).status_code == 200  # the owner of the channel
    assert content(client_for(carol), sent.pk).status_code == 404
    assert content(APIClient(), sent.pk).status_code == 404
    assert content(APIClient(), sent.pk, "?key=wrong").status_code == 404
    assert content(APIClient(), sent.pk, f"?key={key}&inline=1").status_code == 200
    rotate_watch_key(channel=private_channel, user=alice)
    assert content(APIClient(), sent.pk, f"?key={key}").status_code == 404  # the old key stops
    private_channel.refresh_from_db()
    assert content(APIClient(), sent.pk, f"?key={private_channel.watch_key}").status_code == 200


def test_a_hidden_turns_file_is_for_moderators_and_its_owner(channel, alice, bob, carol, mona):
    sent = sent_image(channel, bob)
    hide_turn(actor=mona, turn=sent.turn)
    assert content(APIClient(), sent.pk).status_code == 404
    assert content(client_for(carol), sent.pk).status_code == 404
    assert content(client_for(mona), sent.pk).status_code == 200
    assert content(client_for(bob), sent.pk).status_code == 200


def test_a_deleted_sessions_file_is_for_those_who_manage_it(channel, alice, bob, carol):
    sent = sent_image(channel, bob)
    update_session(session=sent.turn.session, user=alice, status="deleted")  # kept until purged
    assert content(APIClient(), sent.pk).status_code == 404
    assert content(client_for(carol), sent.pk).status_code == 404
    assert content(client_for(alice), sent.pk).status_code == 200


def test_a_deleted_upload_is_404(alice):
    made = own_upload(alice, files.png(), "pic.png")
    assert client_for(alice).delete(f"/api/uploads/{made['id']}").status_code == 204
    assert content(client_for(alice), made["id"]).status_code == 404
    assert content(client_for(alice), "not-a-uuid").status_code == 404
