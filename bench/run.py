"""`make bench`: the real stack on this machine, measured beside a bare broadcaster.

Starts Redis (REDIS_URL, else the embedded one), a SQLite database (DATABASE_URL to use
another), the stub model, one or two ASGI server processes and the reference
broadcaster; prints a table and writes bench/results.json and bench/RESULTS.md.
`--smoke` runs every scenario small, in seconds, so CI keeps the benchmark working.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wsclient import WSClient, connect  # noqa: E402
from chat.management.commands.serve import server_command  # noqa: E402
from tests.processes import free_port, stop, wait_for_port  # noqa: E402

# What `make run` serves (chatsite/settings.py CHANNEL_LAYER, the serve command's
# ASGI_SERVER), chosen over repeated runs of the matrix below.
DEFAULT_SERVER = "uvicorn"
DEFAULT_LAYER = "pubsub"


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


def rss_bytes(processes: list[subprocess.Popen[bytes]]) -> int:
    return int(over_trees(processes, lambda p: p.memory_info().rss))


# --- one broadcast, measured --------------------------------------------------------------


class Watcher:
    """Records which stub tokens arrived and how late."""

    def __init__(self, ready_now: bool = False) -> None:
        self.latencies_ms: list[float] = []
        self.indices: set[int] = set()
        self.ready = asyncio.get_running_loop().create_future()
        if ready_now:  # the reference sends no history
            self.ready.set_result(True)
        self.done = asyncio.get_running_loop().create_future()
        self.first_token_ns: int | None = None

    def on_message(self, text: str, now: int) -> None:
        if '"token"' in text:
            event = orjson.loads(text)
            if event["type"] == "token":
                if self.first_token_ns is None:
                    self.first_token_ns = now
                for piece in event["data"].split():
                    index, emitted = piece.split(":")
                    self.indices.add(int(index))
                    self.latencies_ms.append((now - int(emitted)) / 1e6)
                return
        if '"history"' in text and not self.ready.done():
            self.ready.set_result(True)
        elif '"done"' in text and not self.done.done() and orjson.loads(text)["type"] == "done":
            self.done.set_result(True)


async def open_watchers(targets: list[tuple[int, str]], count: int) -> tuple[list[Watcher], list[WSClient]]:
    watchers, clients = [], []
    for i in range(count):
        port, path = targets[i % len(targets)]
        watcher = Watcher(ready_now=path == "/watch")
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
        self.first_token = None

    def watch_targets(self, channel: str) -> list[tuple[int, str]]:
        path = "/watch" if self.kind == "reference" else f"/ws/{channel}?watch=1"
        return [(port, path) for port in self.ports]

    async def trigger(self, channel: str, model: str) -> None:
        """Start a generation of ``model`` in the channel, from a chat client on port 0."""
        if self.kind == "reference":
            client = await connect("127.0.0.1", self.ports[0], "/chat", lambda t, n: None)
            client.send_text(json.dumps({"model": model}))
            self._reference_chat = client
            return
        headers = {"Authorization": f"Bearer {self.stack.tokens[0]}"}
        ready = asyncio.get_running_loop().create_future()

        def on_message(text: str, now: int) -> None:
            if not ready.done() and '"history"' in text:
                ready.set_result(True)

        client = await connect("127.0.0.1", self.ports[0], f"/ws/{channel}", on_message, headers)
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


async def stack_first_token(target: Target, channel: str) -> float:
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
        "127.0.0.1",
        target.ports[0],
        f"/ws/{channel}",
        on_message,
        {"Authorization": f"Bearer {target.stack.tokens[0]}"},
    )
    await ready
    started = time.monotonic_ns()
    client.send_text(json.dumps({"type": "message", "text": "go"}))
    elapsed = (await asyncio.wait_for(first, 10) - started) / 1e6
    await asyncio.wait_for(done, 10)
    client.close()
    return float(elapsed)


async def measure_ttft(target: Target, stub_port: int, channel: str, runs: int) -> dict[str, float]:
    direct, stack = [], []
    for run in range(runs + 1):  # the first run warms up and is not counted
        direct.append(await direct_first_token(stub_port))
        stack.append(await stack_first_token(target, channel))
        if run == 0:
            direct.clear()
            stack.clear()
    return {
        "p50": round(percentile(stack, 50) - percentile(direct, 50), 2),
        "p99": round(percentile(stack, 99) - percentile(direct, 99), 2),
        "stack_p50_ms": round(percentile(stack, 50), 2),
        "direct_p50_ms": round(percentile(direct, 50), 2),
    }


async def measure_throughput(
    target: Target, channel: str, watchers_n: int, rates: list[float], seconds: float
) -> float:
    best = 0.0
    for rate in rates:
        result = await run_fanout(target, channel, watchers_n, rate, max(int(rate * seconds), 5))
        ok = result["lost"] == 0 and result["p99_ms"] < 250
        print(
            f"    {target.kind}: {watchers_n} watchers at {rate:g} tok/s: p99 {result['p99_ms']} ms, "
            f"lost {result['lost']}",
            flush=True,
        )
        if not ok:
            break
        best = rate * watchers_n
    return best


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


async def hammer(client: httpx.AsyncClient, path: str, seconds: float, clients: int = 20) -> dict[str, float]:
    """``clients`` loops getting ``path`` for ``seconds``: requests per second and p99."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = await client.get(path)
            response.raise_for_status()
            latencies.append((time.monotonic() - started) * 1000)

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.monotonic() - began
    return {"rps": round(len(latencies) / elapsed, 1), "p99_ms": round(percentile(latencies, 99), 2)}


async def measure_rest(stack: Stack, port: int, seconds: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {stack.tokens[0]}"}
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        sessions = (await client.get("/api/channels/bench0/sessions")).json()["sessions"]
        paths = {
            "GET /api/channels": "/api/channels",
            "GET /api/sessions/{id}/turns": f"/api/sessions/{sessions[0]['id']}/turns?limit=50",
        }
        found = {}
        for label, path in paths.items():
            found[label] = await hammer(client, path, seconds)
            print(f"  REST {label}: {found[label]['rps']} req/s, p99 {found[label]['p99_ms']} ms", flush=True)
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

    from chat.models import ApiToken, Provider
    from chat.services import create_channel

    Provider.objects.create(
        name="stub",
        kind="openai_compat",
        base_url=f"http://127.0.0.1:{stub_port}/v1",
        default_model="stub-50-20",
        extended_sampling=False,
        context_window=100000,
    )
    user = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(12))
    for i in range(channels):
        create_channel(name=f"bench{i}", owner=user, params={"provider": "stub", "max_tokens": 4000})
    create_channel(name="ttft", owner=user, params={"provider": "stub", "model": "stub-1000-2"})
    stack = Stack(env=env, stub_port=stub_port, tokens=[ApiToken.issue(user)])
    return stack


def start_colloquy(stack: Stack, server: str, layer: str, processes: int) -> Target:
    ports = [free_port() for _ in range(processes)]
    started = [
        stack.start(server_command(server, "127.0.0.1", port), port, {"CHANNEL_LAYER": layer})
        for port in ports
    ]
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
        "throughput_watchers": 20 if smoke else 200,
        "throughput_rates": [50.0, 200.0] if smoke else [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0],
        "throughput_seconds": 0.5 if smoke else 2.0,
        "concurrent": (5, 3) if smoke else (50, 10),
        "concurrent_rate": 20.0,
        "concurrent_tokens": 10 if smoke else 40,
        "idle": 50 if smoke else 1000,
        "matrix_watchers": 20 if smoke else 500,
        "rest_seconds": 1.0 if smoke else 5.0,
    }


# --- the scenarios, in the order main() runs them ----------------------------------------------


def defaults(stack: Stack, processes: int) -> Target:
    """What `make run` serves, on ``processes`` processes."""
    return start_colloquy(stack, DEFAULT_SERVER, DEFAULT_LAYER, processes)


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
    print(
        f"  {server}+{layer}: {per:.1f} µs CPU/delivery ({per / ref_cpu:.2f}× reference), "
        f"p99 {got['p99_ms']} ms, lost {got['lost']}",
        flush=True,
    )
    return {
        "server": server,
        "layer": layer,
        "p99_ms": got["p99_ms"],
        "lost": got["lost"],
        "cpu_us_per_delivery": round(per, 1),
        "ratio_to_reference": round(per / ref_cpu, 2),
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


async def first_token_overhead(stack: Stack, size: dict[str, Any]) -> dict[str, float]:
    target = defaults(stack, 1)
    figures = await measure_ttft(target, stack.stub_port, "ttft", size["ttft_runs"])
    stop_target(stack, target)
    return figures


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


async def sustained_throughput(stack: Stack, reference: Target, size: dict[str, Any]) -> dict[str, Any]:
    """The highest rate held with 1 and 2 processes, and by the reference."""

    async def best_rate(target: Target) -> float:
        return await measure_throughput(
            target,
            "bench0",
            size["throughput_watchers"],
            size["throughput_rates"],
            size["throughput_seconds"],
        )

    throughput: dict[str, Any] = {"deliveries_per_s": {}}
    for processes in (1, 2):
        target = defaults(stack, processes)
        throughput["deliveries_per_s"][str(processes)] = await best_rate(target)
        stop_target(stack, target)
    throughput["reference_deliveries_per_s"] = await best_rate(reference)
    return throughput


async def rest_requests(stack: Stack, size: dict[str, Any]) -> dict[str, Any]:
    """REST: requests per second and p99 with 20 clients at once, one process."""
    target = defaults(stack, 1)
    figures = await measure_rest(stack, target.ports[0], size["rest_seconds"])
    stop_target(stack, target)
    return figures


async def main(smoke: bool, stack: Stack) -> dict[str, Any]:
    """Every scenario, in order; stops the stack's processes at the end."""
    size = sizes(smoke)
    results: dict[str, Any] = {"smoke": smoke, "machine": machine(), "versions": versions()}
    try:
        results.update(await idle_memory(stack, size))
        results.update(await server_and_layer(stack, size))
        results["ttft_overhead_ms"] = await first_token_overhead(stack, size)
        # The fan-out and the many channels share two processes; the reference stays
        # up for the throughput runs.
        target, reference = defaults(stack, 2), start_reference(stack)
        results.update(await fanout_beside_reference(target, reference, size))
        results["concurrent_channels"] = await channels_at_once(target, size)
        stop_target(stack, target)
        results["throughput"] = await sustained_throughput(stack, reference, size)
        stop_target(stack, reference)
        results["rest"] = await rest_requests(stack, size)
    finally:
        stack.stop_all()
    return results


def results_table(results: dict[str, Any]) -> str:
    """Colloquy beside the reference, one measure a row (Markdown)."""
    ref_cpu = results["reference_cpu_s_per_1000_deliveries"] or float("nan")
    ref_memory = max(results["reference_memory_per_connection_kib"], 0.1)
    lines = [
        "| measure | Colloquy | reference | ratio |",
        "|---|---|---|---|",
        f"| CPU s per 1,000 deliveries | {results['cpu_s_per_1000_deliveries']} | {ref_cpu} | "
        f"{results['cpu_s_per_1000_deliveries'] / ref_cpu:.2f}× |",
        f"| memory per idle WebSocket (KiB) | {results['memory_per_connection_kib']} | "
        f"{results['reference_memory_per_connection_kib']} | "
        f"{results['memory_per_connection_kib'] / ref_memory:.2f}× |",
        f"| time to first token overhead p50 / p99 (ms) | {results['ttft_overhead_ms']['p50']} / "
        f"{results['ttft_overhead_ms']['p99']} | — | — |",
    ]
    for row in results["fanout"]:
        lines.append(
            f"| fan-out {row['watchers']} watchers p50 / p99 / max (ms), lost | {row['p50_ms']} / "
            f"{row['p99_ms']} / {row['max_ms']}, {row['lost']} | p99 {row['reference_p99_ms']} | "
            f"{row['p99_ms'] / max(row['reference_p99_ms'], 0.01):.2f}× p99 |"
        )
    cc = results["concurrent_channels"]
    lines.append(
        f"| {cc['channels']} channels × {cc['watchers_each']} watchers p99 (ms), lost | {cc['p99_ms']}, "
        f"{cc['lost']} | — | — |"
    )
    tp = results["throughput"]
    for processes, value in tp["deliveries_per_s"].items():
        lines.append(
            f"| token deliveries/s at p99 < 250 ms, {processes} process(es) | {value:g} | "
            f"{tp['reference_deliveries_per_s']:g} | "
            f"{value / max(tp['reference_deliveries_per_s'], 1):.2f}× |"
        )
    for label, figures in results.get("rest", {}).items():
        row = f"{figures['rps']}, {figures['p99_ms']}"
        lines.append(f"| REST {label}: requests/s, p99 (ms), 20 clients | {row} | — | — |")
    return "\n".join(lines)


def matrix_table(results: dict[str, Any]) -> str:
    """The server × layer matrix (Markdown)."""
    return "\n".join(
        ["| server | layer | CPU µs/delivery | × reference | p99 ms | lost |", "|---|---|---|---|---|---|"]
        + [
            f"| {m['server']} | {m['layer']} | {m['cpu_us_per_delivery']} | {m['ratio_to_reference']} | "
            f"{m['p99_ms']} | {m['lost']} |"
            for m in results["matrix"]
        ]
    )


def write_reports(results: dict[str, Any], out: Path) -> str:
    """Writes results.json and RESULTS.md to ``out``; returns the tables to print."""
    table, matrix = results_table(results), matrix_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    m, v = results["machine"], results["versions"]
    (out / "RESULTS.md").write_text(
        f"# Benchmark results{' (smoke run)' if results['smoke'] else ''}\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['platform']}.\n"
        f"Versions: {', '.join(f'{k} {val}' for k, val in v.items())}.\n"
        f"Measured: the defaults, **{results['choice']['server']}** with the "
        f"**{results['choice']['layer']}** channel layer (best in this run's matrix: "
        f"{results['best_this_run']['server']} with {results['best_this_run']['layer']}).\n\n"
        f"## Server and layer\n\n{matrix}\n\n## Results\n\n{table}\n"
    )
    return table + "\n\n" + matrix


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    parser.add_argument(
        "--out", default=str(ROOT / "bench"), help="where to write results.json and RESULTS.md"
    )
    options = parser.parse_args()
    stub, stub_port = start_stub()
    try:
        var = Path(tempfile.mkdtemp(prefix="colloquy-bench-"))
        stack = prepare_stack(var, stub_port, channels=max(sizes(options.smoke)["concurrent"][0], 2))
        outcome = asyncio.run(main(options.smoke, stack))
    finally:
        stop_stub(stub)
    out_dir = Path(options.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(write_reports(outcome, out_dir))


if __name__ == "__main__":
    cli()
