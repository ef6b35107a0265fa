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
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wsclient import WSClient, connect  # noqa: E402

# What `make run` serves (chatsite/settings.py CHANNEL_LAYER, the serve command's
# ASGI_SERVER), chosen over repeated runs of the matrix below.
DEFAULT_SERVER = "uvicorn"
DEFAULT_LAYER = "pubsub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port}")


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
        wait_port(port)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)


def server_command(server: str, port: int) -> list[str]:
    from chat.management.commands.serve import server_command as command

    return command(server, "127.0.0.1", port)


def cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(process.pid)
            for p in [proc, *proc.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
    return total


def rss_bytes(processes: list[subprocess.Popen[bytes]]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(process.pid)
            total += sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    return total


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
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(w.done for w in watchers)), timeout)
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


async def measure_ttft(target: Target, stub_port: int, channel: str, runs: int) -> dict[str, float]:
    direct, stack = [], []
    for run in range(runs + 1):  # the first run warms up and is not counted
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
        direct.append((time.monotonic_ns() - started) / 1e6)
        writer.close()

        first = asyncio.get_running_loop().create_future()
        ready = asyncio.get_running_loop().create_future()
        done = asyncio.get_running_loop().create_future()

        def on_message(text: str, now: int, first=first, ready=ready, done=done) -> None:
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
        stack.append((await asyncio.wait_for(first, 10) - started) / 1e6)
        await asyncio.wait_for(done, 10)
        client.close()
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
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(w.done for w in everyone)), count / rate + 60)
    latencies = [v for w in everyone for v in w.latencies_ms]
    lost = count * len(everyone) - sum(len(w.indices) for w in everyone)
    for _, _, clients in groups:
        for client in clients:
            client.close()
    for chat in chats:
        if chat:
            chat.close()
    return {
        "p99_ms": round(percentile(latencies, 99), 2),
        "p50_ms": round(percentile(latencies, 50), 2),
        "lost": lost,
    }


async def measure_rest(stack: Stack, port: int, seconds: float) -> dict[str, Any]:
    import httpx

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
            latencies: list[float] = []
            deadline = time.monotonic() + seconds

            async def worker(
                path: str = path, latencies: list[float] = latencies, deadline: float = deadline
            ) -> None:
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    response = await client.get(path)
                    response.raise_for_status()
                    latencies.append((time.monotonic() - started) * 1000)

            began = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(20)))
            elapsed = time.monotonic() - began
            found[label] = {
                "rps": round(len(latencies) / elapsed, 1),
                "p99_ms": round(percentile(latencies, 99), 2),
            }
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
    started = [stack.start(server_command(server, port), port, {"CHANNEL_LAYER": layer}) for port in ports]
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
        "concurrent": (5, 3) if smoke else (50, 10),
        "idle": 50 if smoke else 1000,
        "matrix_watchers": 20 if smoke else 500,
    }


async def main(smoke: bool, stack: Stack, stub: subprocess.Popen[bytes]) -> dict[str, Any]:
    size = sizes(smoke)
    stub_port = stack.stub_port
    results: dict[str, Any] = {"smoke": smoke, "machine": machine(), "versions": versions()}
    try:
        # 0. Memory per idle connection, first, on fresh processes: later runs leave
        # freed memory behind that new connections reuse, which hides their cost.
        target, reference = start_colloquy(stack, "uvicorn", "pubsub", 2), start_reference(stack)
        results["memory_per_connection_kib"] = await measure_memory(target, "bench0", size["idle"])
        results["reference_memory_per_connection_kib"] = await measure_memory(
            reference, "bench0", size["idle"]
        )
        stop_target(stack, target)
        stop_target(stack, reference)

        # 1. Choose: every server × layer combination on the same fan-out.
        print("Choosing the ASGI server and channel layer…", flush=True)
        matrix = []
        reference = start_reference(stack)
        ref = await run_fanout(reference, "bench0", size["matrix_watchers"], size["rate"], size["tokens"])
        stop_target(stack, reference)
        ref_cpu = ref["cpu_s"] / max(ref["deliveries"], 1) * 1e6
        for server in ("daphne", "uvicorn"):
            for layer in ("pubsub", "core"):
                target = start_colloquy(stack, server, layer, 1)
                got = await run_fanout(
                    target, "bench0", size["matrix_watchers"], size["rate"], size["tokens"]
                )
                stop_target(stack, target)
                per = got["cpu_s"] / max(got["deliveries"], 1) * 1e6
                matrix.append(
                    {
                        "server": server,
                        "layer": layer,
                        "p99_ms": got["p99_ms"],
                        "lost": got["lost"],
                        "cpu_us_per_delivery": round(per, 1),
                        "ratio_to_reference": round(per / ref_cpu, 2),
                    }
                )
                print(
                    f"  {server}+{layer}: {per:.1f} µs CPU/delivery ({per / ref_cpu:.2f}× reference), "
                    f"p99 {got['p99_ms']} ms, lost {got['lost']}",
                    flush=True,
                )
        # This run's best: lowest p99 among the lossless, CPU breaking ties. One run's
        # p99 is noisy on a shared 2-core machine, so the shipped defaults were chosen
        # over repeated runs (README, "Performance"); the scenarios below measure those
        # defaults, so that the figures describe what `make run` serves.
        usable = [m for m in matrix if m["lost"] == 0] or matrix
        best = min(usable, key=lambda m: (m["p99_ms"], m["cpu_us_per_delivery"]))
        results["matrix"] = matrix
        results["reference_cpu_us_per_delivery"] = round(ref_cpu, 1)
        results["best_this_run"] = {"server": best["server"], "layer": best["layer"]}
        results["choice"] = {"server": DEFAULT_SERVER, "layer": DEFAULT_LAYER}
        server, layer = DEFAULT_SERVER, DEFAULT_LAYER
        print(
            f"Best in this run: {best['server']} with the {best['layer']} layer; "
            f"measuring the defaults: {server} with the {layer} layer",
            flush=True,
        )

        # 2. Time to first token overhead.
        target = start_colloquy(stack, server, layer, 1)
        results["ttft_overhead_ms"] = await measure_ttft(target, stub_port, "ttft", size["ttft_runs"])
        stop_target(stack, target)

        # 3. Fan-out over two processes, beside the reference.
        fanout = []
        target = start_colloquy(stack, server, layer, 2)
        reference = start_reference(stack)
        cpu, ref_cpu_total, deliveries, ref_deliveries = 0.0, 0.0, 0, 0
        for n in size["fanout"]:
            got = await run_fanout(target, "bench0", n, size["rate"], size["tokens"])
            ref = await run_fanout(reference, "bench0", n, size["rate"], size["tokens"])
            cpu += got["cpu_s"]
            deliveries += got["deliveries"]
            ref_cpu_total += ref["cpu_s"]
            ref_deliveries += ref["deliveries"]
            fanout.append(
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
        results["fanout"] = fanout
        results["cpu_s_per_1000_deliveries"] = round(cpu / max(deliveries, 1) * 1000, 4)
        results["reference_cpu_s_per_1000_deliveries"] = round(
            ref_cpu_total / max(ref_deliveries, 1) * 1000, 4
        )

        # 5. Fifty channels at once.
        channels = [f"bench{i}" for i in range(size["concurrent"][0])]
        results["concurrent_channels"] = {
            "channels": size["concurrent"][0],
            "watchers_each": size["concurrent"][1],
            **await measure_concurrent(
                target, channels, size["concurrent"][1], 20.0, 40 if not smoke else 10
            ),
        }
        stop_target(stack, target)

        # 6. Sustained throughput with 1 and 2 processes, and the reference.
        throughput: dict[str, Any] = {"deliveries_per_s": {}}
        for processes in (1, 2):
            target = start_colloquy(stack, server, layer, processes)
            throughput["deliveries_per_s"][str(processes)] = await measure_throughput(
                target,
                "bench0",
                size["throughput_watchers"],
                size["throughput_rates"],
                2.0 if not smoke else 0.5,
            )
            stop_target(stack, target)
        throughput["reference_deliveries_per_s"] = await measure_throughput(
            reference,
            "bench0",
            size["throughput_watchers"],
            size["throughput_rates"],
            2.0 if not smoke else 0.5,
        )
        results["throughput"] = throughput
        stop_target(stack, reference)

        # 7. REST: requests per second and p99 with 20 clients at once, one process.
        target = start_colloquy(stack, server, layer, 1)
        results["rest"] = await measure_rest(stack, target.ports[0], 1.0 if smoke else 5.0)
        stop_target(stack, target)
    finally:
        stack.stop_all()
        stub.terminate()
        stub.wait(5)
    return results


def write_reports(results: dict[str, Any], out: Path) -> str:
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
    table = "\n".join(lines)
    matrix = "\n".join(
        ["| server | layer | CPU µs/delivery | × reference | p99 ms | lost |", "|---|---|---|---|---|---|"]
        + [
            f"| {m['server']} | {m['layer']} | {m['cpu_us_per_delivery']} | {m['ratio_to_reference']} | "
            f"{m['p99_ms']} | {m['lost']} |"
            for m in results["matrix"]
        ]
    )
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    parser.add_argument(
        "--out", default=str(ROOT / "bench"), help="where to write results.json and RESULTS.md"
    )
    options = parser.parse_args()
    stub_port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "bench.stub_model", str(stub_port)], cwd=ROOT, start_new_session=True
    )
    wait_port(stub_port)
    var = Path(tempfile.mkdtemp(prefix="colloquy-bench-"))
    stack = prepare_stack(var, stub_port, channels=max(sizes(options.smoke)["concurrent"][0], 2))
    outcome = asyncio.run(main(options.smoke, stack, stub))
    out_dir = Path(options.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(write_reports(outcome, out_dir))
