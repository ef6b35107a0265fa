"""Text handling for a reply: where it stops, what it repeats, and how its pieces are
merged into events. Nothing here touches Redis, the database or a provider."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

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
    not one per token. Pieces that come while a send is in flight are merged too.

    Other events of the reply (tool calls) go through the same outbox, so they keep
    their place between the pieces of text: text added before an event is sent before
    it. Consecutive argument pieces of the same tool call are merged like text."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.text = ""
        self.reasoning = ""
        # Sealed, in order: ("text", reasoning, text) batches and ("event", event).
        self._queue: list[tuple[Any, ...]] = []
        self.closed = False
        self._wake = asyncio.Event()  # set when there is something to send, or on close
        self._last_send = float("-inf")

    def add(self, *, text: str = "", reasoning: str = "") -> None:
        """Queue pieces to send; ``drain`` sends them within the window."""
        if text or reasoning:
            self.text += text
            self.reasoning += reasoning
            self._wake.set()

    def add_event(self, event: Mapping[str, Any]) -> None:
        """Queue an event after the text added so far."""
        self._seal()
        last = self._queue[-1][1] if self._queue and self._queue[-1][0] == "event" else None
        if (
            last is not None
            and "arguments_delta" in event
            and "arguments_delta" in last
            and last["call_id"] == event["call_id"]
        ):
            last["arguments_delta"] += event["arguments_delta"]
        else:
            self._queue.append(("event", dict(event)))
        self._wake.set()

    def _seal(self) -> None:
        if self.text or self.reasoning:
            self._queue.append(("text", self.reasoning, self.text))
            self.text = self.reasoning = ""

    def close(self) -> None:
        """Nothing more will come: send what is left without waiting out the window."""
        self.closed = True
        self._wake.set()

    async def drain(
        self,
        send: Callable[[str, str], Awaitable[None]],
        send_event: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        """Hand each batch to ``send(reasoning, text)`` (either may be empty), and each
        event to ``send_event``, in order, until closed and empty."""
        while True:
            await self._wake.wait()
            wait = self._last_send + self.window - time.monotonic()
            if wait > 0 and not self.closed:
                await asyncio.sleep(wait)
            self._wake.clear()
            self._seal()
            queue, self._queue = self._queue, []
            if not queue:
                await send("", "")
            for item in queue:
                if item[0] == "text":
                    await send(item[1], item[2])
                elif send_event is not None:
                    await send_event(item[1])
            self._last_send = time.monotonic()
            if self.closed and not self.text and not self.reasoning and not self._queue:
                return
