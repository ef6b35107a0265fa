"""The size of what the server sends. The servers are started with MAX_FRAME_BYTES as
their frame limit, and daphne (autobahn) refuses to *send* a larger frame: the socket
dies with 1011. So every frame is built to fit: these helpers measure a payload and cut
its long text fields, as little as needed, until it does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson
from django.conf import settings

# Room an event needs around the Turn it carries: "type", "channel" (a name is at most 64
# characters) and "seq" (at most 20 digits), with their quotes and commas.
EVENT_ROOM = 256


def size(value: Any) -> int:
    """Bytes of ``value`` encoded as the server sends it (orjson, UTF-8)."""
    return len(orjson.dumps(value))


def frame_limit() -> int:
    return int(settings.MAX_FRAME_BYTES)


def turn_budget() -> int:
    """The most a Turn object may take so that any event carrying it fits a frame."""
    return frame_limit() - EVENT_ROOM


def fit(
    payload: dict[str, Any], budget: int, fields: Iterable[str], *, keep_end: Collection[str] = ()
) -> dict[str, Any]:
    """``payload`` itself when it encodes to at most ``budget`` bytes; else a copy whose
    string ``fields`` are cut, in the given order and each only as far as needed, with
    ``{field}_truncated: true`` beside every field that was cut. Fields named in
    ``keep_end`` keep their end (a prompt's end is what the model read last), the others
    their beginning. When cutting them all is not enough, they are empty."""
    if size(payload) <= budget:
        return payload
    payload = dict(payload)
    for name in fields:
        value = payload.get(name)
        if not isinstance(value, str) or not value:
            continue
        payload[f"{name}_truncated"] = True
        over = size(payload) - budget
        payload[name] = cut(value, size(value) - over, keep_end=name in keep_end)
        if size(payload) <= budget:
            break
    return payload


def cut(text: str, budget: int, *, keep_end: bool = False) -> str:
    """The longest beginning (or end) of ``text`` whose JSON encoding takes at most
    ``budget`` bytes."""
    # Every character takes at least one byte, so no more than budget - 2 (the quotes) fit.
    low, high = 0, max(0, min(len(text), budget - 2))
    while low < high:  # the longest piece that fits, by bisection: ~17 encodings at most
        middle = (low + high + 1) // 2
        if size(_piece(text, middle, keep_end)) <= budget:
            low = middle
        else:
            high = middle - 1
    return _piece(text, low, keep_end)


def _piece(text: str, length: int, keep_end: bool) -> str:
    if keep_end:
        return text[len(text) - length :]
    return text[:length]
