"""The growth scenario: what the hot paths cost as history piles up, on data of its own.

Issue 13 asks that nothing on the hot path grow linearly with total history. Three
measures, each at a small and a large size: (a) the WebSocket ``history`` frame (its
bytes, and the time from opening the socket to receiving it) and ``GET /api/channels``
for a session of 10 to 100,000 turns; (b) ``GET /api/channels`` for a user who sees 10
to 10,000 channels; (c) catching up with ``get_history`` ``since`` over a channel that
holds thousands of events, where the server replays at most 500 events / 256 KiB and
sends a fresh ``history`` beyond that.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import orjson

from bench.httpclient import Connection
from bench.wsclient import connect

# A socket gets at most one full history a second (channels_app/consumers.py
# HISTORY_INTERVAL_S); a catch-up asked sooner after the connect's history waits for it.
HISTORY_INTERVAL_S = 1.05


@dataclass
class GrowthData:
    """What prepare() made: each size's channel and the token of the one user who sees it."""

    histories: dict[int, tuple[str, str]]  # turns in the session: channel, token
    lists: dict[int, tuple[str, int]]  # channels the user sees: token, as the selector counts them
    replay: tuple[int, str, str]  # channel id, name, token
    hidden: list[int]  # the public channels made private meanwhile (restore() shows them)


def prepare(size: dict[str, Any]) -> GrowthData:
    """The scenario's users, channels and turns, in bulk (synchronous: the ORM).

    Every other public channel is made private meanwhile, so that each user sees
    exactly the channels of their size: public channels are listed to everyone."""
    from bench import seed
    from chat.selectors import visible_channels
    from chat.services import create_channel

    histories = {}
    for turns in size["history_turns"]:
        owner, token = seed.user(f"history{turns}")
        channel = create_channel(name=f"history{turns}", owner=owner, visibility="private")
        seed.conversation(channel, owner, turns)
        histories[turns] = (channel.name, token)
    creator, _ = seed.user("growth")
    ids = seed.private_channels("growth", max(size["list_channels"]), creator)
    members = {}
    for count in size["list_channels"]:
        members[count] = seed.user(f"lister{count}")
        seed.join(members[count][0], ids[:count])
    owner, token = seed.user("replayer")
    channel = create_channel(name="replay", owner=owner, visibility="private")
    hidden = seed.hide_public()
    lists = {count: (token_, visible_channels(member).count()) for count, (member, token_) in members.items()}
    return GrowthData(histories, lists, (channel.pk, channel.name, token), hidden)


def restore(data: GrowthData) -> None:
    from bench import seed

    seed.show(data.hidden)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def ratio(values: list[float]) -> float:
    """The figure at the largest size over the one at the smallest."""
    return round(values[-1] / max(values[0], 1e-9), 2)


async def history_once(port: int, channel: str, token: str) -> tuple[float, int]:
    """Milliseconds from opening a chat socket to its ``history``, and the frame's bytes."""
    got: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    def on_message(text: str, now: int) -> None:
        if not got.done() and text.startswith('{"type":"history"'):
            got.set_result((now, len(text.encode())))

    started = time.monotonic_ns()
    client = await connect(
        "127.0.0.1", port, f"/ws/{channel}", on_message, {"Authorization": f"Bearer {token}"}
    )
    arrived, size = await asyncio.wait_for(got, 60)
    client.close()
    return (arrived - started) / 1e6, size


async def list_latency(port: int, token: str, requests: int) -> float:
    """The median milliseconds of ``GET /api/channels`` for one client, after one warm-up."""
    connection = Connection(port, {"Authorization": f"Bearer {token}"})
    times = []
    for _ in range(requests + 1):
        started = time.monotonic()
        status, body = await connection.get("/api/channels")
        if status != 200:
            raise RuntimeError(f"GET /api/channels: {status} {body[:200]!r}")
        times.append((time.monotonic() - started) * 1000)
    connection.close()
    return median(times[1:])


async def history_sizes(port: int, data: GrowthData, size: dict[str, Any]) -> list[dict[str, Any]]:
    """(a): each session size's history frame, and its owner's channel list."""
    rows = []
    for turns, (channel, token) in sorted(data.histories.items()):
        got = [await history_once(port, channel, token) for _ in range(size["connects"])]
        rows.append(
            {
                "turns": turns,
                "history_bytes": got[-1][1],
                "history_ms_p50": median([ms for ms, _ in got]),
                "channels_list_ms_p50": await list_latency(port, token, size["requests"]),
            }
        )
        print(
            f"  growth: {turns} turns: history {rows[-1]['history_bytes']} bytes in "
            f"{rows[-1]['history_ms_p50']} ms; GET /api/channels {rows[-1]['channels_list_ms_p50']} ms",
            flush=True,
        )
    return rows


async def list_sizes(port: int, data: GrowthData, size: dict[str, Any]) -> list[dict[str, Any]]:
    """(b): ``GET /api/channels`` for users who see more and more channels."""
    rows = []
    for count, (token, visible) in sorted(data.lists.items()):
        rows.append(
            {
                "channels": count,
                "visible": visible,
                "ms_p50": await list_latency(port, token, size["requests"]),
            }
        )
        print(f"  growth: {visible} channels visible: GET /api/channels {rows[-1]['ms_p50']} ms", flush=True)
    return rows


async def publish_events(channel_id: int, name: str, count: int) -> None:
    """``count`` token events into the channel, as a reply's would be (numbered and
    logged for replay through the same script), a hundred at a time."""
    from chat.realtime.events import apublish, token_event

    for start in range(0, count, 100):
        await asyncio.gather(
            *(
                apublish(channel_id, name, token_event(1, f" {i}:{time.monotonic_ns()}"))
                for i in range(start, min(count, start + 100))
            )
        )


class CatchUpWatch:
    """A socket's first ``history``, then the answer to one ``get_history`` ``since``:
    a replay up to ``target`` or a fresh history; its frames, bytes and end."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.history: asyncio.Future[int] = loop.create_future()
        self.answer: asyncio.Future[int] = loop.create_future()
        self.target: int | None = None
        self.kind, self.frames, self.bytes = "", 0, 0

    def on_message(self, text: str, now: int) -> None:
        is_history = text.startswith('{"type":"history"')
        if not self.history.done():
            if is_history:
                self.history.set_result(orjson.loads(text)["seq"])
            return
        if self.target is None or self.answer.done() or text.startswith('{"type":"presence"'):
            return
        self.frames += 1
        self.bytes += len(text.encode())
        if is_history or orjson.loads(text).get("seq") == self.target:
            self.kind = "history" if is_history else "replay"
            self.answer.set_result(now)


async def catch_up_once(port: int, name: str, token: str, back: int) -> dict[str, Any]:
    """Ask for the events after ``seq - back`` once the connect's history is a second
    old (so the one-history-a-second rule does not add its wait); what came, how long."""
    watch = CatchUpWatch()
    client = await connect(
        "127.0.0.1", port, f"/ws/{name}", watch.on_message, {"Authorization": f"Bearer {token}"}
    )
    seq = await asyncio.wait_for(watch.history, 30)
    await asyncio.sleep(HISTORY_INTERVAL_S)
    watch.target = seq
    started = time.monotonic_ns()
    client.send_text(json.dumps({"type": "get_history", "since": seq - back}))
    ended = await asyncio.wait_for(watch.answer, 30)
    client.close()
    return {"answer": watch.kind, "frames": watch.frames, "bytes": watch.bytes, "ms": (ended - started) / 1e6}


async def catch_ups(port: int, data: GrowthData, size: dict[str, Any]) -> list[dict[str, Any]]:
    """(c): publish the events, then catch up from further and further back."""
    channel_id, name, token = data.replay
    await publish_events(channel_id, name, size["replay_events"])
    rows = []
    for back in size["replay_back"]:
        got = [await catch_up_once(port, name, token, back) for _ in range(size["replays"])]
        rows.append({"events_back": back, **got[-1], "ms": median([g["ms"] for g in got])})
        print(
            f"  growth: catch-up {back} events back: {rows[-1]['answer']}, {rows[-1]['frames']} frames, "
            f"{rows[-1]['bytes']} bytes, {rows[-1]['ms']} ms",
            flush=True,
        )
    return rows


async def measure(port: int, data: GrowthData, size: dict[str, Any]) -> dict[str, Any]:
    """The three measures on one server process, each with its ratio largest/smallest."""
    history = await history_sizes(port, data, size)
    lists = await list_sizes(port, data, size)
    replay = await catch_ups(port, data, size)
    return {
        "history": history,
        "history_ratios": {
            key: ratio([row[key] for row in history])
            for key in ("history_bytes", "history_ms_p50", "channels_list_ms_p50")
        },
        "channel_list": lists,
        "channel_list_ratio": ratio([row["ms_p50"] for row in lists]),
        "replay_events": size["replay_events"],
        "replay": replay,
        "replay_ratios": {key: ratio([row[key] for row in replay]) for key in ("bytes", "ms")},
    }
