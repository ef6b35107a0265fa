"""Audio and video uploads processed by a real Celery worker process: a WAV, an MP3 (LAME)
and an MP4 with an AAC track, spoken by espeak-ng, end ready with their transcript as
text and meta.duration_s; a video without an audio track ends ready with no text and a
note; bytes that only look like a recording end failed with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from chat.models import Upload
from chat.uploads import media
from chat.uploads.services import create_upload
from tests import recordings
from tests.test_upload_worker import ended, events_of

pytestmark = pytest.mark.django_db(transaction=True)

SENTENCE = "the meeting starts at nine in the morning"


@pytest.fixture(scope="module")
def speech() -> tuple[bytes, int]:
    return recordings.pcm_of_wav(recordings.spoken(SENTENCE))


def test_recordings_become_ready_with_their_transcript(worker: Any, channel: Any, alice: Any, speech) -> None:
    pcm, rate = speech
    seconds = len(pcm) / 2 / rate
    samples = [
        ("note.wav", recordings.wav(pcm, rate), "audio/wav", "audio"),
        ("note.mp3", recordings.encoded(pcm, rate, "mp3"), "audio/mpeg", "audio"),
        ("clip.mp4", recordings.video(pcm, rate), "video/mp4", "video"),
    ]
    uploads = [
        create_upload(user=alice, data_or_file=data, name=name, channel=channel)
        for name, data, _, _ in samples
    ]
    for upload, (name, _data, mime, kind) in zip(uploads, samples, strict=True):
        upload = ended(upload, timeout=60)
        assert upload.status == "ready", (name, upload.error)
        assert (upload.mime, upload.kind) == (mime, kind)
        assert upload.meta["duration_s"] == pytest.approx(seconds, abs=0.15)
        assert upload.meta["engine"] == "pocketsphinx" and upload.meta["truncated"] is False
        # pocketsphinx hears espeak-ng only partly (tests/test_transcription.py measures
        # how well); this sentence it hears "meetings are like in the morning".
        assert "morning" in upload.text, (name, upload.text)
        assert [e["status"] for e in events_of(channel, upload)][-1] == "ready"


def test_a_video_without_sound_is_ready_with_a_note(worker: Any, channel: Any, alice: Any) -> None:
    upload = create_upload(
        user=alice,
        data_or_file=recordings.video(None, 16_000, seconds=1.0),
        name="screen.mp4",
        channel=channel,
    )
    upload = ended(upload, timeout=60)
    assert upload.status == "ready", upload.error
    assert upload.kind == "video" and upload.text == ""
    assert upload.meta["note"] == media.NO_AUDIO_NOTE


def test_a_broken_recording_ends_failed_with_a_reason(worker: Any, alice: Any, speech) -> None:
    pcm, rate = speech
    mp3 = recordings.encoded(pcm, rate, "mp3")
    # An ID3 header (so it is taken for an MP3) over bytes that are no MPEG audio
    broken = mp3[:10] + bytes(range(256)) * 40
    upload = ended(create_upload(user=alice, data_or_file=broken, name="broken.mp3"), timeout=60)
    assert upload.status == Upload.Status.FAILED
    assert upload.error in (media.UNREADABLE, media.SILENT), upload.error
