"""`run.py --only tool-rounds`: what a round of the tool loop costs, the tool's own time
left out (issue 17).

Channels with the tool ``current_time`` on, each on a stub model that calls it ``k``
times before it answers (bench/stub_model.py, ``stub-1000-2-<k>``), k = 0 and
sizes()["tool_rounds"]["rounds"]. A reply there is the loop: model → call → result →
model …, k + 1 model requests. Each reply is timed from the chat message on the socket
to its ``done`` frame; the reference, in the same round right after it, is the stub
asked directly for the very requests that reply made (their bodies as sent, recorded by
the stub), one after the other as the loop makes them. So

    overhead(k) = reply − direct (the k + 1 requests) − tool time (``timings.tool_ms``)

is what the stack adds to the model's and the tool's own time, and

    per round(k) = (overhead(k) − overhead(0)) / k

is what one more round adds (overhead(0), the plain reply with tools offered and none
called, is taken in the same round, so each round's sample is a paired difference).
Medians and p99 are over the rounds; the ratio is a round's cost over the plain reply's
whole overhead. A channel without tools beside them shows what offering tools costs.

The breakdown: the events a round sends (counted on the socket), and the two writes a
round makes, each timed alone in this process against the same database and Redis: the
UPDATE of the turn's steps (records.save_steps, once when the round's calls are made and
once per result) and one event's publish (events.apublish).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async

from bench.wsclient import connect

TOOL = "current_time"
NO_TOOLS = "tools-none"

Percentile = Callable[[list[float], float], float]


def channel_name(rounds: int) -> str:
    return f"tools-{rounds}"


def model(rounds: int) -> str:
    # 2 tokens at 1,000 a second: the stub's own time is a couple of milliseconds.
    return f"stub-1000-2-{rounds}"


def prepare(rounds: list[int]) -> None:
    """The channels (owned by the benchmark's user), made when the scenario runs so the
    other scenarios' channel lists stay as they were; tools set straight on the row, as
    the channel's owner would with `PATCH /api/channels/{name}`."""
    from django.contrib.auth import get_user_model

    from chat.models import Channel, Session
    from chat.services import create_channel

    owner = get_user_model().objects.get(username="bench")
    for k in [0, *rounds]:
        if not Channel.objects.filter(name=channel_name(k)).exists():
            create_channel(name=channel_name(k), owner=owner, params={"provider": "stub", "model": model(k)})
            Channel.objects.filter(name=channel_name(k)).update(tools=[TOOL])
    if not Channel.objects.filter(name=NO_TOOLS).exists():
        create_channel(name=NO_TOOLS, owner=owner, params={"provider": "stub", "model": model(0)})
    # Titled already: a session's first reply would otherwise ask the same stub model
    # for a title in the background, a request among those the reference replays.
    names = [channel_name(k) for k in [0, *rounds]] + [NO_TOOLS]
    Session.objects.filter(channel__name__in=names).update(title="tool rounds")


async def reply(port: int, channel: str, token: str) -> dict[str, Any]:
    """A chat message on the socket to the reply's ``done``: milliseconds, the done
    event's timings, and the frames between by type."""
    loop = asyncio.get_running_loop()
    ready, done = loop.create_future(), loop.create_future()
    frames: collections.Counter[str] = collections.Counter()
    seen: list[str] = []

    def on_message(text: str, now: int) -> None:
        if not ready.done():
            if '"history"' in text:
                ready.set_result(now)
            return
        event = json.loads(text)
        frames[event.get("type", "?")] += 1
        seen.append(text[:300])
        if event.get("type") == "done" and not done.done():
            done.set_result((now, event))

    client = await connect(
        "127.0.0.1", port, f"/ws/{channel}", on_message, {"Authorization": f"Bearer {token}"}
    )
    await asyncio.wait_for(ready, 10)
    started = time.monotonic_ns()
    client.send_text(json.dumps({"type": "message", "text": "go"}))
    try:
        ended, event = await asyncio.wait_for(done, 30)
    except TimeoutError:
        raise RuntimeError(f"{channel}: no done in 30 s; frames {dict(frames)}, last {seen[-3:]}") from None
    finally:
        client.close()
    return {
        "ms": (ended - started) / 1e6,
        "finish_reason": event["finish_reason"],
        "timings": event["timings"],
        "frames": frames,
    }


async def recorded(stub_port: int, name: str, last: int) -> list[dict[str, Any]]:
    """The last ``last`` chat requests the stub got for model ``name``: each its body
    (bytes) and when it arrived and was answered (ns)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stub_port)
    writer.write(f"GET /recorded?model={name}&last={last} HTTP/1.1\r\nHost: s\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    requests = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return [{**request, "body": request["body"].encode()} for request in requests]


async def direct(stub_port: int, bodies: list[bytes]) -> float:
    """Milliseconds for the requests straight to the stub, one after the other, each on
    a connection of its own (the stub closes each, so the loop's client opens one per
    request too) and read to its ``[DONE]``."""
    started = time.monotonic_ns()
    for body in bodies:
        reader, writer = await asyncio.open_connection("127.0.0.1", stub_port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        while not (await reader.readline()).startswith(b"data: [DONE]"):
            pass
        writer.close()
    return (time.monotonic_ns() - started) / 1e6


async def sample(port: int, token: str, stub_port: int, k: int | None) -> dict[str, Any]:
    """One reply in the channel of ``k`` rounds (None: the channel without tools) and
    its reference right after it."""
    channel = NO_TOOLS if k is None else channel_name(k)
    got = await reply(port, channel, token)
    rounds = got["timings"].get("tool_rounds", 0)
    if got["finish_reason"] != "stop" or rounds != (k or 0):
        raise RuntimeError(
            f"{channel}: the reply ended {got['finish_reason']!r} after {rounds} tool round(s), "
            f"not 'stop' after {k or 0}: is the {TOOL} tool offered (chat/agents/registry.py)?"
        )
    made = await recorded(stub_port, model(k or 0), (k or 0) + 1)
    bodies = [request["body"] for request in made]
    if len(bodies) != (k or 0) + 1 or (k is not None) != (b'"tools"' in bodies[0]):
        raise RuntimeError(f"{channel}: the stub did not get the {(k or 0) + 1} requests of the reply")
    reference = await direct(stub_port, bodies)
    tool_ms = float(got["timings"].get("tool_ms", 0))
    # The loop's time between the model's answer and its next request, tool included
    # (the stub's clock): the part of a round spent in the server's loop.
    gaps = [(after["arrived_ns"] - before["answered_ns"]) / 1e6 for before, after in itertools.pairwise(made)]
    return {
        "between_requests_ms": gaps,
        "reply_ms": got["ms"],
        "direct_ms": reference,
        "tool_ms": tool_ms,
        "overhead_ms": got["ms"] - reference - tool_ms,
        "frames": got["frames"],
    }


def summary(values: list[float], percentile: Percentile) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2)}


async def write_costs(reps: int, percentile: Percentile) -> dict[str, Any]:
    """One UPDATE of a turn's steps and one event's publish, each timed alone, ``reps``
    times, in this process (through db_call, as the loop makes them), on an open bot turn
    of a channel of its own that is closed again afterwards."""
    from chat.agents import steps
    from chat.generation import records
    from chat.models import Channel, Turn
    from chat.realtime import events
    from chat.realtime.async_db import db_call

    def open_turn() -> tuple[int, str, int]:
        prepare([])
        channel = Channel.objects.get(name=channel_name(0))
        session = channel.active_session
        assert session is not None
        turn = Turn.objects.create(session=session, role=Turn.Role.BOT)
        return channel.pk, channel.name, turn.pk

    channel_id, name, turn_id = await sync_to_async(open_turn)()
    step = steps.new_step(
        call_id="call_0", round_no=1, name=TOOL, arguments={"timezone": "UTC"}, text_offset=0
    )
    step.update(
        status=steps.OK, ok=True, content="2026-12-01T04:00:00+00:00 (Tuesday, UTC, UTC)", duration_ms=0
    )
    save, publish = [], []
    try:
        for i in range(reps):
            started = time.monotonic()
            await db_call(records.save_steps)(
                turn_id, [dict(step, call_id=f"call_{j}") for j in range(i % 8 + 1)]
            )
            save.append((time.monotonic() - started) * 1000)
            started = time.monotonic()
            await events.apublish(
                channel_id, name, {**events.status_event(0, "checking the time…"), "turn_id": turn_id}
            )
            publish.append((time.monotonic() - started) * 1000)
    finally:
        await sync_to_async(Turn.objects.filter(pk=turn_id).update)(finish_reason=Turn.FinishReason.STOP)
    return {
        "reps": reps,
        "save_steps_ms": summary(save, percentile),
        "publish_ms": summary(publish, percentile),
        # generation.py: _run_round saves the round's calls once, _close_step each result.
        "saves_per_round": 2,
    }


async def request_costs(stub_port: int, reps: int, percentile: Percentile) -> dict[str, Any]:
    """One model request through the provider's client (httpx, as the loop makes each
    round's), beside the same request's body sent over a bare socket, in this process."""
    from chat.generation.tasks import complete, task_config
    from chat.models import Channel
    from chat.realtime.async_db import db_call

    config = await db_call(lambda: task_config(Channel.objects.get(name=NO_TOOLS)))()
    client = []
    for _ in range(reps + 1):
        started = time.monotonic()
        async for _piece in complete(config, system="", user="go", max_tokens=16):
            pass
        client.append((time.monotonic() - started) * 1000)
    body = [request["body"] for request in await recorded(stub_port, config.model, 1)]
    bare = [await direct(stub_port, body) for _ in range(reps + 1)]
    return {
        "reps": reps,
        "provider_ms": summary(client[1:], percentile),
        "bare_socket_ms": summary(bare[1:], percentile),
    }


async def measure(
    port: int, token: str, stub_port: int, size: dict[str, Any], percentile: Percentile
) -> dict[str, Any]:
    """``size["runs"]`` rounds (and one to warm up, not counted); in each, one reply in
    every channel, in an order that rotates so that none always goes first."""
    rounds: list[int] = size["rounds"]
    await sync_to_async(prepare)(rounds)
    probes: list[int | None] = [None, 0, *rounds]
    got: dict[int | None, list[dict[str, Any]]] = {k: [] for k in probes}
    for run in range(size["runs"] + 1):
        turn = run % len(probes)
        this = {k: await sample(port, token, stub_port, k) for k in probes[turn:] + probes[:turn]}
        if run:
            for k, value in this.items():
                got[k].append(value)
    plain = [s["overhead_ms"] for s in got[0]]
    plain_frames: collections.Counter[str] = sum((s["frames"] for s in got[0]), collections.Counter())
    rows = []
    for k in [0, *rounds]:
        samples = got[k]
        row: dict[str, Any] = {"rounds": k, "requests": k + 1}
        for key in ("reply_ms", "direct_ms", "tool_ms", "overhead_ms"):
            row[key] = summary([s[key] for s in samples], percentile)
        if k:
            row["between_requests_ms"] = summary(
                [gap for s in samples for gap in s["between_requests_ms"]], percentile
            )
            per_round = [(s["overhead_ms"] - p) / k for s, p in zip(samples, plain, strict=True)]
            row["per_round_ms"] = summary(per_round, percentile)
            row["per_round_to_plain"] = {
                "p50": round(percentile(per_round, 50) / max(percentile(plain, 50), 0.01), 3),
                "p99": round(percentile(per_round, 99) / max(percentile(plain, 99), 0.01), 3),
            }
            frames: collections.Counter[str] = sum((s["frames"] for s in samples), collections.Counter())
            row["events_per_round"] = {
                kind: round((frames[kind] - plain_frames[kind]) / k / len(samples), 2)
                for kind in sorted(set(frames) | set(plain_frames))
                # presence comes and goes with the sockets; tokens are merged by timing
                if frames[kind] != plain_frames[kind] and kind not in ("presence", "token")
            }
        rows.append(row)
    no_tools = got[None]
    figures = {
        "runs": size["runs"],
        "tool": TOOL,
        "model": "stub-1000-2-<rounds>",
        "rows": rows,
        "no_tools": {
            key: summary([s[key] for s in no_tools], percentile) for key in ("reply_ms", "overhead_ms")
        },
        "writes": await write_costs(size["write_reps"], percentile),
        "requests": await request_costs(stub_port, size["write_reps"], percentile),
    }
    for row in rows[1:]:
        print(
            f"  tool loop, {row['rounds']} round(s): overhead p50 {row['overhead_ms']['p50']} ms; "
            f"per round p50 {row['per_round_ms']['p50']} ms, p99 {row['per_round_ms']['p99']} ms "
            f"({row['per_round_to_plain']['p50']}× the plain reply's overhead "
            f"{rows[0]['overhead_ms']['p50']} ms)",
            flush=True,
        )
    return figures
