"""Audio and video: the audio track decoded with PyAV (FFmpeg inside its wheel) to 16 kHz
mono 16-bit PCM, what every transcription engine here takes, then transcribed.

Two callers, two answers to a recording longer than EXTRACT_MAX_AUDIO_SECONDS:
- an upload (``transcript_of``, in a worker) keeps its first EXTRACT_MAX_AUDIO_SECONDS,
  transcribed, with ``truncated: true`` in its meta: the file is still worth sending;
- ``POST /api/transcribe`` (``decode(..., strict=True)``) refuses it (413 ``too_large``),
  before transcribing anything: a dictation that long is a mistake, and the request's
  thread would be held for minutes.

A file with no audio track (a silent screen recording) is an upload like any other: it
ends ready with no text and ``meta.note`` saying so (its owner may still share it); the
transcribe endpoint answers 400 ``invalid`` for it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import av
from django.conf import settings

from chat.errors import ServiceError
from chat.uploads import transcription
from chat.uploads.failures import ProcessingError

RATE = 16_000  # samples per second of the PCM the engines take
BYTES_PER_SECOND = RATE * 2  # mono, 16-bit
NO_AUDIO_NOTE = "This file has no audio track: there is nothing to transcribe."
UNREADABLE = "not a readable audio or video file"
SILENT = "its audio track holds no sound that could be decoded"
# FFmpeg picks a demuxer by probing the bytes; only the containers uploads allow may
# answer. (Others, such as HLS playlists or concat lists, would open further files or URLs.)
DEMUXERS = "mp3,wav,mov,mp4,m4a,ogg,flac,matroska,webm,avi,aac"


class MediaError(ValueError):
    """The bytes are no audio or video FFmpeg can read (``str``: a reason a person reads)."""


class NoAudioError(MediaError):
    """A readable file without an audio track."""


class TooLongError(MediaError):
    """Longer than the cap, where the caller asked for refusal (``strict``)."""


@dataclass
class Decoded:
    pcm: bytes  # 16 kHz mono s16le, at most the cap's length
    duration_s: float  # of the recording (the container's word when it was cut, else decoded)
    truncated: bool  # longer than the cap: ``pcm`` is its beginning
    video: bool  # it has a picture track (beside cover art)

    @property
    def seconds(self) -> float:
        """Seconds of PCM decoded."""
        return len(self.pcm) / BYTES_PER_SECOND


def _has_video(container: Any) -> bool:
    # An MP3's or M4A's cover art is a video stream too, marked as an attached picture.
    return any(
        not (stream.disposition & av.stream.Disposition.attached_pic) for stream in container.streams.video
    )


def decode(data: bytes, *, max_seconds: float | None = None, strict: bool = False) -> Decoded:
    """The audio track of ``data`` as 16 kHz mono PCM, at most ``max_seconds``
    (default EXTRACT_MAX_AUDIO_SECONDS) of it; longer: cut (``truncated``), or with
    ``strict`` a TooLongError. Raises NoAudioError, or MediaError for bytes FFmpeg cannot read."""
    cap = float(settings.EXTRACT_MAX_AUDIO_SECONDS if max_seconds is None else max_seconds)
    try:
        container = av.open(
            io.BytesIO(data),
            mode="r",
            container_options={"format_whitelist": DEMUXERS},
            metadata_errors="ignore",
        )
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(UNREADABLE) from exc
    with container:
        declared = container.duration / 1_000_000 if container.duration else None
        if not container.streams.audio:
            raise NoAudioError(NO_AUDIO_NOTE) if _has_video(container) else MediaError(UNREADABLE)
        if strict and declared is not None and declared > cap + 0.5:
            raise TooLongError(f"{declared:.0f} s is longer than EXTRACT_MAX_AUDIO_SECONDS ({cap:.0f} s)")
        video = _has_video(container)
        pcm, truncated = _resampled(container, container.streams.audio[0], cap, strict)
    decoded_s = len(pcm) / BYTES_PER_SECOND
    duration = declared if truncated and declared else decoded_s
    return Decoded(pcm=pcm, duration_s=round(duration, 2), truncated=truncated, video=video)


def _resampled(container: Any, stream: Any, cap: float, strict: bool) -> tuple[bytes, bool]:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    limit = int(cap * RATE) * 2
    out = bytearray()
    try:
        for frame in container.decode(stream):
            for piece in resampler.resample(frame):
                # A plane may be padded past its samples.
                out += bytes(piece.planes[0])[: piece.samples * 2]
            if len(out) > limit:
                if strict:
                    raise TooLongError(f"It is longer than EXTRACT_MAX_AUDIO_SECONDS ({cap:.0f} s)")
                return bytes(out[:limit]), True
        for piece in resampler.resample(None):
            out += bytes(piece.planes[0])[: piece.samples * 2]
    except (av.FFmpegError, ValueError) as exc:
        if isinstance(exc, TooLongError):
            raise
        raise MediaError(UNREADABLE) from exc
    if len(out) > limit:  # the resampler's tail crossed the line
        if strict:
            raise TooLongError(f"It is longer than EXTRACT_MAX_AUDIO_SECONDS ({cap:.0f} s)")
        return bytes(out[:limit]), True
    if not out:
        raise MediaError(SILENT)
    return bytes(out), False


def transcript_of(data: bytes, language: str | None = None) -> tuple[str, dict[str, Any]]:
    """An audio or video upload's transcript and meta ``{duration_s, language, engine,
    truncated, kind}`` (``kind``: "video" when it has a picture track, else "audio"; the
    task settles WebM by it). ``language`` None: the server engine detects it, the offline
    engine hears English. Raises ProcessingError for a file that cannot be read or an
    engine that failed; a file with no audio ends ready with ``meta.note``."""
    try:
        decoded = decode(data)
    except NoAudioError as exc:
        return "", {"duration_s": 0.0, "language": None, "engine": None, "truncated": False,
                    "kind": "video", "note": str(exc)}  # fmt: skip
    except MediaError as exc:
        raise ProcessingError(str(exc)) from exc
    try:
        engine = transcription.engine_for(language)
        text = engine.transcribe(decoded.pcm, language)
    except ServiceError as exc:
        raise ProcessingError(exc.text) from exc
    meta: dict[str, Any] = {
        "duration_s": decoded.duration_s,
        "language": language or engine.default_language,
        "engine": engine.label,
        "truncated": decoded.truncated,
        "kind": "video" if decoded.video else "audio",
    }
    if decoded.truncated:
        meta["transcribed_s"] = round(decoded.seconds, 2)
        meta["note"] = (
            f"Only the first {settings.EXTRACT_MAX_AUDIO_SECONDS} s (EXTRACT_MAX_AUDIO_SECONDS) "
            "were transcribed."
        )
    return text, meta
