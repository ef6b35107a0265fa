"""Text handling for a reply: where it stops, what it repeats, and how its pieces are
merged into events. Nothing here touches Redis, the database or a provider."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from django.conf import settings


class StopCutter:
    """Cuts the reply at the first stop sequence, even one split across tokens. Only a
    tail that could be the start of a stop sequence is held back, so ordinary text goes
    out at once."""

    def __init__(self, stops: list[str]) -> None:
        self.stops: list[str] = [s for s in stops if s]
        self.pending = ""  # text held back: it might be the start of a stop sequence
        self.stopped = False

    def _held_tail(self) -> int:
        """Length of the longest tail of ``pending`` that begins some stop sequence."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def feed(self, text: str) -> str:
        """Take the model's next piece; return what may be shown now."""
        if self.stopped:
            return ""
        self.pending += text
        cuts = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            out, self.pending = self.pending[: min(cuts)], ""
            return out
        safe = len(self.pending) - self._held_tail()
        out, self.pending = self.pending[:safe], self.pending[safe:]
        return out

    def flush(self) -> str:
        """The reply has ended: return what was held back (nothing once stopped)."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def repetition_hint(text: str, earlier_bot_texts: list[str]) -> str | None:
    """A short hint when the reply repeats an earlier turn or itself."""
    stripped = text.strip()
    if len(stripped) >= 20 and any(stripped == t.strip() for t in earlier_bot_texts):
        return "repeats an earlier turn; consider raising repeat_penalty"
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?\n])\s+", stripped) if len(s.strip()) >= 8]
    if sentences and max(sentences.count(s) for s in sentences) >= 3:
        return "repeats itself; consider raising repeat_penalty"
    return None


def coalesce_window() -> float:
    """TOKEN_COALESCE_MS in seconds."""
    return int(settings.TOKEN_COALESCE_MS) / 1000


class Coalescer:
    """Text and reasoning waiting to be sent, merged only under load. The first piece,
    and any piece that comes ``window`` seconds or more after the last send (a model
    slower than one token a window, a pause), goes out at once; pieces that come faster
    wait out the window and go out together, so a fast model costs one event per window,
    not one per token. Pieces that come while a send is in flight are merged too."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.text = ""
        self.reasoning = ""
        self.closed = False
        self._wake = asyncio.Event()  # set when there is something to send, or on close
        self._last_send = float("-inf")

    def add(self, *, text: str = "", reasoning: str = "") -> None:
        """Queue pieces to send; ``drain`` sends them within the window."""
        if text or reasoning:
            self.text += text
            self.reasoning += reasoning
            self._wake.set()

    def close(self) -> None:
        """Nothing more will come: send what is left without waiting out the window."""
        self.closed = True
        self._wake.set()

    async def drain(self, send: Callable[[str, str], Awaitable[None]]) -> None:
        """Hand each batch to ``send(reasoning, text)`` (either may be empty) until
        closed and empty."""
        while True:
            await self._wake.wait()
            wait = self._last_send + self.window - time.monotonic()
            if wait > 0 and not self.closed:
                await asyncio.sleep(wait)
            self._wake.clear()
            reasoning, self.reasoning = self.reasoning, ""
            text, self.text = self.text, ""
            await send(reasoning, text)
            self._last_send = time.monotonic()
            if self.closed and not self.text and not self.reasoning:
                return
