"""Uploads processed by a real Celery worker process: status, text, meta and the
attachment_updated events in the channel's replay log; broken files end failed with a
reason; a worker child killed mid-extraction never leaves a row processing."""

from __future__ import annotations

import io
from typing import Any

import pytest

from chat.models import Upload
from tests import files
from tests.conftest import channel_events, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def ended(upload: Upload, timeout: float = 30) -> Upload:
    def done() -> Upload | None:
        upload.refresh_from_db()
        return upload if upload.status in (Upload.Status.READY, Upload.Status.FAILED) else None

    return wait_for(done, timeout)


def events_of(channel: Any, upload: Upload) -> list[dict[str, Any]]:
    return [
        e for e in channel_events(channel) if e["type"] == "attachment_updated" and e["id"] == str(upload.pk)
    ]


def test_text_file_becomes_ready_with_its_text_and_events(worker: Any, channel: Any, alice: Any) -> None:
    upload = ended(files.make_upload(alice, files.utf8_text(), "notes.txt", channel=channel))

    assert upload.status == "ready", upload.error
    assert "東京" in upload.text and upload.progress == 100
    assert upload.attempts == 1
    statuses = [e["status"] for e in events_of(channel, upload)]
    assert statuses[0] == "processing" and statuses[-1] == "ready"
    last = events_of(channel, upload)[-1]
    assert {k: last[k] for k in ("type", "id", "status", "progress", "error")} == {
        "type": "attachment_updated",
        "id": str(upload.pk),
        "status": "ready",
        "progress": 100,
        "error": None,
    }


def test_image_is_reencoded_without_exif(worker: Any, channel: Any, alice: Any) -> None:
    from PIL import Image

    upload = ended(files.make_upload(alice, files.jpeg(size=(80, 40)), "holiday.jpg", channel=channel))

    assert upload.status == "ready", upload.error
    assert (upload.meta["width"], upload.meta["height"]) == (40, 80)  # turned upright by its EXIF
    with upload.file.open("rb") as stored:
        data = stored.read()
    assert upload.size == len(data)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (40, 80)
    assert not image.getexif()
