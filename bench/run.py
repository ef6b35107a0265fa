"""`make bench`: the real stack on this machine, measured beside a bare broadcaster.

Starts Redis (REDIS_URL, else the embedded one), a SQLite database (DATABASE_URL to use
another), the stub model, one or two ASGI server processes and the reference
broadcaster; prints a table and writes bench/results.json and bench/RESULTS.md.
`--smoke` runs every scenario small, in seconds, so CI keeps the benchmark working;
`--only ttft-sse,rest` runs just those scenarios (SCENARIOS), to iterate on one in a
minute, and writes to var/bench-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from asgiref.sync import sync_to_async

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import files, growth, retrieval, tool_rounds  # noqa: E402
from bench.httpclient import Connection  # noqa: E402
from bench.report import write_reports  # noqa: E402
from bench.wsclient import WSClient, connect  # noqa: E402
from chat.management.commands.serve import server_command  # noqa: E402
from tests.processes import free_port, stop, wait_for_port  # noqa: E402

# What `make run` serves (chatsite/settings.py CHANNEL_LAYER, the serve command's
# ASGI_SERVER), chosen over repeated runs of the matrix below.
DEFAULT_SERVER = "uvicorn"
DEFAULT_LAYER = "pubsub"

# Every scenario, in the order main() runs them; `--only` takes a comma-separated subset.
SCENARIOS = (
    "memory",
    "matrix",
    "ttft",
    "ttft-long",
    "ttft-sse",
    "ttft-credits",
    "fanout",
    "concurrent",
    "throughput",
    "rest",
    "growth",
    "files",
    "retrieval",
    "tool-rounds",
)
# The long session of ttft-long: 250 user/bot pairs, in a channel whose provider's
# window (LONG_CONTEXT tokens) holds only part of it, like the fresh channel beside it.
LONG_SESSION_TURNS = 500
LONG_CONTEXT = 4096


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Stack:
    """The environment shared by every run: Redis, database, stub model, test data."""

    env: dict[str, str]
    stub_port: int
    tokens: list[str] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # channel name: its active session
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, args: list[str], port: int, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(process)
        wait_for_port(port)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        stop(process, signal.SIGTERM)
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)


def start_stub() -> tuple[subprocess.Popen[bytes], int]:
    """The stub model on a free port, once it accepts connections; and that port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.stub_model", str(port)], cwd=ROOT, start_new_session=True
    )
    wait_for_port(port)
    return process, port


def stop_stub(process: subprocess.Popen[bytes]) -> None:
    stop(process, signal.SIGTERM)


def over_trees(processes: list[subprocess.Popen[bytes]], measure: Callable[[psutil.Process], float]) -> float:
    """The sum of ``measure`` over the processes and all their children."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(process.pid)
            total += sum(measure(p) for p in [proc, *proc.children(recursive=True)])
    return total


def cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    def busy(p: psutil.Process) -> float:
        times = p.cpu_times()
        return times.user + times.system

    return over_trees(processes, busy)


def machine_busy_seconds() -> float:
    """CPU seconds all the machine's cores have been busy (not idle or waiting)."""
    times = psutil.cpu_times()
    return float(sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq")))


def rss_bytes(processes: list[subprocess.Popen[bytes]]) -> int:
    return int(over_trees(processes, lambda p: p.memory_info().rss))


# --- one broadcast, measured --------------------------------------------------------------


# One stub token in a token frame's data: " <index>:<ns when emitted>" (stub_model.py).
TOKEN_PIECE = re.compile(rb" (\d+):(\d+)")


class Watcher:
    """Records which stub tokens arrived and how late."""

    # When any watcher last got a frame (monotonic ns): see settle().
    last_frame_ns = 0

    def __init__(self, ready_now: bool = False, timed: bool = True) -> None:
        self.timed = timed  # False: which tokens came, not when (a lazy reader's times are its own)
        self.latencies_ms: list[float] = []
        self.indices: set[int] = set()
        self.ready = asyncio.get_running_loop().create_future()
        if ready_now:  # the reference sends no history
            self.ready.set_result(True)
        self.done = asyncio.get_running_loop().create_future()
        self.first_token_ns: int | None = None
        self.since_ns = 0  # tokens emitted before this are a previous run's, not counted

    def reset(self, since_ns: int) -> None:
        """Ready for another generation: only tokens emitted from ``since_ns`` count."""
        self.latencies_ms, self.indices, self.first_token_ns = [], set(), None
        self.done = asyncio.get_running_loop().create_future()
        self.since_ns = since_ns

    def on_message(self, text: str, now: int) -> None:
        Watcher.last_frame_ns = now
        if '"token"' in text:
            event = orjson.loads(text)
            if event["type"] == "token":
                if self.first_token_ns is None:
                    self.first_token_ns = now
                for piece in event["data"].split():
                    index, emitted = piece.split(":")
                    if int(emitted) >= self.since_ns:
                        self.indices.add(int(index))
                        if self.timed:
                            self.latencies_ms.append((now - int(emitted)) / 1e6)
                return
        if '"history"' in text and not self.ready.done():
            self.ready.set_result(True)
        elif '"done"' in text and not self.done.done() and orjson.loads(text)["type"] == "done":
            self.done.set_result(True)

    def on_batch(self, texts: list[bytes], now: int) -> None:
        """A lazy reader's messages (wsclient.py): which tokens came, from the token
        frames at once, without decoding each; not timed."""
        Watcher.last_frame_ns = now
        tokens = b"".join(text for text in texts if b'"type":"token"' in text)
        for index, emitted in TOKEN_PIECE.findall(tokens):
            if int(emitted) >= self.since_ns:
                self.indices.add(int(index))
        for text in texts:
            if b'"type":"done"' in text and not self.done.done():
                self.done.set_result(True)
            elif b'"history"' in text and not self.ready.done():
                self.ready.set_result(True)


async def settle(quiet_s: float, longest_s: float = 10.0) -> None:
    """Until no watcher has had a frame for ``quiet_s`` (a run that fell behind may
    still be draining), or ``longest_s``."""
    deadline = time.monotonic() + longest_s
    while time.monotonic() < deadline:
        if time.monotonic_ns() - Watcher.last_frame_ns >= quiet_s * 1e9:
            return
        await asyncio.sleep(0.1)


async def open_watchers(targets: list[tuple[int, str]], count: int) -> tuple[list[Watcher], list[WSClient]]:
    watchers, clients = [], []
    for i in range(count):
        port, path = targets[i % len(targets)]
        watcher = Watcher(ready_now=path.startswith("/watch"))
        clients.append(await connect("127.0.0.1", port, path, watcher.on_message))
        watchers.append(watcher)
        if i % 50 == 49:
            await asyncio.sleep(0)
    return watchers, clients


async def broadcast_once(
    watchers: list[Watcher], trigger, expected_tokens: int, timeout: float
) -> dict[str, Any]:
    await asyncio.wait_for(asyncio.gather(*(w.ready for w in watchers if not w.ready.done())), 120)
    await trigger()
    await until_done(watchers, timeout)
    return deliveries(watchers, expected_tokens)


async def until_done(watchers: list[Watcher], timeout: float) -> None:
    """Until every watcher has seen its reply end, or ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(w.done for w in watchers)), timeout)


def deliveries(watchers: list[Watcher], expected_tokens: int) -> dict[str, Any]:
    """Latency percentiles, tokens lost and tokens delivered over all the watchers."""
    latencies = [v for w in watchers for v in w.latencies_ms]
    received = sum(len(w.indices) for w in watchers)
    return {
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "lost": expected_tokens * len(watchers) - received,
        "deliveries": received,
    }


class Target:
    """Either the Colloquy stack or the reference broadcaster, seen the same way."""

    def __init__(self, stack: Stack, kind: str, ports: list[int], processes: list[subprocess.Popen[bytes]]):
        self.stack, self.kind, self.ports, self.processes = stack, kind, ports, processes
        self.chat: WSClient | None = None

    def watch_path(self, channel: str) -> str:
        return f"/watch/{channel}" if self.kind == "reference" else f"/ws/{channel}?watch=1"

    def watch_targets(self, channel: str) -> list[tuple[int, str]]:
        return [(port, self.watch_path(channel)) for port in self.ports]

    async def trigger(self, channel: str, model: str, process: int = 0) -> None:
        """Start a generation of ``model`` in the channel, from a chat client on the
        ``process``-th port (kept in ``self.chat`` until the caller closes it)."""
        port = self.ports[process]
        if self.kind == "reference":
            client = await connect("127.0.0.1", port, f"/chat/{channel}", lambda t, n: None)
            client.send_text(json.dumps({"model": model}))
            self.chat = client
            return
        headers = {"Authorization": f"Bearer {self.stack.tokens[0]}"}
        ready = asyncio.get_running_loop().create_future()

        def on_message(text: str, now: int) -> None:
            if not ready.done() and '"history"' in text:
                ready.set_result(True)

        client = await connect("127.0.0.1", port, f"/ws/{channel}", on_message, headers)
        await ready
        client.send_text(json.dumps({"type": "message", "text": "go", "params": {"model": model}}))
        self.chat = client


async def run_fanout(
    target: Target, channel: str, watchers_n: int, rate: float, count: int
) -> dict[str, Any]:
    watchers, clients = await open_watchers(target.watch_targets(channel), watchers_n)
    await asyncio.wait_for(asyncio.gather(*(w.ready for w in watchers if not w.ready.done())), 120)
    await asyncio.sleep(0.5)  # let the connection work (history, presence) settle
    cpu_before = cpu_seconds(target.processes)
    result = await broadcast_once(
        watchers, lambda: target.trigger(channel, f"stub-{rate:g}-{count}"), count, timeout=count / rate + 30
    )
    result["cpu_s"] = cpu_seconds(target.processes) - cpu_before
    for client in clients:
        client.close()
    if target.chat:
        target.chat.close()
    await asyncio.sleep(0.3)
    return result


async def measure_memory(target: Target, channel: str, n: int) -> float:
    # Warm up first: the first connections of a process pay one-time costs (lazy
    # imports, thread pools, database connections) that are not per connection.
    warm, warm_clients = await open_watchers(target.watch_targets(channel), 50)
    await asyncio.wait_for(asyncio.gather(*(w.ready for w in warm)), 60)
    for client in warm_clients:
        client.close()
    await asyncio.sleep(1)
    before = rss_bytes(target.processes)
    watchers, clients = await open_watchers(target.watch_targets(channel), n)
    await asyncio.wait_for(asyncio.gather(*(w.ready for w in watchers)), 120)
    await asyncio.sleep(2)
    after = rss_bytes(target.processes)
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)
    return round((after - before) / n / 1024, 1)


async def direct_first_token(stub_port: int) -> float:
    """Milliseconds from a request straight to the stub model to its first token."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stub_port)
    body = json.dumps({"model": "stub-1000-2", "messages": []}).encode()
    started = time.monotonic_ns()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: s\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    while not (await reader.readline()).startswith(b"data: "):
        pass
    elapsed = (time.monotonic_ns() - started) / 1e6
    writer.close()
    return elapsed


async def stack_first_token(port: int, channel: str, token: str) -> float:
    """Milliseconds from a chat message on the socket to the reply's first token frame
    (the reply is then awaited to its end)."""
    first = asyncio.get_running_loop().create_future()
    ready = asyncio.get_running_loop().create_future()
    done = asyncio.get_running_loop().create_future()

    def on_message(text: str, now: int) -> None:
        if '"history"' in text and not ready.done():
            ready.set_result(now)
        elif '"type":"token"' in text and not first.done():
            first.set_result(now)
        elif '"type":"done"' in text and not done.done():
            done.set_result(now)

    client = await connect(
        "127.0.0.1", port, f"/ws/{channel}", on_message, {"Authorization": f"Bearer {token}"}
    )
    await ready
    started = time.monotonic_ns()
    client.send_text(json.dumps({"type": "message", "text": "go"}))
    elapsed = (await asyncio.wait_for(first, 10) - started) / 1e6
    await asyncio.wait_for(done, 10)
    client.close()
    return float(elapsed)


async def sse_first_token(port: int, channel: str, token: str) -> float:
    """Milliseconds from posting a message with `Accept: text/event-stream` to the
    stream's first `token` event (the stream is read to its `done`). The connection is
    opened before the clock starts, as the socket is in stack_first_token."""
    connection = Connection(
        port,
        {
            "Authorization": f"Bearer {token}",
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
        },
    )
    await connection.open()
    request = connection.request(
        "POST", f"/api/channels/{channel}/messages", json.dumps({"text": "go"}).encode()
    )
    started, first = await connection.stream_until(request, b"event: token", b"event: done", 10)
    return (first - started) / 1e6


def overhead(stack: list[float], direct: list[float]) -> dict[str, float]:
    """A path's first-token times less the stub's own (the direct request's)."""
    return {
        "p50": round(percentile(stack, 50) - percentile(direct, 50), 2),
        "p99": round(percentile(stack, 99) - percentile(direct, 99), 2),
        "stack_p50_ms": round(percentile(stack, 50), 2),
        "direct_p50_ms": round(percentile(direct, 50), 2),
    }


Probe = Callable[[], Awaitable[float]]


async def measure_ttft(stub_port: int, probes: dict[str, Probe], runs: int) -> dict[str, dict[str, float]]:
    """Each probe's first-token overhead over ``runs`` rounds. A round times the stub
    directly, then every probe once, in an order that rotates so that none always goes
    first; the first round warms up and is not counted."""
    names = list(probes)
    direct: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs + 1):
        first = await direct_first_token(stub_port)
        turn = run % len(names)
        got = {name: await probes[name]() for name in names[turn:] + names[:turn]}
        if run == 0:
            continue
        direct.append(first)
        for name, value in got.items():
            times[name].append(value)
    return {name: overhead(values, direct) for name, values in times.items()}


class WatcherPool:
    """Watchers of ``channels`` on ``target``, kept open from one trial of a search to
    the next: each trial opens or closes only the difference. Watcher i watches channel
    i mod K, on process (i div K) mod P, so that every process serves every channel and
    the processes share the watchers round-robin. One group of K × P watchers in
    ``timed_every`` reads promptly and is timed; the others read lazily (wsclient.py),
    which roughly halves the client's CPU per frame, and count only what they got."""

    def __init__(self, target: Target, channels: list[str], timed_every: int, lazy_s: float) -> None:
        self.target, self.channels = target, channels
        self.timed_every, self.lazy_s = timed_every, lazy_s
        self.watchers: list[Watcher] = []
        self.clients: list[WSClient] = []

    async def open(self, i: int) -> tuple[Watcher, WSClient]:
        ports, k = self.target.ports, len(self.channels)
        path = self.target.watch_path(self.channels[i % k])
        timed = i // (k * len(ports)) % self.timed_every == 0
        watcher = Watcher(ready_now=self.target.kind == "reference", timed=timed)
        port = ports[i // k % len(ports)]
        if timed:
            return watcher, await connect("127.0.0.1", port, path, watcher.on_message)
        lazy_s, on_batch = self.lazy_s, watcher.on_batch
        return watcher, await connect("127.0.0.1", port, path, watcher.on_message, None, lazy_s, on_batch)

    async def resize(self, n: int) -> bool:
        """Opens or closes watchers until there are ``n``; whether any were opened."""
        opened = len(self.watchers) < n
        while len(self.watchers) > n:
            self.watchers.pop()
            self.clients.pop().close()
        while len(self.watchers) < n:  # fifty handshakes at a time
            batch = range(len(self.watchers), min(n, len(self.watchers) + 50))
            for watcher, client in await asyncio.gather(*(self.open(i) for i in batch)):
                self.watchers.append(watcher)
                self.clients.append(client)
        await asyncio.wait_for(asyncio.gather(*(w.ready for w in self.watchers if not w.ready.done())), 120)
        return opened


@dataclass
class Capacity:
    """The delivery capacity scenario's parameters (sizes()["capacity"])."""

    # Generating at once, each at ``rate``: several, so that the load is several events
    # every token interval rather than one burst, and the generations (each runs in the
    # process it was posted to) are spread over the processes.
    channels: int
    rate: float  # tokens/s per channel
    seconds: float  # per trial
    p99_ms: float  # the latency bound: a trial holds if p99 ≤ this and nothing is lost
    start: int  # watchers in the first trial; doubled until a trial fails
    cap: int  # watchers never tried above this
    refine: int  # geometric halvings between the last held and the first failed
    timed_every: int  # one group of watchers (one per channel and process) in this many is timed
    lazy_s: float  # how often the others read their sockets (wsclient.py)
    retry_below: float  # a size failed with p99 under this many times the bound is tried again


async def loop_lag(lags: list[float], every_s: float = 0.005) -> None:
    """Until cancelled, how late (ms) this client's event loop wakes from a short sleep:
    a frame that reaches a busy client waits about as long before it is read, so this
    is the client's own share of the latencies it measures."""
    while True:
        began = time.monotonic()
        await asyncio.sleep(every_s)
        lags.append((time.monotonic() - began - every_s) * 1000)


async def capacity_trial(target: Target, pool: WatcherPool, n: int, cap: Capacity) -> dict[str, Any]:
    """``n`` watchers, every channel generating ``cap.seconds`` of tokens at
    ``cap.rate``: emit → receive latency, loss, and the CPU of the servers, of this
    benchmark client and of the whole machine (% of one core) over the generation."""
    if await pool.resize(n):
        await asyncio.sleep(0.5)  # let the new connections' work (history, presence) settle
    await settle(0.3)
    count = max(int(cap.rate * cap.seconds), 5)
    model = f"stub-{cap.rate:g}-{count}"
    since = time.monotonic_ns()
    for watcher in pool.watchers:
        watcher.reset(since)
    began, client_cpu, server_cpu = time.monotonic(), time.process_time(), cpu_seconds(target.processes)
    machine_cpu = machine_busy_seconds()
    lags: list[float] = []
    lag = asyncio.create_task(loop_lag(lags))
    chats = []
    for i, channel in enumerate(pool.channels):
        await target.trigger(channel, model, i % len(target.ports))
        chats.append(target.chat)
    await until_done(pool.watchers, count / cap.rate + 5)
    elapsed = time.monotonic() - began
    lag.cancel()
    got = deliveries(pool.watchers, count)
    got.update(
        watchers=n,
        timed=sum(w.timed for w in pool.watchers),
        held=got["lost"] == 0 and got["p99_ms"] <= cap.p99_ms,
        client_cpu_pct=round((time.process_time() - client_cpu) / elapsed * 100, 1),
        server_cpu_pct=round((cpu_seconds(target.processes) - server_cpu) / elapsed * 100, 1),
        machine_cpu_pct=round((machine_busy_seconds() - machine_cpu) / elapsed * 100, 1),
        client_lag_p99_ms=round(percentile(lags, 99), 1),
    )
    for chat in chats:
        if chat:
            chat.close()
    print(
        f"    {target.kind}, {len(target.ports)} process(es): {n} watchers: p99 {got['p99_ms']} ms, "
        f"lost {got['lost']}; CPU % of a core: servers {got['server_cpu_pct']}, client "
        f"{got['client_cpu_pct']}, whole machine {got['machine_cpu_pct']}; client lag p99 "
        f"{got['client_lag_p99_ms']} ms",
        flush=True,
    )
    return got


async def most_watchers(target: Target, cap: Capacity) -> dict[str, Any]:
    """The most watchers held (see capacity_trial), doubling from ``cap.start`` until a
    size fails or ``cap.cap`` is passed, then ``cap.refine`` geometric halvings between
    the last held and the first failed. A size that fails near the bound (p99 under
    ``cap.retry_below`` times it) is tried once more, and fails if that fails too: one
    stall of the shared machine in a trial of a few seconds is enough to push a p99
    over the bound. ``first_failed`` is None when nothing failed (the capacity lies
    above the most tried); ``watchers`` is 0 when the first size already failed."""
    pool = WatcherPool(target, [f"bench{i}" for i in range(cap.channels)], cap.timed_every, cap.lazy_s)
    trials: list[dict[str, Any]] = []

    async def holds(n: int) -> dict[str, Any] | None:
        for attempt in (1, 2):
            got = await capacity_trial(target, pool, n, cap)
            trials.append({**got, "attempt": attempt})
            if got["held"]:
                return got
            if got["p99_ms"] > cap.retry_below * cap.p99_ms:
                return None  # far over the bound: no stall explains it
        return None

    best: dict[str, Any] | None = None
    failed: int | None = None
    n = cap.start
    while n <= cap.cap:
        got = await holds(n)
        if got is None:
            failed = n
            break
        best, n = got, n * 2
    for _ in range(cap.refine if best and failed else 0):
        assert best is not None and failed is not None
        middle = round((best["watchers"] * failed) ** 0.5)
        if middle in (best["watchers"], failed):
            break
        got = await holds(middle)
        if got is None:
            failed = middle
        else:
            best = got
    await pool.resize(0)
    watchers = best["watchers"] if best else 0
    return {
        "watchers": watchers,
        "deliveries_per_s": round(watchers * cap.rate),
        "first_failed": failed,
        "best": best,
        "trials": trials,
    }


async def measure_concurrent(
    target: Target, channels: list[str], per_channel: int, rate: float, count: int
) -> dict[str, Any]:
    groups = []
    for name in channels:
        watchers, clients = await open_watchers(target.watch_targets(name), per_channel)
        groups.append((name, watchers, clients))
    everyone = [w for _, ws, _ in groups for w in ws]
    await asyncio.wait_for(asyncio.gather(*(w.ready for w in everyone)), 120)
    chats = []
    for name, _, _ in groups:
        await target.trigger(name, f"stub-{rate:g}-{count}")
        chats.append(target.chat)
    await until_done(everyone, count / rate + 60)
    figures = deliveries(everyone, count)
    for _, _, clients in groups:
        for client in clients:
            client.close()
    for chat in chats:
        if chat:
            chat.close()
    return {"p99_ms": figures["p99_ms"], "p50_ms": figures["p50_ms"], "lost": figures["lost"]}


async def hammer(
    ports: list[int], path: str, headers: dict[str, str], seconds: float, clients: int = 20
) -> dict[str, float]:
    """``clients`` loops getting ``path`` for ``seconds``, each on its own keep-alive
    connection, spread round-robin over ``ports``: requests/s, p50 and p99, and the
    share of a core this client took (it runs on the machine it measures)."""
    latencies: list[float] = []
    connections = [Connection(ports[i % len(ports)], headers) for i in range(clients)]

    async def get(connection: Connection) -> None:
        started = time.monotonic()
        status, body = await connection.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        latencies.append((time.monotonic() - started) * 1000)

    async def worker(connection: Connection) -> None:
        while time.monotonic() < deadline:
            await get(connection)
        connection.close()

    await asyncio.gather(*(get(c) for c in connections))  # connect and warm up, not counted
    latencies.clear()
    began, cpu = time.monotonic(), time.process_time()
    deadline = began + seconds
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.monotonic() - began
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "client_cpu_pct": round((time.process_time() - cpu) / elapsed * 100, 1),
    }


# Each API endpoint of the REST scenario and the bare Django view (bench/urls.py) that
# reads the same rows and answers the same JSON.
API_AND_BARE = {
    "GET /api/channels": "GET /bench/channels",
    "GET /api/sessions/{id}/turns": "GET /bench/turns/{id}",
}


def rest_paths(stack: Stack) -> dict[str, str]:
    """The label and path of each endpoint, API and bare in turns (so that drift over
    the run does not favour one kind)."""
    session = stack.sessions["rest"]
    return {
        "GET /api/channels": "/api/channels",
        "GET /bench/channels": "/bench/channels",
        "GET /api/sessions/{id}/turns": f"/api/sessions/{session}/turns?limit=50",
        "GET /bench/turns/{id}": f"/bench/turns/{session}?limit=50",
    }


async def measure_rest(stack: Stack, ports: list[int], seconds: float) -> dict[str, Any]:
    """Each endpoint with 20 clients; the API's with the bearer token, the bare views'
    with nothing (they check nothing)."""
    api = {"Authorization": f"Bearer {stack.tokens[0]}"}
    found = {}
    for label, path in rest_paths(stack).items():
        found[label] = await hammer(ports, path, api if label.startswith("GET /api/") else {}, seconds)
        print(
            f"  REST {label}, {len(ports)} process(es): {found[label]['rps']} req/s, "
            f"p50 {found[label]['p50_ms']} ms, p99 {found[label]['p99_ms']} ms",
            flush=True,
        )
    return found


# --- the whole run ----------------------------------------------------------------------------


def prepare_stack(var: Path, stub_port: int, channels: int) -> Stack:
    """Redis, the database and the test data: users with tokens, channels, the stub."""
    from chatsite.embedded_redis import ensure_running

    redis_url = os.environ.get("REDIS_URL") or ensure_running(var)
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{var / 'bench.sqlite3'}"),
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"bench-{secrets.token_hex(4)}",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "MESSAGES_PER_MINUTE": "0",
        "RECOVER_ON_START": "0",
        "LOG_LEVEL": "WARNING",
        "COLLOQUY_VAR_DIR": str(var),
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from bench import seed
    from chat.models import ApiToken, Provider
    from chat.services import create_channel

    for name, window in (("stub", 100000), ("stub4k", LONG_CONTEXT)):
        Provider.objects.create(
            name=name,
            kind="openai_compat",
            base_url=f"http://127.0.0.1:{stub_port}/v1",
            default_model="stub-50-20",
            extended_sampling=False,
            context_window=window,
        )
    user = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(12))
    for i in range(channels):
        create_channel(name=f"bench{i}", owner=user, params={"provider": "stub", "max_tokens": 4000})
    create_channel(name="ttft", owner=user, params={"provider": "stub", "model": "stub-1000-2"})
    create_channel(name="files", owner=user, params={"provider": "stub"})
    # ttft-credits: the ttft channel's twin, answered by the process with credits on.
    create_channel(name="ttft-credits", owner=user, params={"provider": "stub", "model": "stub-1000-2"})
    stack = Stack(env=env, stub_port=stub_port, tokens=[ApiToken.issue(user)])
    # ttft-long: a fresh and a long session on the same small window, so that the long
    # one's prompt holds only its last turns and the two are comparable.
    short_window = {"provider": "stub4k", "model": "stub-1000-2"}
    create_channel(name="ttft-fresh", owner=user, params=short_window)
    long = create_channel(name="ttft-long", owner=user, params=short_window)
    seed.conversation(long, user, LONG_SESSION_TURNS, prompt_limit=seed.prompt_chars(LONG_CONTEXT))
    # rest: the turns endpoint reads a session of 100 turns, whichever scenarios ran
    # before; bot turns keep a 2,000-character prompt (REST answers carry it).
    rest = create_channel(name="rest", owner=user, params=short_window)
    stack.sessions["rest"] = str(seed.conversation(rest, user, 100, prompt_limit=2000).pk)
    return stack


def start_colloquy(
    stack: Stack, server: str, layer: str, processes: int, extra_env: dict[str, str] | None = None
) -> Target:
    ports = [free_port() for _ in range(processes)]
    env = {"CHANNEL_LAYER": layer, **(extra_env or {})}
    started = [stack.start(server_command(server, "127.0.0.1", port), port, env) for port in ports]
    return Target(stack, "colloquy", ports, started)


def start_reference(stack: Stack) -> Target:
    port = free_port()
    process = stack.start([sys.executable, "-m", "bench.reference", str(port), str(stack.stub_port)], port)
    return Target(stack, "reference", [port], [process])


def stop_target(stack: Stack, target: Target) -> None:
    for process in target.processes:
        stack.stop(process)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {
        name: version(name)
        for name in ("Django", "channels", "channels-redis", "daphne", "uvicorn", "websockets", "redis")
    }
    found["python"] = platform.python_version()
    return found


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
    }


def sizes(smoke: bool) -> dict[str, Any]:
    return {
        "fanout": [1, 20] if smoke else [1, 100, 1000],
        "tokens": 20 if smoke else 100,
        "rate": 50.0,
        "ttft_runs": 5 if smoke else 40,
        # Delivery capacity (the throughput scenario): the most watchers held at
        # 50 tokens/s, p99 ≤ 100 ms and nothing lost; see Capacity.
        "capacity": {
            "channels": 2 if smoke else 4,
            "rate": 50.0,
            "seconds": 1.0 if smoke else 2.0,
            "p99_ms": 100.0,
            "start": 20 if smoke else 500,
            "cap": 40 if smoke else 16000,
            "refine": 0 if smoke else 2,
            "timed_every": 20,
            "lazy_s": 0.25 if smoke else 0.5,
            "retry_below": 5.0,
        },
        "concurrent": (5, 3) if smoke else (50, 10),
        "concurrent_rate": 20.0,
        "concurrent_tokens": 10 if smoke else 40,
        "idle": 50 if smoke else 1000,
        "matrix_watchers": 20 if smoke else 500,
        "rest_seconds": 1.0 if smoke else 5.0,
        "growth": {
            "history_turns": [10, 1000] if smoke else [10, 1000, 100000],
            "list_channels": [10, 100] if smoke else [10, 1000, 10000],
            "replay_events": 5000,
            "replay_back": [50, 500, 5000],
            "connects": 3 if smoke else 10,
            "requests": 10 if smoke else 20,
            "replays": 1 if smoke else 3,
        },
        # Knowledge-base retrieval (bench/retrieval.py): the FAQ's pairs indexed, then the
        # base grown to each size in chunks; questions asked at each size.
        "retrieval": {
            "pairs": 100 if smoke else 503,
            "sizes": [1000] if smoke else [10000, 100000],
            "questions": 20 if smoke else 200,
        },
        # The tool loop (bench/tool_rounds.py): replies of each number of rounds, each
        # beside its requests made straight to the stub; the writes timed alone.
        "tool_rounds": {
            "rounds": [1, 4, 8],
            "runs": 3 if smoke else 40,
            "write_reps": 20 if smoke else 200,
        },
        "files_runs": 3 if smoke else 20,
        "transcribe_runs": 2 if smoke else 10,
    }


# --- the scenarios, in the order main() runs them ----------------------------------------------


def defaults(stack: Stack, processes: int, extra_env: dict[str, str] | None = None) -> Target:
    """What `make run` serves, on ``processes`` processes."""
    return start_colloquy(stack, DEFAULT_SERVER, DEFAULT_LAYER, processes, extra_env)


def us_per_delivery(figures: dict[str, Any]) -> float:
    return float(figures["cpu_s"] / max(figures["deliveries"], 1) * 1e6)


def s_per_1000_deliveries(runs: list[dict[str, Any]]) -> float:
    cpu = sum(run["cpu_s"] for run in runs)
    return round(cpu / max(sum(run["deliveries"] for run in runs), 1) * 1000, 4)


async def idle_memory(stack: Stack, size: dict[str, Any]) -> dict[str, float]:
    """Memory per idle connection, first, on fresh processes: later runs leave freed
    memory behind that new connections reuse, which hides their cost."""
    target, reference = defaults(stack, 2), start_reference(stack)
    figures = {
        "memory_per_connection_kib": await measure_memory(target, "bench0", size["idle"]),
        "reference_memory_per_connection_kib": await measure_memory(reference, "bench0", size["idle"]),
    }
    stop_target(stack, target)
    stop_target(stack, reference)
    return figures


async def matrix_row(
    stack: Stack, server: str, layer: str, size: dict[str, Any], ref_cpu: float
) -> dict[str, Any]:
    """One server × layer combination on the matrix's fan-out, beside the reference's CPU."""
    target = start_colloquy(stack, server, layer, 1)
    got = await run_fanout(target, "bench0", size["matrix_watchers"], size["rate"], size["tokens"])
    stop_target(stack, target)
    per = us_per_delivery(got)
    # A smoke run's reference can use less CPU than the clock's tick (10 ms): no ratio.
    ratio = round(per / ref_cpu, 2) if ref_cpu else None
    print(
        f"  {server}+{layer}: {per:.1f} µs CPU/delivery ({ratio}× reference), "
        f"p99 {got['p99_ms']} ms, lost {got['lost']}",
        flush=True,
    )
    return {
        "server": server,
        "layer": layer,
        "p99_ms": got["p99_ms"],
        "lost": got["lost"],
        "cpu_us_per_delivery": round(per, 1),
        "ratio_to_reference": ratio,
    }


async def server_and_layer(stack: Stack, size: dict[str, Any]) -> dict[str, Any]:
    """Every server × layer combination on the same fan-out, and this run's best.

    The best is the lowest p99 among the lossless, CPU breaking ties. One run's p99 is
    noisy on a shared 2-core machine, so the shipped defaults were chosen over repeated
    runs (README, "Performance"); the other scenarios measure those defaults, so that
    the figures describe what `make run` serves."""
    print("Choosing the ASGI server and channel layer…", flush=True)
    reference = start_reference(stack)
    ref = await run_fanout(reference, "bench0", size["matrix_watchers"], size["rate"], size["tokens"])
    stop_target(stack, reference)
    ref_cpu = us_per_delivery(ref)
    matrix = [
        await matrix_row(stack, server, layer, size, ref_cpu)
        for server in ("daphne", "uvicorn")
        for layer in ("pubsub", "core")
    ]
    usable = [m for m in matrix if m["lost"] == 0] or matrix
    best = min(usable, key=lambda m: (m["p99_ms"], m["cpu_us_per_delivery"]))
    print(
        f"Best in this run: {best['server']} with the {best['layer']} layer; "
        f"measuring the defaults: {DEFAULT_SERVER} with the {DEFAULT_LAYER} layer",
        flush=True,
    )
    return {
        "matrix": matrix,
        "reference_cpu_us_per_delivery": round(ref_cpu, 1),
        "best_this_run": {"server": best["server"], "layer": best["layer"]},
        "choice": {"server": DEFAULT_SERVER, "layer": DEFAULT_LAYER},
    }


async def first_token_overhead(stack: Stack, size: dict[str, Any], only: set[str]) -> dict[str, Any]:
    """Time to first token on one process: over the socket (ttft), over SSE beside it
    (ttft-sse), and in a fresh and a long session beside each other (ttft-long); all in
    the same rounds, so that what they are compared with ran on the same machine state."""
    target = defaults(stack, 1)
    port, token = target.ports[0], stack.tokens[0]
    probes: dict[str, Probe] = {}
    if only & {"ttft", "ttft-sse"}:
        probes["websocket"] = lambda: stack_first_token(port, "ttft", token)
    if "ttft-sse" in only:
        probes["sse"] = lambda: sse_first_token(port, "ttft", token)
    if "ttft-long" in only:
        probes["fresh"] = lambda: stack_first_token(port, "ttft-fresh", token)
        probes["long"] = lambda: stack_first_token(port, "ttft-long", token)
    figures = await measure_ttft(stack.stub_port, probes, size["ttft_runs"])
    stop_target(stack, target)
    results: dict[str, Any] = {}
    if "websocket" in figures:
        results["ttft_overhead_ms"] = figures["websocket"]
    if "sse" in figures:
        sse, socket = figures["sse"], figures["websocket"]
        results["ttft_sse_overhead_ms"] = {**sse, "minus_websocket_p50": round(sse["p50"] - socket["p50"], 2)}
    if "long" in figures:
        fresh, long = figures["fresh"], figures["long"]
        results["ttft_long_session"] = {
            "turns": LONG_SESSION_TURNS,
            "context_window": LONG_CONTEXT,
            "fresh": fresh,
            "long": long,
            "ratio_p50": round(long["p50"] / max(fresh["p50"], 0.01), 2),
            "ratio_p99": round(long["p99"] / max(fresh["p99"], 0.01), 2),
        }
    for name, got in figures.items():
        print(f"  time to first token, {name}: overhead p50 {got['p50']} ms, p99 {got['p99']} ms", flush=True)
    return results


def time_hold_alone(reps: int) -> dict[str, float]:
    """Microseconds the hold's own work takes in this process, on the stack's database:
    the estimate, the conditional update and the hold's two rows (each rolled back)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from chat.credits import holds
    from chat.credits.balances import ensure_balance
    from chat.models import Channel

    user = get_user_model().objects.get(username="bench")
    channel = Channel.objects.get(name="ttft-credits")
    ensure_balance(user)
    took = []
    for _ in range(reps + 1):
        with transaction.atomic():
            started = time.perf_counter_ns()
            basis = holds.estimate(channel, {}, "go")
            holds.reserve(user, basis.amount)
            holds.record_hold(user=user, channel=channel, basis=basis, turn=None)
            took.append((time.perf_counter_ns() - started) / 1000)
            transaction.set_rollback(True)
    took = took[1:]
    return {"p50_us": round(percentile(took, 50), 1), "p99_us": round(percentile(took, 99), 1)}


async def credits_first_token(stack: Stack, size: dict[str, Any]) -> dict[str, Any]:
    """ttft-credits: what the credit hold (issue 18) adds to the time to first token. Two
    processes side by side, one with CREDITS_ENABLED, the same message to each in every
    round (which goes first alternates); the figures are the per-round differences
    (on − off), and the hold's own work timed alone in this process."""
    off = defaults(stack, 1)
    on = defaults(stack, 1, {"CREDITS_ENABLED": "1", "CREDITS_INITIAL": "1000000"})
    token = stack.tokens[0]
    probes: dict[str, Probe] = {
        "off": lambda: stack_first_token(off.ports[0], "ttft", token),
        "on": lambda: stack_first_token(on.ports[0], "ttft-credits", token),
    }
    times: dict[str, list[float]] = {"off": [], "on": []}
    # Three times the other first-token scenarios' rounds: a difference of two noisy
    # figures needs them for a p50 stable to a fraction of a millisecond.
    runs = size["ttft_runs"] * 3
    for run in range(runs + 1):
        order = ["off", "on"] if run % 2 else ["on", "off"]
        got = {name: await probes[name]() for name in order}
        if run == 0:
            continue  # warms up both
        for name, value in got.items():
            times[name].append(value)
    stop_target(stack, on)
    stop_target(stack, off)
    differences = [a - b for a, b in zip(times["on"], times["off"], strict=True)]
    alone = await asyncio.to_thread(time_hold_alone, size["ttft_runs"] * 5)
    figures = {
        "runs": runs,
        "off_p50_ms": round(percentile(times["off"], 50), 2),
        "on_p50_ms": round(percentile(times["on"], 50), 2),
        "difference_p50_ms": round(percentile(differences, 50), 2),
        "difference_p99_ms": round(percentile(differences, 99), 2),
        "hold_alone": alone,
    }
    print(
        f"  time to first token, credits on − off: p50 {figures['difference_p50_ms']} ms, "
        f"p99 {figures['difference_p99_ms']} ms (the hold alone: p50 {alone['p50_us']} µs)",
        flush=True,
    )
    return {"ttft_credits": figures}


async def fanout_beside_reference(target: Target, reference: Target, size: dict[str, Any]) -> dict[str, Any]:
    """Each fan-out size on ``target`` (two processes), then on the reference."""
    rows, runs, ref_runs = [], [], []
    for n in size["fanout"]:
        got = await run_fanout(target, "bench0", n, size["rate"], size["tokens"])
        ref = await run_fanout(reference, "bench0", n, size["rate"], size["tokens"])
        runs.append(got)
        ref_runs.append(ref)
        rows.append(
            {
                "watchers": n,
                "p50_ms": got["p50_ms"],
                "p99_ms": got["p99_ms"],
                "max_ms": got["max_ms"],
                "lost": got["lost"],
                "reference_p99_ms": ref["p99_ms"],
                "reference_p50_ms": ref["p50_ms"],
                "reference_lost": ref["lost"],
            }
        )
        print(
            f"  fan-out {n}: p50 {got['p50_ms']} p99 {got['p99_ms']} max {got['max_ms']} ms, "
            f"lost {got['lost']} (reference p99 {ref['p99_ms']} ms)",
            flush=True,
        )
    return {
        "fanout": rows,
        "cpu_s_per_1000_deliveries": s_per_1000_deliveries(runs),
        "reference_cpu_s_per_1000_deliveries": s_per_1000_deliveries(ref_runs),
    }


async def channels_at_once(target: Target, size: dict[str, Any]) -> dict[str, Any]:
    """Many channels generating at once (fifty in the full run), each with its watchers."""
    count, each = size["concurrent"]
    names = [f"bench{i}" for i in range(count)]
    figures = await measure_concurrent(
        target, names, each, size["concurrent_rate"], size["concurrent_tokens"]
    )
    return {"channels": count, "watchers_each": each, **figures}


async def delivery_capacity(stack: Stack, reference: Target, size: dict[str, Any]) -> dict[str, Any]:
    """The most watchers held at a fixed token rate (most_watchers) on 1 and 2
    processes and by the reference; the ratio 2 to 1, exact when both capacities were
    found, a lower bound when only 1 process's was."""
    cap = Capacity(**size["capacity"])
    began = time.monotonic()
    got: dict[str, Any] = {}
    for processes in (1, 2):
        target = defaults(stack, processes)
        got[str(processes)] = await most_watchers(target, cap)
        stop_target(stack, target)
    got["reference"] = await most_watchers(reference, cap)
    one, two = got["1"], got["2"]
    # 1 process's capacity unknown (held the most tried, or failed the least): so is
    # the ratio; 2 processes held the most tried: the ratio is at least this.
    unknown = one["first_failed"] is None or not one["watchers"]
    bound = "unknown" if unknown else "exact" if two["first_failed"] is not None else "at least"
    return {
        **asdict(cap),
        "cores": os.cpu_count(),  # shared by the servers, the client, Redis and the stub
        "processes": {"1": one, "2": two},
        "reference": got["reference"],
        "ratio_2_to_1": round(two["watchers"] / max(one["watchers"], 1), 2),
        "ratio_2_to_1_bound": bound,
        # How finely each capacity is known: watchers doubled, then the step halved.
        "step": round(2 ** (0.5**cap.refine), 2),
        "duration_s": round(time.monotonic() - began, 1),
    }


def rest_ratios(by_processes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Requests/s of each API endpoint over its bare view's, per process count; and of
    2 processes over 1, per endpoint."""
    return {
        "api_to_bare": {
            processes: {
                api: round(got[api]["rps"] / max(got[bare]["rps"], 0.1), 2)
                for api, bare in API_AND_BARE.items()
            }
            for processes, got in by_processes.items()
        },
        "two_to_one": {
            label: round(by_processes["2"][label]["rps"] / max(figures["rps"], 0.1), 2)
            for label, figures in by_processes["1"].items()
        },
    }


async def rest_requests(stack: Stack, size: dict[str, Any]) -> dict[str, Any]:
    """REST with 20 clients, on 1 and 2 processes: each API endpoint beside the bare
    Django view that reads the same rows (bench/urls.py), served by the same processes."""
    by_processes = {}
    for processes in (1, 2):
        target = defaults(stack, processes, {"DJANGO_SETTINGS_MODULE": "bench.settings"})
        by_processes[str(processes)] = await measure_rest(stack, target.ports, size["rest_seconds"])
        stop_target(stack, target)
    return {
        "clients": 20,
        "seconds": size["rest_seconds"],
        "processes": by_processes,
        "api_and_bare": API_AND_BARE,
        **rest_ratios(by_processes),
    }


async def history_growth(stack: Stack, size: dict[str, Any]) -> dict[str, Any]:
    """The growth scenario (bench/growth.py) on one process, on data of its own made
    before the server starts; the other channels are public again afterwards."""
    data = await sync_to_async(growth.prepare)(size["growth"])
    target = defaults(stack, 1)
    try:
        return await growth.measure(target.ports[0], data, size["growth"])
    finally:
        stop_target(stack, target)
        await sync_to_async(growth.restore)(data)


async def broadcasts(stack: Stack, size: dict[str, Any], only: set[str]) -> dict[str, Any]:
    """Fan-out and many channels at once share two processes; the reference stays up
    from the fan-out to the throughput runs."""
    results: dict[str, Any] = {}
    reference = start_reference(stack) if only & {"fanout", "throughput"} else None
    if only & {"fanout", "concurrent"}:
        target = defaults(stack, 2)
        if "fanout" in only:
            assert reference is not None
            results.update(await fanout_beside_reference(target, reference, size))
        if "concurrent" in only:
            results["concurrent_channels"] = await channels_at_once(target, size)
        stop_target(stack, target)
    if "throughput" in only:
        assert reference is not None
        results["throughput"] = await delivery_capacity(stack, reference, size)
    if reference is not None:
        stop_target(stack, reference)
    return results


async def file_pipeline(stack: Stack, size: dict[str, Any]) -> dict[str, Any]:
    """Upload → ready and transcription (bench/files.py), on one server process and one
    worker, as `make run` starts them."""
    from tests.processes import celery_worker

    target = defaults(stack, 1)
    try:
        with celery_worker(stack.env):
            port, token = target.ports[0], stack.tokens[0]
            return {
                "upload": await files.upload_latency(port, token, "files", size["files_runs"], percentile),
                "transcription": await files.transcription_speed(
                    port, token, size["transcribe_runs"], percentile
                ),
            }
    finally:
        stop_target(stack, target)


async def tool_loop(stack: Stack, size: dict[str, Any]) -> dict[str, Any]:
    """The tool loop's cost per round (bench/tool_rounds.py), on one process."""
    target = defaults(stack, 1)
    try:
        return await tool_rounds.measure(
            target.ports[0], stack.tokens[0], stack.stub_port, size["tool_rounds"], percentile
        )
    finally:
        stop_target(stack, target)


async def main(smoke: bool, stack: Stack, only: set[str] | None = None) -> dict[str, Any]:
    """The scenarios in ``only`` (all by default), in SCENARIOS order; stops the
    stack's processes at the end."""
    only = set(SCENARIOS) if only is None else only
    size = sizes(smoke)
    results: dict[str, Any] = {
        "smoke": smoke,
        "scenarios": [name for name in SCENARIOS if name in only],
        "partial": only != set(SCENARIOS),
        "machine": machine(),
        "versions": versions(),
    }
    try:
        if "memory" in only:
            results.update(await idle_memory(stack, size))
        if "matrix" in only:
            results.update(await server_and_layer(stack, size))
        if only & {"ttft", "ttft-long", "ttft-sse"}:
            results.update(await first_token_overhead(stack, size, only))
        if "ttft-credits" in only:
            results.update(await credits_first_token(stack, size))
        if only & {"fanout", "concurrent", "throughput"}:
            results.update(await broadcasts(stack, size, only))
        if "rest" in only:
            results["rest"] = await rest_requests(stack, size)
        if "growth" in only:
            results["growth"] = await history_growth(stack, size)
        if "files" in only:
            results["files"] = await file_pipeline(stack, size)
        if "retrieval" in only:
            var = Path(stack.env["COLLOQUY_VAR_DIR"])
            results["retrieval"] = await asyncio.to_thread(
                retrieval.measure, stack.env, size["retrieval"], var
            )
        if "tool-rounds" in only:
            results["tool_rounds"] = await tool_loop(stack, size)
    finally:
        stack.stop_all()
    return results


def scenario_names(text: str) -> set[str]:
    """`--only`'s value: scenario names, comma-separated, each one of SCENARIOS."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(SCENARIOS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def out_dir(options: argparse.Namespace) -> Path:
    """Where the reports go: --out, else bench/ for whole runs and var/bench-only for
    --only, which never writes over the committed bench/results.json."""
    if options.out is None:
        return ROOT / "var" / "bench-only" if options.only else ROOT / "bench"
    out = Path(options.out)
    if options.only and out.resolve() == (ROOT / "bench").resolve():
        raise SystemExit("--only writes a partial report: give --out another directory than bench/")
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    parser.add_argument(
        "--only",
        type=scenario_names,
        help=f"run only these scenarios, comma-separated: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--out",
        help="where to write results.json and RESULTS.md (default bench/; with --only, var/bench-only)",
    )
    options = parser.parse_args()
    out = out_dir(options)
    stub, stub_port = start_stub()
    try:
        var = Path(tempfile.mkdtemp(prefix="colloquy-bench-"))
        stack = prepare_stack(var, stub_port, channels=max(sizes(options.smoke)["concurrent"][0], 2))
        outcome = asyncio.run(main(options.smoke, stack, options.only))
    finally:
        stop_stub(stub)
    out.mkdir(parents=True, exist_ok=True)
    print(write_reports(outcome, out))


if __name__ == "__main__":
    cli()
