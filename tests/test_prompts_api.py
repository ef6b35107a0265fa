"""`POST /api/prompts` (issue 14): suggested prompts from the task model, as Server-Sent
Events (through a real server process) or JSON; logged in only; one message against
the caller's limits; a 400 naming every bad field. The task model is a real HTTP server
speaking the OpenAI wire format (tests/fake_models.py), or the offline demo."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import connect_sse

from chat.limits import usage_today
from chat.models import ApiToken, SiteSettings
from chat.services import create_channel
from tests.conftest import add_provider, client_for, use_provider
from tests.processes import live_servers

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"HTTP_ACCEPT": "application/json"}
LINES = ["1. Write a poem", " about rain\n", "2. Plan a trip\n", "- Explain ", "rust\n", "4. Extra"]


def ask(user, body, **headers):
    return client_for(user).post("/api/prompts", body, format="json", **{**JSON, **headers})


def use_task_model(server, tokens: list[str]) -> None:
    server.behaviour.tokens = tokens
    site = SiteSettings.load()
    site.task_provider = add_provider("tasks", server.base_url, priority=50)
    site.save()


def test_the_demo_suggests_as_many_as_asked(alice):
    response = ask(alice, {"text": "", "n": 2, "kind": "question"})
    assert response.status_code == 200
    prompts = response.json()["prompts"]
    assert len(prompts) == 2 and all(p.endswith("?") for p in prompts)
    assert len(ask(alice, {"text": "gardening"}).json()["prompts"]) == 3  # n defaults to 3


def test_the_task_model_writes_them_line_by_line(alice, openai_server):
    use_task_model(openai_server, LINES)
    response = ask(alice, {"text": "weekend ideas", "n": 3, "kind": "creative"})
    assert response.json() == {"prompts": ["Write a poem about rain", "Plan a trip", "Explain rust"]}
    (request,) = openai_server.requests
    system, user = request["messages"]
    assert "Suggest 3 different creative" in system["content"] and user["content"] == "weekend ideas"


def test_a_channels_model_answers_when_no_task_model_is_chosen(channel, alice, openai_server):
    add_provider("main", openai_server.base_url)
    use_provider(channel, "main")
    openai_server.behaviour.tokens = ["Only one"]
    assert ask(alice, {"text": "x", "n": 2, "channel": "lobby"}).json() == {"prompts": ["Only one"]}
    assert len(openai_server.requests) == 1


def test_a_failing_model_is_a_502(alice, openai_server):
    use_task_model(openai_server, [])
    openai_server.behaviour.status = 400
    response = ask(alice, {"text": "x"})
    assert response.status_code == 502 and response.json()["code"] == "provider_error"


def test_it_counts_as_one_message(alice, settings):
    settings.MESSAGES_PER_MINUTE = 1
    assert ask(alice, {"text": ""}).status_code == 200
    assert usage_today(alice)["messages"] == 1
    refused = ask(alice, {"text": ""})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"


def test_only_logged_in_users_may_ask(db):
    assert ask(None, {"text": ""}).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "", "n": 0}, "n"),
        ({"text": "", "n": 6}, "n"),
        ({"text": "", "n": "3"}, "n"),
        ({"text": "", "kind": "poem"}, "kind"),
        ({"text": 5}, "text"),
        ({}, "text"),
        ({"text": "", "mood": "happy"}, "mood"),
        ({"text": "", "channel": "nowhere"}, "channel"),
        ({"text": "", "channel": "backroom"}, "channel"),  # private, and not carol's
    ],
)
def test_every_bad_field_is_a_400_naming_it(private_channel, carol, body, field):
    response = ask(carol, body)
    assert response.status_code == 400 and field in response.json()["fields"]


def test_too_long_a_text_is_a_413(alice, settings):
    settings.MAX_MESSAGE_CHARS = 10
    assert ask(alice, {"text": "x" * 11}).status_code == 413


def test_a_removed_member_may_not_name_the_channel(private_channel, alice, bob):
    from chat.services import remove_member

    assert ask(bob, {"text": "", "channel": "backroom"}).status_code == 200
    remove_member(actor=alice, channel=private_channel, user=bob)
    assert ask(bob, {"text": "", "channel": "backroom"}).status_code == 400


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 1) as hosts:
        yield f"http://{hosts[0]}"


def stream(server: str, user, body) -> list[tuple[str, dict]]:
    headers = {"Authorization": f"Bearer {ApiToken.issue(user)}", "Accept": "text/event-stream"}
    with (
        httpx.Client(base_url=server, timeout=15) as client,
        connect_sse(client, "POST", "/api/prompts", json=body, headers=headers) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(event.event, json.loads(event.data)) for event in source.iter_sse()]


def test_suggestions_stream_one_event_each_then_done(server, alice, openai_server):
    use_task_model(openai_server, LINES)
    events = stream(server, alice, {"text": "", "n": 3})
    assert events == [
        ("prompt", {"index": 0, "text": "Write a poem about rain"}),
        ("prompt", {"index": 1, "text": "Plan a trip"}),
        ("prompt", {"index": 2, "text": "Explain rust"}),
        ("done", {"prompts": ["Write a poem about rain", "Plan a trip", "Explain rust"]}),
    ]


def test_the_demo_streams_too_and_a_failure_is_an_error_event(server, alice, openai_server):
    events = stream(server, alice, {"text": "bread", "n": 2, "kind": "continuation"})
    assert [name for name, _ in events] == ["prompt", "prompt", "done"]
    assert events[0][1]["text"] == "Tell me more about bread"
    use_task_model(openai_server, [])
    openai_server.behaviour.status = 400
    failed = stream(server, alice, {"text": ""})
    assert [name for name, _ in failed] == ["error", "done"] and failed[-1][1] == {"prompts": []}


def test_errors_come_as_json_even_when_a_stream_is_asked_for(server, alice):
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice)}", "Accept": "text/event-stream"}
    response = httpx.post(f"{server}/api/prompts", json={"text": "", "n": 9}, headers=headers)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert list(response.json()["fields"]) == ["n"]


def test_a_private_channel_of_ones_own_may_be_named(alice):
    create_channel(name="mine", owner=alice, visibility="private")
    assert ask(alice, {"text": "", "channel": "mine"}).status_code == 200


def test_with_credits_on_someone_with_nothing_left_gets_no_suggestions(alice, settings):
    """Suggestions are not billed (docs/credits.md), but they are model output: a person
    whose credits are spent gets 402 like a message, and nothing is counted."""
    from tests.credits_helpers import assert_ledger_balances, set_available

    settings.CREDITS_ENABLED = True
    set_available(alice, 0)
    response = ask(alice, {"text": "gardening"})
    assert response.status_code == 402 and response.json()["code"] == "insufficient_credits"
    assert usage_today(alice)["messages"] == 0
    set_available(alice, 1)  # any credit left: served, and still not billed
    assert ask(alice, {"text": "gardening"}).status_code == 200
    assert assert_ledger_balances(alice).available == 1
