"""Transcription: recordings spoken by espeak-ng and encoded by PyAV's own encoders,
decoded by chat/uploads/media.py and heard by pocketsphinx (its word error rate over a
dozen sentences, and its speed), or sent to an OpenAI-compatible server (a real HTTP
fake of /v1/audio/transcriptions); POST /api/transcribe and its refusals."""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from chat.uploads import media, transcription
from chat.uploads.failures import ProcessingError
from tests import recordings
from tests.conftest import add_provider, client_for
from tests.recordings import SENTENCES, word_error_rate

pytestmark = pytest.mark.django_db

# Measured here (2 shared cores, espeak-ng 1.51's en-us voice at 150 words a minute,
# pocketsphinx 5.1.1's en-us model): WER 0.81 (63 edits over 78 words), 1.00 against
# the wrong sentences; the bound leaves a margin for another espeak-ng's voice.
WER_BOUND = 0.9
# Formats the sentences cycle through, so each one is decoded on the way to the engine.
CYCLE = ["wav", "mp3", "ogg", "flac", "m4a", "webm", "mp4"]


@functools.cache
def speech(text: str) -> tuple[bytes, int]:
    """``text`` spoken, as mono 16-bit PCM and its rate."""
    return recordings.pcm_of_wav(recordings.spoken(text))


def sample(text: str, kind: str) -> bytes:
    pcm, rate = speech(text)
    if kind == "wav":
        return recordings.wav(pcm, rate)
    if kind in ("mp4", "mov", "avi"):
        return recordings.video(pcm, rate, fmt=kind)
    return recordings.encoded(pcm, rate, kind)


def test_every_allowed_container_is_decoded_to_16_khz_mono():
    pcm, rate = speech(SENTENCES[0])
    seconds = len(pcm) / 2 / rate
    for kind in ["wav", *recordings.FORMATS, "mp4", "mov", "avi"]:
        decoded = media.decode(sample(SENTENCES[0], kind))
        # Encoders add a few milliseconds of priming and padding.
        assert abs(decoded.seconds - seconds) < 0.15, (kind, decoded.seconds, seconds)
        assert decoded.duration_s == pytest.approx(decoded.seconds, abs=0.01)
        assert decoded.video == (kind in ("mp4", "mov", "avi")) and not decoded.truncated
        # 16-bit samples that are not all silence
        assert len(decoded.pcm) % 2 == 0 and decoded.pcm.strip(b"\x00")


def test_bytes_that_are_no_recording_are_refused():
    silent_video = recordings.video(None, 16_000, seconds=1.0)
    with pytest.raises(media.NoAudioError):
        media.decode(silent_video)
    for junk in [b"hello, this is text\n" * 50, b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"\x00" * 4096]:
        with pytest.raises(media.MediaError):
            media.decode(junk)
    # A playlist (FFmpeg's HLS demuxer would open what it names) is no allowed container.
    with pytest.raises(media.MediaError):
        media.decode(b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")


def test_a_recording_over_the_cap_is_cut_for_uploads_and_refused_when_strict(settings):
    settings.EXTRACT_MAX_AUDIO_SECONDS = 1
    data = sample(SENTENCES[0], "mp3")
    with pytest.raises(media.TooLongError, match="EXTRACT_MAX_AUDIO_SECONDS"):
        media.decode(data, strict=True)
    _text, meta = media.transcript_of(data)
    assert meta["truncated"] is True and meta["transcribed_s"] == 1.0
    assert meta["duration_s"] > 1.5 and "EXTRACT_MAX_AUDIO_SECONDS" in meta["note"]
    assert meta["engine"] == "pocketsphinx" and meta["kind"] == "audio"


def test_uploads_without_sound_or_unreadable_end_as_documented():
    text, meta = media.transcript_of(recordings.video(None, 16_000, seconds=1.0))
    assert text == "" and meta["kind"] == "video" and meta["note"] == media.NO_AUDIO_NOTE
    with pytest.raises(ProcessingError, match="not a readable audio or video file"):
        media.transcript_of(b"just some text" * 100)


def test_pocketsphinx_word_error_rate_and_speed_over_a_dozen_sentences():
    engine = transcription.engine_for("en-US")
    assert engine.label == "pocketsphinx"
    engine.transcribe(speech("warm up")[0][:3200], "en-US")  # the model loads once per process
    edits = words = 0
    heard: list[str] = []
    audio_s = busy_s = 0.0
    for index, sentence in enumerate(SENTENCES):
        kind = CYCLE[index % len(CYCLE)]
        data = sample(sentence, kind)
        started = time.perf_counter()
        text, meta = media.transcript_of(data, "en-US")
        busy_s += time.perf_counter() - started
        audio_s += meta["duration_s"]
        assert meta["engine"] == "pocketsphinx" and meta["language"] == "en-US"
        heard.append(text)
        wrong, count = word_error_rate(sentence, text)
        edits, words = edits + wrong, words + count
        print(f"{kind:>5}: {sentence!r} -> {text!r}")
    wer = edits / words
    # Heard against the wrong sentences: what an engine that hears nothing would score.
    shifted = [word_error_rate(SENTENCES[(i + 1) % len(SENTENCES)], h) for i, h in enumerate(heard)]
    baseline = sum(e for e, _ in shifted) / sum(n for _, n in shifted)
    print(f"pocketsphinx WER {wer:.2f} ({edits}/{words} words); against the wrong sentences {baseline:.2f}")
    print(
        f"pocketsphinx real-time factor {busy_s / audio_s:.2f} ({busy_s:.1f} s for {audio_s:.1f} s of audio)"
    )
    assert wer <= WER_BOUND
    assert wer < baseline - 0.1  # it hears the sentences, it does not just emit words
    # Slower than real time would make the endpoint useless; measured ~0.5 here.
    assert busy_s / audio_s < 2.0


def test_a_long_recording_is_heard_in_pieces_cut_at_pauses(monkeypatch):
    pcm, chosen = b"", [SENTENCES[6], SENTENCES[8], SENTENCES[10]]  # three it hears best
    for sentence in chosen:
        spoken, rate = speech(sentence)
        pcm += spoken + recordings.silence(1.0, rate)
    monkeypatch.setattr(transcription, "SINGLE_UTTERANCE_SECONDS", 3.0)
    text, meta = media.transcript_of(recordings.wav(pcm, rate), "en-US")
    edits, words = word_error_rate(" ".join(chosen), text)
    print(f"in pieces: {text!r} WER {edits / words:.2f}")
    assert edits / words <= WER_BOUND and meta["duration_s"] > 6


# --- an OpenAI-compatible server --------------------------------------------------------------


@pytest.fixture
def whisper(openai_server, monkeypatch):
    monkeypatch.setenv("WHISPER_KEY", "sk-test-key")
    add_provider(
        "whisper",
        openai_server.base_url,
        transcription=True,
        transcription_model="whisper-large-v3",
        api_key_env="WHISPER_KEY",
    )
    return openai_server


def transcribe(client: Any, data: bytes, language: str | None = None, **kwargs: Any) -> Any:
    path = "/api/transcribe" + (f"?language={language}" if language else "")
    upload = SimpleUploadedFile("note.webm", data, content_type="audio/webm")
    return client.post(path, {"file": upload}, format="multipart", **kwargs)


def test_a_provider_with_transcription_is_used_with_its_model_and_language(whisper, bob):
    add_provider("chatty", whisper.base_url, priority=1)  # no transcription: not asked
    add_provider("nowhere", "", priority=2, transcription=True)  # no URL: never the SDK's default
    answer = transcribe(client_for(bob), sample(SENTENCES[1], "webm"), "fr-FR")

    assert answer.status_code == 200, answer.content
    pcm, rate = speech(SENTENCES[1])
    seconds = pytest.approx(len(pcm) / 2 / rate, abs=0.15)
    assert answer.json() == {"text": "bonjour tout le monde", "language": "fr-FR", "duration_s": seconds}
    (received,) = whisper.requests
    assert whisper.paths == ["/v1/audio/transcriptions"]
    assert received["model"] == "whisper-large-v3" and received["language"] == "fr"
    assert received["file"]["mime"] == "audio/wav" and received["file"]["filename"] == "audio.wav"
    assert whisper.headers[0]["authorization"] == "Bearer sk-test-key"
    # What it was sent is the recording, decoded: a 16 kHz mono WAV of the same length
    pcm, rate = recordings.pcm_of_wav(received["file"]["data"])
    assert rate == 16_000 and abs(len(pcm) / 2 / rate - answer.json()["duration_s"]) < 0.01


def test_uploads_use_the_provider_and_let_it_detect_the_language(whisper):
    text, meta = media.transcript_of(sample(SENTENCES[2], "mp3"))
    assert text == "bonjour tout le monde"
    assert meta["engine"] == "provider:whisper/whisper-large-v3" and meta["language"] is None
    assert "language" not in whisper.requests[0]


def test_a_failing_provider_is_a_502_not_a_500(whisper, bob, logged_errors):
    whisper.behaviour.status = 500
    answer = transcribe(client_for(bob), sample(SENTENCES[0], "wav"), "de-DE")
    assert answer.status_code == 502
    body = answer.json()
    assert body["code"] == "provider_error" and "whisper" in body["detail"] and "500" in body["detail"]
    assert "sk-test-key" not in answer.content.decode()
    assert [r for r in logged_errors if r.exc_info] == []  # answered, no traceback (Django notes the 502)
    # For an upload the same failure ends it failed with that reason
    with pytest.raises(ProcessingError, match="provider whisper failed"):
        media.transcript_of(sample(SENTENCES[0], "wav"))


def test_an_unreachable_provider_is_a_502(bob):
    from tests.processes import free_port

    add_provider("gone", f"http://127.0.0.1:{free_port()}/v1", transcription=True)
    answer = transcribe(client_for(bob), sample(SENTENCES[0], "wav"), "en-GB")
    assert answer.status_code == 502 and answer.json()["code"] == "provider_error"


# --- POST /api/transcribe ---------------------------------------------------------------------


def test_the_offline_engine_answers_english_from_a_form_or_a_raw_body(bob):
    client = client_for(bob)
    answer = transcribe(client, sample(SENTENCES[0], "ogg"))
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["language"] == "en-US" and isinstance(body["text"], str) and body["text"]
    assert 1.5 < body["duration_s"] < 3
    raw = client.post(
        "/api/transcribe?language=en-GB", sample(SENTENCES[0], "mp3"), content_type="audio/mpeg"
    )
    assert raw.status_code == 200 and raw.json()["language"] == "en-GB"
    video = client.post("/api/transcribe", sample(SENTENCES[0], "mp4"), content_type="video/mp4")
    assert video.status_code == 200 and video.json()["duration_s"] > 1.5


def test_languages_are_checked_before_the_recording(bob):
    client = client_for(bob)
    data = sample(SENTENCES[0], "wav")
    for bad in ["xx-XX", "en", "EN-us", ""]:
        answer = transcribe(client, data, bad or "%20")
        assert answer.status_code == 400 and answer.json()["code"] == "invalid"
        assert "en-US" in answer.json()["fields"]["language"][0]
    answer = transcribe(client, data, "ja-JP")
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "language_unavailable" and "ja-JP" in body["detail"]
    assert "server engine" in body["detail"] and body["fields"]["language"]


def test_refusals_name_the_field(bob, settings):
    client = client_for(bob)
    nothing = client.post("/api/transcribe", {}, format="multipart")
    assert nothing.status_code == 400 and nothing.json()["fields"]["file"]
    empty = client.post("/api/transcribe", b"", content_type="audio/wav")
    assert empty.status_code == 400 and empty.json()["fields"]["file"]
    json_body = client.post("/api/transcribe", {"file": "x"}, format="json")
    assert json_body.status_code == 400 and json_body.json()["fields"]["file"]
    text = transcribe(client, b"Dear diary, today I recorded nothing.\n" * 40)
    assert text.status_code == 400 and text.json()["code"] == "invalid"
    assert text.json()["fields"]["file"] == ["Not a readable audio file."]
    lying = client.post("/api/transcribe", b"%PDF-1.4 not audio at all", content_type="audio/wav")
    assert lying.status_code == 400 and lying.json()["fields"]["file"] == ["Not a readable audio file."]
    silent = client.post(
        "/api/transcribe", recordings.video(None, 16_000, seconds=1.0), content_type="video/mp4"
    )
    assert silent.status_code == 400 and "no audio track" in silent.json()["fields"]["file"][0]
    settings.TRANSCRIBE_MAX_SECONDS = 1  # its own cap, shorter than an upload's
    long = transcribe(client, sample(SENTENCES[0], "flac"))
    assert long.status_code == 413 and long.json()["code"] == "too_large"
    assert "TRANSCRIBE_MAX_SECONDS" in long.json()["detail"]


def test_a_transcription_counts_against_the_daily_upload_bytes(bob, settings):
    data = sample(SENTENCES[0], "wav")
    settings.DAILY_UPLOAD_BYTES = len(data) + 10
    client = client_for(bob)
    assert transcribe(client, data).status_code == 200
    refused = transcribe(client, data)
    assert refused.status_code == 429 and refused.json()["code"] == "quota_exceeded"
    assert "DAILY_UPLOAD_BYTES" in refused.json()["detail"] and refused.json()["retry_after"] > 0


def test_a_body_over_max_upload_bytes_is_refused_by_its_length_before_it_is_read(bob):
    client = client_for(bob)
    # Content-Length says 26 MB; only a few bytes follow: reading the body would find too
    # little (the test client's payload refuses to read past its end), so a 413 can only
    # come from the header.
    claimed = client.post(
        "/api/transcribe", b"RIFF", content_type="audio/wav", CONTENT_LENGTH=str(26 * 1024 * 1024)
    )
    assert claimed.status_code == 413
    assert (
        claimed.json()["code"] == "too_large"
        and "MAX_UPLOAD_BYTES (26214400 bytes)" in claimed.json()["detail"]
    )
    big = transcribe(client, b"\x00" * (26 * 1024 * 1024))
    assert big.status_code == 413 and big.json()["fields"]["file"]


def test_anyone_logged_in_may_transcribe_and_no_one_else(alice, carol):
    data = sample(SENTENCES[0], "wav")
    anonymous = transcribe(APIClient(), data)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "auth_required"
    bad_token = transcribe(APIClient(), data, HTTP_AUTHORIZATION="Bearer nonsense")
    assert bad_token.status_code == 401
    assert transcribe(client_for(carol), data).status_code == 200  # a member of nothing
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(alice)
    assert transcribe(session, data).status_code == 403  # a session needs its CSRF token
    session.cookies["csrftoken"] = "a" * 32
    assert transcribe(session, data, HTTP_X_CSRFTOKEN="a" * 32).status_code == 200


def test_requests_at_once_share_the_one_decoder_safely():
    """The decoder keeps per-utterance state: threads (a server's sync views) take turns."""
    from concurrent.futures import ThreadPoolExecutor

    clips = [media.decode(sample(sentence, "wav")).pcm for sentence in (SENTENCES[6], SENTENCES[8])]
    engine = transcription.PocketSphinx()
    alone = [engine.transcribe(pcm, "en-US") for pcm in clips]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda pcm: engine.transcribe(pcm, "en-US"), clips * 2))
    assert together == alone * 2 and alone[0] != alone[1]
