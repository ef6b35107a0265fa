"""Real recordings for the transcription tests: speech spoken by espeak-ng, encoded by
PyAV's own encoders (LAME for MP3, libopus in Ogg, FLAC, AAC in MP4 beside an H.264
picture track), and silence and tones for the edges."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import av

# A dozen sentences of everyday words (pocketsphinx's language model knows them).
SENTENCES = [
    "hello world this is a test",
    "the weather is nice today",
    "please send me the report",
    "i would like a cup of coffee",
    "we will meet at the station tomorrow",
    "my phone number has changed",
    "the meeting starts at nine in the morning",
    "can you open the window please",
    "she bought three apples and a loaf of bread",
    "turn left at the next corner",
    "the children are playing in the garden",
    "thank you very much for your help",
]


def spoken(text: str, *, speed: int = 150) -> bytes:
    """``text`` spoken by espeak-ng (US English) as a WAV file (22,050 Hz mono)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(path), text], check=True)
        return path.read_bytes()


def pcm_of_wav(data: bytes) -> tuple[bytes, int]:
    """A mono 16-bit WAV's samples and rate."""
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2
        return reader.readframes(reader.getnframes()), reader.getframerate()


def wav(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return out.getvalue()


def tone(seconds: float, rate: int = 16_000, hz: float = 440.0) -> bytes:
    """A sine tone as mono 16-bit PCM."""
    step = 2 * math.pi * hz / rate
    return b"".join(struct.pack("<h", int(8000 * math.sin(step * i))) for i in range(int(seconds * rate)))


def silence(seconds: float, rate: int) -> bytes:
    return b"\x00\x00" * int(seconds * rate)


def _frames(pcm: bytes, rate: int, chunk: int = 1024):
    for start in range(0, len(pcm) // 2, chunk):
        piece = pcm[start * 2 : (start + chunk) * 2]
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(piece) // 2)
        frame.planes[0].update(piece + b"\x00" * (frame.planes[0].buffer_size - len(piece)))
        frame.sample_rate = rate
        frame.pts = start
        yield frame


# container format, audio codec, file name
FORMATS = {
    "mp3": ("mp3", "libmp3lame", "speech.mp3"),
    "ogg": ("ogg", "libopus", "speech.ogg"),
    "flac": ("flac", "flac", "speech.flac"),
    "m4a": ("ipod", "aac", "speech.m4a"),
    "webm": ("webm", "libopus", "speech.webm"),
}


def encoded(pcm: bytes, rate: int, kind: str) -> bytes:
    """Mono PCM encoded by PyAV as ``kind`` (a key of FORMATS)."""
    container_format, codec, name = FORMATS[kind]
    out = io.BytesIO()
    out.name = name
    with av.open(out, "w", format=container_format) as container:
        codec_rate = 48_000 if codec == "libopus" else rate
        stream: Any = container.add_stream(codec, rate=codec_rate)
        stream.layout = "mono"
        for frame in _frames(pcm, rate):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def video(pcm: bytes | None, rate: int, *, seconds: float | None = None, fmt: str = "mp4") -> bytes:
    """An MP4 (or ``fmt``: "mov", "avi") with a small H.264 (MPEG-4 for AVI) picture track
    and, given ``pcm``, an AAC (MP3 for AVI) audio track."""
    out = io.BytesIO()
    out.name = f"clip.{fmt}"
    length = seconds if seconds is not None else len(pcm or b"") / 2 / rate
    with av.open(out, "w", format=fmt) as container:
        picture: Any = container.add_stream("mpeg4" if fmt == "avi" else "libx264", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound: Any = None
        if pcm is not None:
            sound = container.add_stream("libmp3lame" if fmt == "avi" else "aac", rate=rate)
            sound.layout = "mono"
        for index in range(max(1, int(length * 10))):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(index * 8) % 256]) * plane.buffer_size)
            frame.pts = index
            for packet in picture.encode(frame):
                container.mux(packet)
        for packet in picture.encode(None):
            container.mux(packet)
        if sound is not None and pcm is not None:
            for frame in _frames(pcm, rate):
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return out.getvalue()


def word_error_rate(reference: str, heard: str) -> tuple[int, int]:
    """(word edits, reference words): the word-level Levenshtein distance between them."""
    ref, hyp = reference.lower().split(), heard.lower().split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[len(hyp)], len(ref)
