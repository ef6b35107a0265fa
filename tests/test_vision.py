"""The vision capability (issue 15): a message with an image to a model that does not
read images is refused (`no_vision`) before anything is counted; a failover model that
cannot see the image is skipped; the admin shows the capabilities. The built-in demo
reads images (a fresh install shows every feature offline) and says what it received."""

from __future__ import annotations

import base64

import pytest

from chat import limits
from chat.errors import ServiceError
from chat.generation.records import ensure_default_providers
from chat.models import Provider, Turn, Upload
from chat.services import regenerate
from chat.uploads.vision import require_vision
from tests.conftest import add_provider, client_for, use_provider, wait_for_done
from tests.test_attachment_prompts import (  # noqa: F401 (uploads_in_tmp: a fixture)
    document_upload,
    image_upload,
    send_with,
    stored_bytes,
    uploads_in_tmp,
)

pytestmark = pytest.mark.django_db(transaction=True)


def refused(channel, user, uploads, request=None) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        require_vision(channel=channel, user=user, request=request or {}, uploads=uploads)
    assert caught.value.code == "no_vision" and caught.value.http_status == 400
    return caught.value


def blind(channel, openai_server) -> None:
    """The channel answered by an OpenAI-compatible model that reads no images."""
    add_provider("plain", openai_server.base_url)
    use_provider(channel, "plain")


def test_a_model_without_vision_is_refused_naming_model_provider_and_file(channel, alice, openai_server):
    blind(channel, openai_server)
    png = image_upload(alice, "PNG", name="cat.png")
    error = refused(channel, alice, [png])
    assert error.text.startswith("The model test-model of provider plain does not read images;")
    assert error.fields == {"attachments": [f"Upload {png.pk} (cat.png) is an image."]}


def test_the_demo_reads_images_except_in_completion_mode(channel, alice):
    """Its row (a fresh install's, made by migrations and setup_instance) and, with no
    row at all, the built-in DEMO_CONFIG."""
    png = image_upload(alice, "PNG", name="cat.png")
    Provider.objects.filter(kind="demo").delete()
    require_vision(channel=channel, user=alice, request={}, uploads=[png])
    ensure_default_providers()
    assert Provider.objects.get(name="demo").sees_images()
    require_vision(channel=channel, user=alice, request={}, uploads=[png])  # the channel's demo
    channel.mode = "completion"
    channel.save()
    assert "The model demo of provider demo" in refused(channel, alice, [png]).text


def test_the_demo_says_which_files_it_received(channel, alice):
    """Through the message service: the demo's reply names the images (size from their
    meta) and the documents it received, then answers the text as it always does."""
    ensure_default_providers()  # the demo's row, as a fresh install has it
    png = image_upload(alice, "PNG", name="cat.png")
    jpeg = image_upload(alice, "JPEG", name="dog.jpeg", size=(40, 30))
    doc = document_upload(alice, "notes.txt", "buy milk")
    send_with(channel, alice, "I feel tired", [png, jpeg, doc])
    events = wait_for_done(channel)
    turn = Turn.objects.get(role="bot")
    assert turn.provider == "demo" and turn.finish_reason == "stop"
    head = (
        "I see 2 images (cat.png, 64×48; dog.jpeg, 40×30). I am the demo, so I cannot tell what is in "
        "them; connect a model that reads images. I have read notes.txt: 8 characters. "
    )
    assert turn.text in (head + "Why do you feel tired?", head + "How long have you felt tired?")
    assert "".join(e["data"] for e in events if e["type"] == "token") == turn.text  # streamed
    assert "[image: cat.png, image/png, 64x48]" in turn.prompt  # the demo was sent the image
    send_with(channel, alice, "", [image_upload(alice, "PNG", name="again.png")])  # files alone
    wait_for_done(channel, count=2)
    assert Turn.objects.filter(role="bot").latest("id").text == (
        "I see 1 image (again.png, 64×48). I am the demo, so I cannot tell what is in it; "
        "connect a model that reads images."
    )


def test_documents_and_svg_need_no_vision(channel, alice):
    svg = document_upload(alice, "logo.svg", "<svg/>", kind="image", mime="image/svg+xml")
    require_vision(
        channel=channel, user=alice, request={}, uploads=[svg, document_upload(alice, "a.txt", "hi")]
    )


def test_a_provider_reads_images_when_vision_is_ticked(channel, alice, openai_server):
    add_provider("plain", openai_server.base_url)
    use_provider(channel, "plain")
    png = image_upload(alice, "PNG")
    assert (
        "The model test-model of provider plain does not read images" in refused(channel, alice, [png]).text
    )
    add_provider("eyes", openai_server.base_url, vision=True)
    use_provider(channel, "eyes")
    require_vision(channel=channel, user=alice, request={}, uploads=[png])


def test_vision_models_limit_which_models_read_images(channel, alice, openai_server):
    add_provider("mixed", openai_server.base_url, vision=True, vision_models=["big-eyes"])
    use_provider(channel, "mixed")
    png = image_upload(alice, "PNG")
    refused(channel, alice, [png])  # its default model, test-model, is not among them
    require_vision(channel=channel, user=alice, request={"params": {"model": "big-eyes"}}, uploads=[png])


def test_the_demo_says_what_it_read_of_documents_and_recordings(channel, alice, settings):
    settings.ATTACHMENT_PROMPT_CHARS = 10
    long = document_upload(alice, "log.txt", "x" * 25)
    blank = document_upload(alice, "blank.pdf", "", mime="application/pdf")
    memo = document_upload(alice, "memo.mp3", "hello", kind="audio", mime="audio/mpeg")
    send_with(channel, alice, "", [long, blank, memo])
    wait_for_done(channel)
    assert Turn.objects.get(role="bot").text == (
        "I have read log.txt: 10 characters (the rest was left out). "
        "I have read blank.pdf: it holds no text. I have heard memo.mp3: 5 characters."
    )


def test_the_messages_own_provider_choice_is_the_one_checked(channel, alice, openai_server):
    blind(channel, openai_server)
    add_provider("eyes", openai_server.base_url, vision=True)
    png = image_upload(alice, "PNG")
    refused(channel, alice, [png])  # the channel's model reads no images
    require_vision(
        channel=channel, user=alice, request={"params": {"provider": "eyes", "model": ""}}, uploads=[png]
    )
    use_provider(channel, "eyes")
    error = refused(channel, alice, [png], request={"params": {"provider": "plain", "model": ""}})
    assert "The model test-model of provider plain" in error.text


def test_completion_mode_sends_no_images(channel, alice, openai_server):
    add_provider("eyes", openai_server.base_url, vision=True)
    use_provider(channel, "eyes")
    channel.mode = "completion"
    channel.save()
    error = refused(channel, alice, [image_upload(alice, "JPEG")])
    assert "completion mode" in error.text


def test_an_image_to_a_blind_model_is_refused_before_anything_is_counted(channel, alice, openai_server):
    """REST: 400 no_vision naming the model, no turn saved, the messages count and the
    upload unchanged (still the caller's, unsent); the same image to a vision model
    then goes through."""
    blind(channel, openai_server)
    png = image_upload(alice, "PNG", name="cat.png")
    before = limits.usage_today(alice)
    response = client_for(alice).post(
        "/api/channels/lobby/messages", {"text": "What is it?", "attachments": [str(png.pk)]}, format="json"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "no_vision"
    assert body["detail"].startswith("The model test-model of provider plain does not read images;")
    assert body["fields"] == {"attachments": [f"Upload {png.pk} (cat.png) is an image."]}
    assert limits.usage_today(alice) == before
    assert Turn.objects.count() == 0 and openai_server.requests == []
    png.refresh_from_db()
    assert png.turn_id is None
    add_provider("eyes", openai_server.base_url, vision=True)
    response = client_for(alice).post(
        "/api/channels/lobby/messages",
        {"text": "What is it?", "attachments": [str(png.pk)], "params": {"provider": "eyes"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["user_turn"]["attachments"][0]["id"] == str(png.pk)
    assert openai_server.requests[0]["messages"][-1]["content"][0]["type"] == "image_url"
    assert limits.usage_today(alice)["messages"] == before["messages"] + 1


async def test_a_websocket_message_gets_the_no_vision_error_frame(channel, alice, openai_server):
    from chat.realtime.async_db import db_call
    from tests.ws_helpers import open_socket, receive_until, token_for

    await db_call(blind)(channel, openai_server)
    png = await db_call(image_upload)(alice, "PNG", name="cat.png")
    before = await db_call(limits.usage_today)(alice)
    socket, connected, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    assert connected
    try:
        await socket.send_json_to({"type": "message", "text": "Look", "attachments": [str(png.pk)]})
        error = (await receive_until(socket, "error"))[-1]
    finally:
        await socket.disconnect()
    assert error["code"] == "no_vision"
    assert error["text"].startswith("The model test-model of provider plain does not read images;")
    assert await db_call(limits.usage_today)(alice) == before
    assert not await db_call(Turn.objects.exists)() and openai_server.requests == []


def test_the_seed_image_form_is_checked_too(channel, alice, openai_server):
    from tests.test_attachment_prompts import picture

    blind(channel, openai_server)
    before = limits.usage_today(alice)
    response = client_for(alice).post(
        "/api/channels/lobby/messages",
        {"text": "See", "image": base64.b64encode(picture("JPEG")).decode(), "image_mime": "image/jpeg"},
        format="json",
    )
    assert response.status_code == 400 and response.json()["code"] == "no_vision"
    assert "The model test-model of provider plain" in response.json()["detail"]
    assert limits.usage_today(alice) == before
    assert Turn.objects.count() == 0 and Upload.objects.count() == 0


def test_a_document_needs_no_vision_over_rest(channel, alice, openai_server):
    blind(channel, openai_server)
    doc = document_upload(alice, "notes.txt", "buy milk")
    response = client_for(alice).post(
        "/api/channels/lobby/messages", {"text": "", "attachments": [str(doc.pk)]}, format="json"
    )
    assert response.status_code == 200, response.content


def test_regenerate_refuses_before_anything_is_counted(channel, alice, openai_server):
    """The answered turn's image, for a model chosen since that cannot see it: 400
    no_vision over REST, nothing hidden, the messages count unchanged."""
    add_provider("eyes", openai_server.base_url, vision=True)
    add_provider("plain", openai_server.base_url, priority=20)
    use_provider(channel, "eyes")
    send_with(channel, alice, "What is it?", [image_upload(alice, "PNG")])
    wait_for_done(channel)
    assert openai_server.requests[0]["messages"][-1]["content"][0]["type"] == "image_url"
    before = limits.usage_today(alice)
    response = client_for(alice).post(
        "/api/channels/lobby/regenerate", {"params": {"provider": "plain"}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "no_vision"
    assert "The model test-model of provider plain does not read images" in response.json()["detail"]
    assert limits.usage_today(alice) == before
    assert Turn.objects.filter(role="bot", hidden=True).count() == 0
    use_provider(channel, "plain")
    with pytest.raises(ServiceError) as caught:
        regenerate(channel=channel, user=alice)  # the choices kept: the channel's model now
    assert caught.value.code == "no_vision" and limits.usage_today(alice) == before
    assert len(openai_server.requests) == 1


def test_failover_skips_a_member_that_cannot_see_the_image(
    channel, alice, openai_server, second_openai_server, anthropic_server
):
    """The first (vision) model fails; the next in priority reads no images and is never
    asked; the one after it, which does, answers with the image."""
    openai_server.behaviour.status = 503
    add_provider("first", openai_server.base_url, vision=True, priority=1)
    add_provider("blind", second_openai_server.base_url, priority=2)
    add_provider(
        "claude", anthropic_server.base_url.removesuffix("/v1"), kind="anthropic", vision=True, priority=3
    )
    use_provider(channel, "first")
    png = image_upload(alice, "PNG")
    send_with(channel, alice, "What is it?", [png])
    wait_for_done(channel)
    assert len(openai_server.requests) == 2  # tried twice: a 503 may pass
    assert second_openai_server.requests == []
    content = anthropic_server.requests[0]["messages"][-1]["content"]
    assert content[0]["type"] == "image" and base64.b64decode(content[0]["source"]["data"]) == stored_bytes(
        png
    )
    turn = Turn.objects.get(role="bot")
    assert turn.provider == "claude" and turn.text == "Hello, world."


def test_without_images_failover_still_reaches_models_that_read_none(
    channel, alice, openai_server, second_openai_server
):
    openai_server.behaviour.status = 503
    add_provider("first", openai_server.base_url, vision=True, priority=1)
    add_provider("blind", second_openai_server.base_url, priority=2)
    use_provider(channel, "first")
    send_with(channel, alice, "Read it", [document_upload(alice, "a.txt", "plain words")])
    wait_for_done(channel)
    assert (
        "[file: a.txt]\nplain words\n[end of a.txt]"
        in second_openai_server.requests[0]["messages"][-1]["content"]
    )


def test_a_model_switched_to_one_without_vision_gets_the_image_named(channel, alice, openai_server):
    """An image sent earlier, a channel switched since to a model that reads none: the
    next reply names the image in the text rather than failing."""
    add_provider("eyes", openai_server.base_url, vision=True)
    add_provider("plain", openai_server.base_url, priority=20)
    use_provider(channel, "eyes")
    send_with(channel, alice, "Look", [image_upload(alice, "PNG", name="cat.png")])
    wait_for_done(channel)
    use_provider(channel, "plain")
    send_with(channel, alice, "Now text only", [])
    wait_for_done(channel, count=2)
    first = openai_server.requests[1]["messages"][1]
    assert first == {
        "role": "user",
        "content": "[image not sent: cat.png (this model does not read images)]\n\nLook",
    }


def test_the_admin_form_shows_the_capabilities(admin_user, openai_server):
    from django.test import Client

    provider = add_provider("eyes", openai_server.base_url, vision=True)
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/chat/provider/{provider.pk}/change/").content.decode()
    for name in ("vision", "vision_models", "transcription", "transcription_model"):
        assert f'name="{name}"' in page
    listing = client.get("/admin/chat/provider/?vision__exact=1").content.decode()
    assert "eyes" in listing
