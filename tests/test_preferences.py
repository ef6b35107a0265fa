"""A user's defaults (issue 14): GET/PATCH /api/me `preferences`, the account page's
form, and where they apply: the model where the channel's member_params offers it, the
instruction where the channel has none of its own."""

from __future__ import annotations

import pytest
from django.test import Client

from chat import services
from chat.generation.records import ensure_default_providers
from chat.models import Instruction, UserPreference
from tests.conftest import add_provider, client_for

pytestmark = pytest.mark.django_db(transaction=True)


def patch_me(user, payload):
    return client_for(user).patch("/api/me", payload, format="json")


def test_a_new_user_has_empty_defaults(alice):
    assert client_for(alice).get("/api/me").json()["preferences"] == {
        "provider": "",
        "model": "",
        "instruction": None,
        "memory_enabled": True,  # memory (issue 17): on, in rooms others read only by consent
        "memory_in_shared_rooms": False,
    }


def test_a_user_sets_and_clears_their_defaults(alice, openai_server):
    add_provider("other", openai_server.base_url, model_names=["small", "big"])
    common = Instruction.objects.create(name="Concise", text="Be brief.")
    response = patch_me(alice, {"provider": "other", "model": "big", "instruction": common.pk})
    assert response.status_code == 200
    assert response.json()["preferences"] == {
        "provider": "other",
        "model": "big",
        "instruction": common.pk,
        "memory_enabled": True,
        "memory_in_shared_rooms": False,
    }
    assert response.json()["username"] == "alice"  # the whole account, as GET gives it
    cleared = patch_me(alice, {"provider": "", "instruction": None}).json()["preferences"]
    assert cleared == {
        "provider": "",
        "model": "",
        "instruction": None,
        "memory_enabled": True,
        "memory_in_shared_rooms": False,
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"provider": "nope"}, "provider"),
        ({"provider": "other", "model": "huge"}, "model"),
        ({"model": "big"}, "provider"),
        ({"provider": 5}, "provider"),
        ({"provider": "x" * 65}, "provider"),
        ({"model": "x" * 201}, "model"),
        ({"instruction": "1"}, "instruction"),
        ({"instruction": 10**6}, "instruction"),
        ({"colour": "red"}, "colour"),
        ({"username": "root"}, "username"),
    ],
)
def test_bad_defaults_are_a_400_naming_the_field(alice, openai_server, payload, field):
    add_provider("other", openai_server.base_url, model_names=["small", "big"])
    response = patch_me(alice, payload)
    assert response.status_code == 400 and field in response.json()["fields"], response.json()
    assert not UserPreference.objects.filter(provider="nope").exists()


def test_someone_elses_instruction_is_no_default(alice, bob):
    bobs = services.create_instruction(user=bob, name="Mine", text="x")
    response = patch_me(alice, {"instruction": bobs.pk})
    assert response.status_code == 400 and "instruction" in response.json()["fields"]


def test_anonymous_callers_and_form_bodies_are_refused(alice):
    assert client_for().patch("/api/me", {"provider": ""}, format="json").status_code == 401
    form = client_for(alice).patch("/api/me", {"provider": "demo"})  # multipart
    assert form.status_code == 400


def test_the_default_model_is_used_where_the_channel_offers_it(channel, alice, bob, openai_server):
    add_provider("other", openai_server.base_url, model_names=["small", "big"])
    patch_me(bob, {"provider": "other", "model": "big"})
    first = client_for(bob).post("/api/channels/lobby/messages", {"text": "hi"}, format="json").json()
    assert first["bot_turn"]["provider"] == "demo"  # not offered: the channel's own
    services.update_channel(channel=channel, user=alice, changes={"member_params": {"models": ["other/big"]}})
    second = client_for(bob).post("/api/channels/lobby/messages", {"text": "hi"}, format="json").json()
    assert second["user_turn"]["request"] == {"params": {"provider": "other", "model": "big"}}
    assert second["bot_turn"]["model"] == "big" and openai_server.requests[0]["model"] == "big"
    # a model chosen in the message wins over the default
    ensure_default_providers()  # the demo's row, as every instance has it (a flush took it)
    third = client_for(bob).post(
        "/api/channels/lobby/messages", {"text": "hi", "params": {"provider": "demo"}}, format="json"
    )
    assert third.status_code == 200 and third.json()["bot_turn"]["provider"] == "demo"


def test_the_default_instruction_applies_where_the_channel_has_none(channel, alice, bob):
    mine = services.create_instruction(user=bob, name="Pirate", text="Arr.")
    patch_me(bob, {"instruction": mine.pk})
    send = lambda: client_for(bob).post("/api/channels/lobby/messages", {"text": "hi"}, format="json")  # noqa: E731
    assert send().json()["bot_turn"]["instruction"] == "Pirate"
    common = Instruction.objects.create(name="Concise", text="Be brief.")
    services.update_channel(channel=channel, user=alice, changes={"instruction": common.pk})
    assert send().json()["bot_turn"]["instruction"] == "Concise"


def test_the_account_page_sets_the_defaults(alice, openai_server):
    add_provider("other", openai_server.base_url, model_names=["small", "big"])
    common = Instruction.objects.create(name="Concise <b>", text="Be brief.")
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/account/").content.decode()
    assert 'value="other/big"' in page and "Concise &lt;b&gt;" in page
    response = browser.post(
        "/account/", {"form": "preferences", "model": "other/big", "instruction": str(common.pk)}
    )
    assert response.status_code == 302
    preference = UserPreference.objects.get(user=alice)
    assert (preference.provider, preference.model, preference.instruction_id) == ("other", "big", common.pk)
    bad = browser.post("/account/", {"form": "preferences", "model": "nope/x", "instruction": ""})
    assert bad.status_code == 400
    assert UserPreference.objects.get(user=alice).model == "big"
