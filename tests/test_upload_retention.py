"""Files go with the turns they were sent with: a session purged (RETENTION_DAYS), deleted
or truncated, and a channel deleted, take their uploads' rows and stored files (the test
UPLOADS_DIR) along; files not sent with a removed turn stay. A stored file that cannot be
removed is logged, and the deletion stands.

Uploads are made by the create service and processed by the real processing function,
here in the test's process (no worker needed: the row is committed, as a worker sees it)."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone

from chat.models import Channel, Session, Turn, Upload
from chat.services import (
    delete_channel,
    delete_session,
    delete_turn,
    post_message,
    purge_session,
    truncate_session,
)
from chat.uploads.services import create_upload
from chat.uploads.tasks import process_upload
from tests.conftest import wait_for_done

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_remove_new_upload_files")]


def ready_upload(user: Any, text: str, channel: Channel | None = None) -> Upload:
    upload = create_upload(user=user, data_or_file=f"{text}\n".encode(), name=f"{text}.txt", channel=channel)
    process_upload(str(upload.pk))
    upload.refresh_from_db()
    assert upload.status == "ready", upload.error
    return upload


def send(channel: Channel, user: Any, *uploads: Upload) -> Turn:
    turn = post_message(channel=channel, user=user, text="see", attachments=[str(u.pk) for u in uploads])
    wait_for_done(channel, count=Turn.objects.filter(session__channel=channel, role="user").count())
    return turn


def stored(upload: Upload) -> Path:
    return Path(django_settings.UPLOADS_DIR) / upload.file.name


def gone(*uploads: Upload) -> bool:
    return not any(Upload.objects.filter(pk=u.pk).exists() or stored(u).exists() for u in uploads)


def kept(*uploads: Upload) -> bool:
    return all(Upload.objects.filter(pk=u.pk).exists() and stored(u).exists() for u in uploads)


def test_purged_sessions_take_their_files_along(channel, alice, bob, settings):
    sent = [ready_upload(alice, "first", channel), ready_upload(alice, "second")]
    send(channel, alice, *sent)
    by_bob = ready_upload(bob, "bobs", channel)
    send(channel, bob, by_bob)
    unsent = ready_upload(alice, "unsent", channel)
    assert kept(*sent, by_bob, unsent)
    session = channel.active_session
    Session.objects.filter(pk=session.pk).update(updated_at=timezone.now() - timedelta(days=40))

    settings.RETENTION_DAYS = 30
    call_command("purge_sessions")

    assert not Session.objects.filter(pk=session.pk).exists()
    assert gone(*sent, by_bob)
    assert kept(unsent)  # not sent with any turn: still its owner's to send


@pytest.mark.parametrize("how", ["delete_session", "moderator_purge", "moderator_delete_turn"])
def test_deleted_sessions_and_turns_take_their_files_along(channel, alice, admin_user, how):
    upload = ready_upload(alice, "notes", channel)
    turn = send(channel, alice, upload)
    session = channel.active_session

    if how == "delete_session":
        delete_session(session=session, user=alice)
    elif how == "moderator_purge":
        purge_session(actor=admin_user, session=session)
    else:
        delete_turn(actor=admin_user, turn=turn)

    assert gone(upload)


def test_truncate_takes_the_files_of_the_dropped_turns_only(channel, alice):
    early, late = ready_upload(alice, "early", channel), ready_upload(alice, "late", channel)
    send(channel, alice, early)
    send(channel, alice, late)
    session = channel.active_session

    result = truncate_session(session=session, user=alice, keep=1, keep_from="start")

    assert result["deleted"] >= 2  # the second message and the replies
    assert kept(early) and gone(late)
    assert Upload.objects.get(pk=early.pk).turn_id is not None


def test_a_deleted_channel_takes_its_files_along_sent_or_not(channel, alice):
    sent, unsent = ready_upload(alice, "sent", channel), ready_upload(alice, "unsent", channel)
    send(channel, alice, sent)
    elsewhere = ready_upload(alice, "mine")  # of no channel: not the channel's

    delete_channel(channel=channel, user=alice)

    assert not Channel.objects.filter(pk=channel.pk).exists()
    assert gone(sent, unsent)
    assert kept(elsewhere)


def test_a_file_that_cannot_be_removed_is_logged_and_the_deletion_stands(channel, alice, caplog):
    upload = ready_upload(alice, "stuck", channel)
    send(channel, alice, upload)
    # A non-empty directory where the file was: the storage's delete fails (a real OSError).
    path = stored(upload)
    path.unlink()
    (path / "inside").mkdir(parents=True)

    with caplog.at_level(logging.ERROR, logger="chat.uploads.stored_files"):
        delete_session(session=channel.active_session, user=alice)

    assert not Upload.objects.filter(pk=upload.pk).exists()
    assert any(upload.file.name in record.getMessage() for record in caplog.records), caplog.text
    (path / "inside").rmdir()
    path.rmdir()
