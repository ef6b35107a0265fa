"""Session titles (issue 14): after a reply, the task model names a session that has no
title, in the background, and every socket and SSE stream of the channel hears it as
`session_updated`. The task model is a real HTTP server speaking the OpenAI wire format
(tests/fake_models.py), or the offline demo."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from httpx_sse import connect_sse

from chat import services
from chat.generation.titles import clean_title, demo_title
from chat.models import ApiToken, Session, SiteSettings
from chat.realtime.async_db import db_call
from tests.conftest import add_provider, client_for, use_provider, use_slow_model, wait_for, wait_for_done
from tests.processes import live_servers
from tests.ws_helpers import open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _titles_on(settings):
    settings.SESSION_TITLES = True  # off in the other tests (tests/environment.py)


def send(user, text: str) -> dict:
    response = client_for(user).post("/api/channels/lobby/messages", {"text": text}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def title_of(session_id) -> str:
    return wait_for(lambda: Session.objects.get(pk=session_id).title, timeout=15)


def use_task_model(server, tokens: list[str]) -> None:
    server.behaviour.tokens = tokens
    site = SiteSettings.load()
    site.task_provider = add_provider("tasks", server.base_url, priority=50)
    site.task_model = "small-model"
    site.save()


@pytest.mark.asyncio
async def test_the_demo_names_the_session_from_the_first_words_and_everyone_hears_it(channel, alice):
    socket, connected, _ = await open_socket("/ws/lobby?watch=1")
    assert connected and (await receive(socket))["type"] == "history"
    answer = await db_call(send)(alice, "how do I grow tomatoes on a small balcony?")
    async with asyncio.timeout(15):
        while (event := await receive(socket))["type"] != "session_updated":
            pass
    assert event["session"] == answer["session"] and event["status"] == "active"
    assert event["title"] == "How do I grow tomatoes on"
    session = await db_call(Session.objects.get)(pk=answer["session"])
    assert session.title == event["title"] and session.title_by_person is False
    await socket.disconnect()


def test_the_task_model_chosen_in_the_admin_writes_the_title(
    channel, alice, openai_server, second_openai_server
):
    add_provider("main", openai_server.base_url)
    use_provider(channel, "main")
    use_task_model(second_openai_server, ['"Growing', " tomatoes", " indoors", '."'])
    answer = send(alice, "Wie ziehe ich Tomaten?")
    assert title_of(answer["session"]) == "Growing tomatoes indoors"
    (request,) = second_openai_server.requests
    assert request["model"] == "small-model" and request["max_tokens"] == 24
    system, user = request["messages"]
    assert system["role"] == "system" and "language of the conversation" in system["content"]
    assert "Wie ziehe ich Tomaten?" in user["content"] and "Hello, world." in user["content"]
    assert len(openai_server.requests) == 1  # the reply's model wrote only the reply


def test_without_a_task_model_the_channels_model_writes_it(channel, alice, openai_server):
    add_provider("main", openai_server.base_url)
    use_provider(channel, "main")
    answer = send(alice, "hi")
    assert title_of(answer["session"]) == "Hello, world"
    assert len(openai_server.requests) == 2


def test_a_title_a_person_set_while_the_reply_ran_is_kept(channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.05, tokens=["a"] * 10)
    turn = services.post_message(channel=channel, user=alice, text="hi")
    services.update_session(session=Session.objects.get(pk=turn.session_id), user=alice, title="Mine")
    wait_for_done(channel)
    assert services.save_generated_title(session_id=turn.session_id, title="Generated") is False
    assert Session.objects.get(pk=turn.session_id).title == "Mine"
    wait_for(lambda: len(openai_server.requests) == 1)


def test_a_cleared_title_comes_again_after_the_next_reply(channel, alice):
    first = send(alice, "planning a trip to Lisbon")
    assert title_of(first["session"]) == "Planning a trip to Lisbon"
    session = Session.objects.get(pk=first["session"])
    cleared = client_for(alice).patch(f"/api/sessions/{session.pk}", {"title": ""}, format="json")
    assert cleared.json()["title"] == ""
    send(alice, "and Porto")
    assert title_of(session.pk) == "Planning a trip to Lisbon"


def test_a_failing_task_model_leaves_no_title_and_no_error(
    channel, alice, second_openai_server, logged_errors
):
    second_openai_server.behaviour.status = 500
    use_task_model(second_openai_server, [])
    answer = send(alice, "hello")
    wait_for(lambda: len(second_openai_server.requests) == 1)
    assert Session.objects.get(pk=answer["session"]).title == ""
    assert logged_errors == []


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Tomatoes on a balcony."', "Tomatoes on a balcony"),
        ("Title: Trip to Lisbon\nmore words", "Trip to Lisbon"),
        ("**Bold title here**", "Bold title here"),
        ("one two three four five six seven eight", "one two three four five six"),
        ("  \n  ", ""),
    ],
)
def test_the_models_answer_is_cleaned(answer, title):
    assert clean_title(answer) == title


def test_the_demo_title_takes_words_not_punctuation():
    assert demo_title("  ¿qué tal?  ") == "Qué tal"
    assert demo_title("!!!") == ""


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 1, SESSION_TITLES="1") as hosts:
        yield f"http://{hosts[0]}"


def test_an_sse_stream_hears_the_title(server, channel, alice):
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice)}"}
    with (
        httpx.Client(base_url=server, timeout=15) as client,
        connect_sse(client, "GET", "/api/channels/lobby/events") as source,
    ):
        events = (event for event in source.iter_sse() if event.event != "presence")
        assert next(events).event == "history"
        message = {"text": "bake bread"}
        httpx.post(f"{server}/api/channels/lobby/messages", json=message, headers=headers, timeout=15)
        updated = next(event for event in events if event.event == "session_updated")
        assert json.loads(updated.data)["title"] == "Bake bread"


def test_an_admin_picks_the_task_model_in_the_admin(admin_user, mona, openai_server):
    from django.test import Client

    provider = add_provider("small", openai_server.base_url)
    browser = Client()
    browser.force_login(admin_user)
    listing = browser.get("/admin/chat/sitesettings/")
    assert listing.status_code == 302 and listing["Location"] == "/admin/chat/sitesettings/1/change/"
    form = browser.get(listing["Location"])
    assert form.status_code == 200 and b"Task provider" in form.content
    saved = browser.post(listing["Location"], {"task_provider": provider.pk, "task_model": "tiny"})
    assert saved.status_code == 302
    site = SiteSettings.load()
    assert site.task_provider == provider and site.task_model == "tiny"
    assert browser.get("/admin/chat/sitesettings/add/").status_code == 403
    moderator = Client()
    moderator.force_login(mona)
    assert moderator.get("/admin/chat/sitesettings/1/change/").status_code == 403
