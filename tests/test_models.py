import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, transaction

from chat.errors import ServiceError
from chat.models import Channel, Session, Turn
from chat.services import create_channel

BAD_NAMES = ["", "-lead", "_lead", "Upper", "with space", "dot.name", "ünï", "a" * 65, "slash/x", "new\nline"]
GOOD_NAMES = ["a", "0", "a-b_c", "x" * 64, "9lives"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_channel_names_are_rejected_by_the_service(name, alice):
    with pytest.raises(ServiceError) as caught:
        create_channel(name=name, owner=alice)
    assert caught.value.code == "invalid"
    assert caught.value.fields is not None
    assert "name" in caught.value.fields


@pytest.mark.django_db
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_channel_names_are_rejected_by_the_database(name):
    # PostgreSQL refuses an over-long name as DataError, the format check as IntegrityError.
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        Channel.objects.create(name=name)


@pytest.mark.django_db
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_channel_names_fail_model_validation(name):
    with pytest.raises(ValidationError):
        Channel(name=name).full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_channel_names_are_accepted(name, alice):
    assert create_channel(name=name, owner=alice).name == name


@pytest.mark.django_db
def test_a_duplicate_channel_name_is_a_clear_error(alice):
    create_channel(name="twice", owner=alice)
    with pytest.raises(ServiceError) as caught:
        create_channel(name="twice", owner=alice)
    assert caught.value.fields == {"name": ["Taken."]}


@pytest.mark.django_db
def test_a_channel_has_exactly_one_active_session(channel):
    assert Session.objects.filter(channel=channel, status="active").count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        Session.objects.create(channel=channel, status="active")


@pytest.mark.django_db
def test_archived_sessions_do_not_count_against_the_active_one(channel):
    first = channel.active_session
    first.status = "archived"
    first.save()
    Session.objects.create(channel=channel, status="archived")
    Session.objects.create(channel=channel, status="active")
    assert channel.sessions.count() == 3


@pytest.mark.django_db
def test_turns_come_back_in_the_order_they_were_written(channel, alice):
    session = channel.active_session
    texts = [f"turn {i}" for i in range(12)]
    for text in texts:
        Turn.objects.create(session=session, role="user", author=alice, text=text)
    assert [t.text for t in session.turns.all()] == texts


@pytest.mark.django_db
def test_a_turn_role_outside_the_protocol_is_refused(channel):
    with pytest.raises(IntegrityError), transaction.atomic():
        Turn.objects.create(session=channel.active_session, role="judge", text="x")


@pytest.mark.django_db
def test_a_bot_turn_serialises_to_the_protocol_turn_object(channel):
    turn = Turn.objects.create(session=channel.active_session, role="bot", text="hi", finish_reason="stop")
    data = turn.to_dict(substrate=True)
    assert data["author"] is None
    assert data["created_at"].endswith("Z")
    assert set(data) >= {
        "id",
        "session",
        "role",
        "text",
        "author",
        "created_at",
        "hidden",
        "truncated",
        "rep_hint",
        "finish_reason",
        "reasoning",
        "prompt",
        "raw_completion",
        "framing",
        "params",
        "provider",
        "model",
        "usage",
        "timings",
    }


@pytest.mark.django_db
def test_frames_carry_a_bot_turn_without_its_substrate(channel):
    turn = Turn.objects.create(
        session=channel.active_session, role="bot", text="hi", finish_reason="stop", prompt="User: hi"
    )
    assert set(turn.to_dict(substrate=True)) - set(turn.to_dict()) == {"prompt", "raw_completion", "framing"}


@pytest.mark.django_db
def test_a_user_turn_carries_no_bot_fields(channel, alice):
    turn = Turn.objects.create(session=channel.active_session, role="user", author=alice, text="hi")
    assert turn.to_dict()["author"] == "alice"
    assert "prompt" not in turn.to_dict()
