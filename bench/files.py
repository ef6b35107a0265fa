"""`run.py --only files`: what the file pipeline adds to the work itself.

- upload → ready: a 10-page PDF posted to `POST /api/uploads` with a channel, until its
  `attachment_updated` event says `ready` on a WebSocket of that channel; beside the same
  extraction run in this process (chat.uploads.documents.extract), in the same rounds.
  The difference is what the request, the storage, the queue, the worker and the events
  add; the ratio says how much that is of the work.
- transcription: `POST /api/transcribe` of a recording spoken by espeak-ng, beside the
  same decoding and recognition in this process; the real-time factor (seconds taken ÷
  seconds of audio) of both. Skipped, and said so, where espeak-ng is not installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.wsclient import connect

PDF_PAGES = 10


def _round(value: float, digits: int = 2) -> float:
    return round(value, digits)


def summary(
    values: list[float], percentile: Callable[[list[float], float], float], digits: int = 2
) -> dict[str, float]:
    return {
        "p50": _round(percentile(values, 50), digits),
        "p99": _round(percentile(values, 99), digits),
        "n": len(values),
    }


async def upload_until_ready(port: int, token: str, channel: str, data: bytes) -> float:
    """Milliseconds from posting the file to its `ready` event on the channel's socket
    (the socket is open, and has its history, before the clock starts)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    joined = loop.create_future()
    upload_id: list[str] = []
    early: dict[str, int] = {}

    def on_message(text: str, now: int) -> None:
        if '"history"' in text and not joined.done():
            joined.set_result(now)
        if '"attachment_updated"' not in text:
            return
        event = json.loads(text)
        if event.get("status") in ("ready", "failed"):
            if upload_id and event["id"] == upload_id[0]:
                if not ready.done():
                    ready.set_result((event["status"], now))
            else:  # the event may beat the POST's answer
                early[event["id"]] = now if event["status"] == "ready" else -1

    client = await connect(
        "127.0.0.1", port, f"/ws/{channel}", on_message, {"Authorization": f"Bearer {token}"}
    )
    await joined
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        started = time.monotonic_ns()
        answer = await http.post(
            "/api/uploads",
            headers={"Authorization": f"Bearer {token}"},
            data={"channel": channel},
            files={"file": ("report.pdf", data, "application/pdf")},
        )
        answer.raise_for_status()
        upload_id.append(answer.json()["id"])
        if upload_id[0] in early:
            status, finished = ("ready" if early[upload_id[0]] > 0 else "failed"), early[upload_id[0]]
        else:
            status, finished = await asyncio.wait_for(ready, 60)
        await http.delete(f"/api/uploads/{upload_id[0]}", headers={"Authorization": f"Bearer {token}"})
    client.close()
    if status != "ready":
        raise RuntimeError("the benchmark's PDF failed to process")
    return (finished - started) / 1e6


def extract_here(data: bytes) -> float:
    """Milliseconds the same extraction takes in this process."""
    from chat.uploads.documents import extract

    started = time.monotonic_ns()
    extract(data, "application/pdf", progress=lambda fraction: None)
    return (time.monotonic_ns() - started) / 1e6


async def upload_latency(port: int, token: str, channel: str, runs: int, percentile: Any) -> dict[str, Any]:
    from tests import files

    data = files.pdf(PDF_PAGES)
    stack_ms: list[float] = []
    here_ms: list[float] = []
    extract_here(data)  # imports and first-use costs, paid once before measuring
    await upload_until_ready(port, token, channel, data)  # and the worker's child's
    for _ in range(runs):
        here_ms.append(await asyncio.to_thread(extract_here, data))
        stack_ms.append(await upload_until_ready(port, token, channel, data))
    return {
        "pdf_pages": PDF_PAGES,
        "pdf_bytes": len(data),
        "upload_to_ready_ms": summary(stack_ms, percentile),
        "extraction_alone_ms": summary(here_ms, percentile),
        "added_ms_p50": _round(percentile(stack_ms, 50) - percentile(here_ms, 50)),
        "ratio_p50": _round(percentile(stack_ms, 50) / max(percentile(here_ms, 50), 0.001)),
    }


def transcribe_here(data: bytes) -> tuple[float, float]:
    """Seconds taken and seconds of audio, decoding and recognising in this process."""
    from chat.uploads import media, transcription

    started = time.monotonic()
    decoded = media.decode(data)
    transcription.PocketSphinx().transcribe(decoded.pcm, "en-US")  # the offline default engine
    return time.monotonic() - started, decoded.duration_s


async def transcription_speed(port: int, token: str, runs: int, percentile: Any) -> dict[str, Any]:
    if shutil.which("espeak-ng") is None:
        return {"skipped": "espeak-ng is not installed (apt-get install espeak-ng)"}
    from tests.recordings import SENTENCES, spoken

    recording = spoken(" ".join(SENTENCES[:3]))
    await asyncio.to_thread(transcribe_here, recording)  # the model loads once per process
    stack_rtf: list[float] = []
    here_rtf: list[float] = []
    duration = 0.0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        # The server's recogniser loads on its first request too: not measured.
        await http.post(
            "/api/transcribe?language=en-US",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("speech.wav", recording, "audio/wav")},
        )
        for _ in range(runs):
            taken, duration = await asyncio.to_thread(transcribe_here, recording)
            here_rtf.append(taken / duration)
            started = time.monotonic()
            answer = await http.post(
                "/api/transcribe?language=en-US",
                headers={"Authorization": f"Bearer {token}"},
                files={"file": ("speech.wav", recording, "audio/wav")},
            )
            answer.raise_for_status()
            stack_rtf.append((time.monotonic() - started) / duration)
    return {
        "audio_seconds": _round(duration),
        "rtf_api": summary(stack_rtf, percentile, 3),
        "rtf_alone": summary(here_rtf, percentile, 3),
        "ratio_p50": _round(percentile(stack_rtf, 50) / max(percentile(here_rtf, 50), 1e-6)),
    }
