"""Helpers for tests that run real server processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROJECT_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "HTTPS",
    "CSRF_TRUSTED_ORIGINS",
    "COLLOQUY_VAR_DIR",
    "LLM_BASE_URL",
    "UPLOADS_STORAGE",
    "UPLOADS_DIR",
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "S3_REGION",
    # An outer S3 login must never reach a test server (tests/test_upload_storage_s3.py).
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "WORKERS",
    "EXTRACT_MAX_PAGES",
    "EXTRACT_MAX_CHARS",
    "EXTRACT_MAX_AUDIO_SECONDS",
    "EXTRACT_TIME_LIMIT",
    "IMAGE_MAX_SIDE",
    "IMAGE_MAX_BYTES",
    "IMAGE_MAX_PIXELS",
)


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without the project's variables, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARS}
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30, host: str = "127.0.0.1") -> None:
    """Wait until something accepts connections on ``port``: for servers that need not
    answer HTTP (the benchmark's stub model and reference broadcaster)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port}")


def wait_for_http(url: str, timeout: float = 30, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def manage(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


# The server processes and workers of the current test: a failing test's report shows the
# end of their logs (tests/conftest.py), since what broke is often in a server, not in the
# test. Those that ended are forgotten when the next test starts (forget_ended).
SEEN: list[subprocess.Popen[str]] = []


def forget_ended() -> None:
    SEEN[:] = [process for process in SEEN if process.poll() is None]


def log_tails(lines: int = 60) -> list[tuple[str, str]]:
    """(title, the last ``lines`` lines of its log) for each process of the test."""
    tails = []
    for process in SEEN:
        with contextlib.suppress(OSError):
            tail = "".join(output(process).splitlines(keepends=True)[-lines:])
            command = " ".join(str(arg) for arg in list(process.args)[:3])  # type: ignore[arg-type]  # a list here
            tails.append((f"log of {command} (pid {process.pid})", tail))
    return tails


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], url: str) -> Iterator[subprocess.Popen[str]]:
    """Start a server process, wait until it answers, stop it with SIGINT afterwards.
    Its output goes to a file (a pipe nobody reads would fill up and stall it); read it
    with ``output(process)``."""
    log = tempfile.NamedTemporaryFile("w+", prefix="colloquy-server-", suffix=".log", delete=False)  # noqa: SIM115 (outlives this frame)
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    process.log_path = log.name  # type: ignore[attr-defined]
    SEEN.append(process)
    try:
        wait_for_http(url, process=process)
        yield process
    finally:
        stop(process)
        log.close()


def output(process: subprocess.Popen[str]) -> str:
    with open(process.log_path) as log:  # type: ignore[attr-defined]
        return log.read()


def stop(process: subprocess.Popen[Any], signum: int = signal.SIGINT) -> None:
    """Stop a process started with ``start_new_session``, and its children: ``signum``
    to its group, SIGKILL if it is still running 30 s later (a server stopping its
    Celery worker may take its own 15 s on a loaded machine)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def database_url() -> str:
    """The URL of the test database, for server processes started by tests."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or "postgres"
    # A unix socket's folder comes in OPTIONS ("postgres://u@/name?host=/dir"): handed on
    # as such, or the servers would reach for 127.0.0.1:5432, another server.
    socket_dir = db["HOST"] or db.get("OPTIONS", {}).get("host", "")
    if socket_dir.startswith("/"):
        port = f"&port={db['PORT']}" if db["PORT"] else ""
        return f"postgres://{user}@/{db['NAME']}?host={socket_dir}{port}"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def live_env(**extra_env: str) -> dict[str, str]:
    """The environment of a server process over the test database and the test Redis."""
    import secrets

    from django.conf import settings

    defaults = {
        "DEMO_TOKEN_DELAY": "0.01",
        "MESSAGES_PER_MINUTE": "0",
        "RECOVER_ON_START": "0",
        "RECOVERY_INTERVAL_SECONDS": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
    }
    base = {
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        # Files go where this test process reads them (unless a test says otherwise).
        "UPLOADS_STORAGE": settings.UPLOADS_STORAGE,
        "UPLOADS_DIR": str(settings.UPLOADS_DIR),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    return clean_env(**{**base, **defaults, **extra_env})


def live_server(
    server: str, port: int, env: dict[str, str]
) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    """One server process on ``port``; it answers when the context is entered."""
    from chat.management.commands.serve import server_command

    command = server_command(server, "127.0.0.1", port)
    return running(command, env, f"http://127.0.0.1:{port}/static/css/colloquy.css")


@contextlib.contextmanager
def live_servers(server: str, count: int, **extra_env: str) -> Iterator[list[str]]:
    """``count`` server processes over the test database and the test Redis; yields
    their "host:port"s."""
    env = live_env(**extra_env)
    ports = [free_port() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(live_server(server, port, env))
        yield [f"127.0.0.1:{port}" for port in ports]


_TASK_ID = re.compile(r"\[([0-9a-f-]{36})\]")
_TASK_ENDS = ("] succeeded in", "] raised", "] retry:", "] revoked", "] rejected", "] ignored")


def worker_idle(process: subprocess.Popen[str]) -> bool:
    """Has every task the worker received ended, by its log? A task still running when a
    test ends writes on into the next test's database flush (a deadlock on PostgreSQL).
    A task is running from its last "received" (a lost one comes again, same id) to the
    line that ends it."""
    running: dict[str, bool] = {}
    for line in output(process).splitlines():
        found = _TASK_ID.search(line)
        if found is None:
            continue
        if line.endswith("] received"):
            running[found[1]] = True
        elif any(mark in line for mark in _TASK_ENDS):
            running[found[1]] = False
    return not any(running.values())


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str], concurrency: int = 1, timeout: float = 60
) -> Iterator[subprocess.Popen[str]]:
    """A real Celery worker (prefork: a main process and ``concurrency`` children) over
    the environment ``env`` (``live_env()``: the test database and Redis). Ready when its
    log says so: it has connected to the broker and its children are forked. Stopped
    with its children (SIGTERM: a warm shutdown, SIGKILL after 15 s)."""
    from chat.management.commands.serve import worker_command

    log = tempfile.NamedTemporaryFile("w+", prefix="colloquy-worker-", suffix=".log", delete=False)  # noqa: SIM115 (outlives this frame)
    process = subprocess.Popen(
        worker_command(concurrency),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    process.log_path = log.name  # type: ignore[attr-defined]
    SEEN.append(process)
    try:
        deadline = time.monotonic() + timeout
        while " ready." not in output(process):
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{output(process)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout} s:\n{output(process)}")
            time.sleep(0.05)
        yield process
    finally:
        stop(process, signal.SIGTERM)
        log.close()
