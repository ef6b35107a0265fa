"""Transcription engines: 16 kHz mono PCM (chat/uploads/media.py) in, text out.

- A server engine: the first enabled OpenAI-compatible Provider with ``transcription``
  ticked (OpenAI, Groq, a local whisper server), spoken to through the official ``openai``
  SDK's ``audio.transcriptions.create``; any language of LANGUAGES.
- The offline default: pocketsphinx, whose US English model ships inside its wheel; it
  hears English only (en-US, en-GB), so other languages get 400 ``language_unavailable``
  until a server engine is configured.
"""

from __future__ import annotations

import io
import logging
import threading
import wave
from dataclasses import dataclass
from typing import Any, Protocol

import openai
from django.conf import settings

from chat.errors import ServiceError
from chat.models import Provider

log = logging.getLogger(__name__)

LANGUAGES = ("en-US", "en-GB", "es-ES", "fr-FR", "de-DE", "it-IT", "pt-BR", "ja-JP", "ko-KR", "zh-CN")
OFFLINE_LANGUAGES = ("en-US", "en-GB")
DEFAULT_LANGUAGE = "en-US"
RATE = 16_000


def check_language(tag: str) -> str:
    """``tag`` if it is one of LANGUAGES, else a 400 naming the field."""
    if tag not in LANGUAGES:
        raise ServiceError(
            "invalid",
            "Invalid input.",
            fields={"language": [f"Expected one of {', '.join(LANGUAGES)}."]},
        )
    return tag


class Engine(Protocol):
    @property
    def label(self) -> str:
        """What meta.engine records: "pocketsphinx", "provider:<name>/<model>"."""

    @property
    def default_language(self) -> str | None:
        """What it hears when no language is given (None: it detects the language)."""

    def transcribe(self, pcm: bytes, language: str | None) -> str: ...


def engine_for(language: str | None) -> Engine:
    """The engine for ``language`` (a tag of LANGUAGES; None: any): a server engine when
    one is configured, else pocketsphinx for English, else 400 ``language_unavailable``."""
    provider = (
        Provider.objects.filter(enabled=True, transcription=True, kind=Provider.Kind.OPENAI_COMPAT)
        # Without a base URL the SDK would fall back to api.openai.com (or OPENAI_BASE_URL):
        # recordings go only where an admin said.
        .exclude(base_url="")
        .order_by("priority", "name")
        .first()
    )
    if provider is not None:
        return ServerEngine(
            name=provider.name,
            base_url=provider.base_url,
            api_key_env=provider.api_key_env,
            model=provider.transcription_model or "whisper-1",
        )
    if language is None or language in OFFLINE_LANGUAGES:
        return PocketSphinx()
    raise ServiceError(
        "language_unavailable",
        f"No transcription engine here hears {language}: the offline engine (pocketsphinx) knows "
        f"only {' and '.join(OFFLINE_LANGUAGES)}. A server engine (a provider with transcription, "
        "e.g. OpenAI, Groq or a whisper server) must be configured for other languages.",
        fields={"language": [f"{language} needs a server transcription engine."]},
    )


# --- pocketsphinx ---------------------------------------------------------------------------

_decoder: Any = None
# One decoder per process (loading its model takes about a second); it keeps state per
# utterance, so one recording at a time.
_decoder_lock = threading.Lock()
# Longer recordings are cut at pauses (pocketsphinx's voice-activity segmenter) and each
# stretch decoded as an utterance: one utterance of minutes decodes slowly and badly.
SINGLE_UTTERANCE_SECONDS = 30.0


def _pocketsphinx_decoder() -> Any:
    global _decoder
    if _decoder is None:
        from pocketsphinx import Decoder

        _decoder = Decoder(samprate=RATE, loglevel="FATAL")
    return _decoder


class PocketSphinx:
    label = "pocketsphinx"
    default_language: str | None = DEFAULT_LANGUAGE

    def transcribe(self, pcm: bytes, language: str | None) -> str:
        with _decoder_lock:
            decoder = _pocketsphinx_decoder()
            return " ".join(text for text in (_utterance(decoder, piece) for piece in _pieces(pcm)) if text)


def _pieces(pcm: bytes) -> list[bytes]:
    if len(pcm) <= SINGLE_UTTERANCE_SECONDS * RATE * 2:
        return [pcm]
    from pocketsphinx import Segmenter

    return [segment.pcm for segment in Segmenter(sample_rate=RATE).segment(io.BytesIO(pcm))]


def _utterance(decoder: Any, pcm: bytes) -> str:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return str(hypothesis.hypstr).strip() if hypothesis is not None else ""


# --- OpenAI-compatible servers ----------------------------------------------------------------


def wav_of(pcm: bytes) -> bytes:
    """16 kHz mono PCM as a WAV file: the one format every transcription server reads."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(pcm)
    return out.getvalue()


@dataclass(frozen=True)
class ServerEngine:
    """A provider's /v1/audio/transcriptions, read from its row once, detached from the ORM."""

    name: str
    base_url: str
    api_key_env: str
    model: str
    default_language: str | None = None  # the server detects the language

    @property
    def label(self) -> str:
        return f"provider:{self.name}/{self.model}"

    def transcribe(self, pcm: bytes, language: str | None) -> str:
        import os

        api_key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or "not-set",  # servers without keys (a local whisper) ignore it
            timeout=settings.PROVIDER_TIMEOUT,
            max_retries=1,
        )
        extra: dict[str, Any] = {"language": language.split("-")[0]} if language else {}
        try:
            with client:
                result = client.audio.transcriptions.create(
                    model=self.model, file=("audio.wav", wav_of(pcm), "audio/wav"), **extra
                )
        except openai.APIStatusError as exc:
            raise self._failure(f"HTTP {exc.status_code}") from exc
        except openai.APITimeoutError as exc:
            limit = settings.PROVIDER_TIMEOUT
            raise self._failure(f"no answer within PROVIDER_TIMEOUT ({limit:g} s)") from exc
        except openai.APIError as exc:  # connection refused, a body that is not a transcription
            raise self._failure(type(exc).__name__) from exc
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise self._failure("an answer without text")
        return text.strip()

    def _failure(self, what: str) -> ServiceError:
        log.warning("transcription by provider %s failed: %s", self.name, what)
        return ServiceError("provider_error", f"The transcription provider {self.name} failed: {what}.")


def transcribe_recording(*, user: Any, data: bytes, language: str) -> dict[str, Any]:
    """POST /api/transcribe's one path: the language and its engine checked, the bytes
    counted against the user's daily upload bytes (like an upload: a recording costs
    the same to receive), decoded within TRANSCRIBE_MAX_SECONDS, transcribed in this
    thread. Returns the protocol's Transcript object."""
    from chat import limits
    from chat.uploads import media

    if not (user and user.is_authenticated and user.is_active):
        raise ServiceError("auth_required", "Log in to transcribe.")
    language = check_language(language)
    engine = engine_for(language)
    cap = settings.TRANSCRIBE_MAX_SECONDS
    try:
        decoded = media.decode(data, max_seconds=cap, strict=True)
    except media.TooLongError as exc:
        raise ServiceError(
            "too_large",
            f"The recording is too long: at most {cap} s (TRANSCRIBE_MAX_SECONDS).",
            fields={"file": [f"At most {cap} s (TRANSCRIBE_MAX_SECONDS)."]},
        ) from exc
    except media.NoAudioError as exc:
        raise ServiceError("invalid", "Invalid input.", fields={"file": ["It has no audio track."]}) from exc
    except media.MediaError as exc:
        raise ServiceError(
            "invalid", "Invalid input.", fields={"file": ["Not a readable audio file."]}
        ) from exc
    limits.check_and_count_upload(user, len(data))
    try:
        text = engine.transcribe(decoded.pcm, language)
    except BaseException:  # a failing engine costs the user nothing
        limits.refund_upload(user, len(data))
        raise
    return {"text": text, "language": language, "duration_s": decoded.duration_s}
