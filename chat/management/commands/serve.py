"""`make run`: migrate, set the instance up, and serve it (uvicorn, or daphne) in this process,
with a Celery worker beside it (a child process) for uploads' processing.

Running the server in-process keeps the embedded Redis (started by settings when REDIS_URL
is unset) alive exactly as long as the site, and Ctrl-C stops all of them: the worker
first, while the Redis it uses still answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

log = logging.getLogger(__name__)


def purge_periodically(interval: float) -> None:
    """`purge_sessions` now and every ``interval`` seconds, for as long as the server
    runs (a daemon thread: it ends with the process)."""
    while True:
        try:
            call_command("purge_sessions")
        except Exception:  # an outage or a bug: logged, and tried again next time
            log.exception("purging old sessions failed")
        finally:
            close_old_connections()
        time.sleep(interval)


def daphne_arguments(host: str, port: str | int) -> list[str]:
    """daphne's command line for this instance: frames over MAX_FRAME_BYTES are refused by
    the server with close code 1009; dead peers are found by WebSocket pings."""
    return [
        "-b",
        host,
        "-p",
        str(port),
        "--websocket-max-message-size",
        str(settings.MAX_FRAME_BYTES),
        "--ping-interval",
        "20",
        "--ping-timeout",
        "30",
        "chatsite.asgi:application",
    ]


def uvicorn_options() -> dict[str, Any]:
    """uvicorn's settings for this instance, with the same limits as daphne's; the one
    description of them, for ``uvicorn.run`` here and the command line below."""
    return {
        "lifespan": "off",
        "ws": "websockets",
        "ws_max_size": settings.MAX_FRAME_BYTES,
        "ws_ping_interval": 20,
        "ws_ping_timeout": 30,
        "timeout_graceful_shutdown": 5,
    }


def uvicorn_arguments(host: str, port: str | int) -> list[str]:
    """uvicorn's command line (tests and benchmarks), without the access log."""
    flags = [
        item
        for name, value in uvicorn_options().items()
        for item in (f"--{name.replace('_', '-')}", str(value))
    ]
    return ["chatsite.asgi:application", "--host", host, "--port", str(port), *flags, "--no-access-log"]


def server_command(server: str, host: str, port: str | int) -> list[str]:
    """The command that runs one server process (tests and benchmarks use it too)."""
    if server == "daphne":
        return [sys.executable, "-m", "daphne", *daphne_arguments(host, port)]
    return [sys.executable, "-m", "uvicorn", *uvicorn_arguments(host, port)]


def worker_command(concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    """The command that runs one Celery worker of this instance (`make run`, tests and
    benchmarks; production runs the same, see docs/deploy.md): prefork children, only
    this instance's queue, no chatter with other workers."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "chatsite",
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "-Q",
        settings.CELERY_TASK_DEFAULT_QUEUE,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        loglevel,
    ]


def start_worker(concurrency: int) -> subprocess.Popen[bytes] | None:
    """A worker beside the server, with this process's environment (the embedded
    Redis's URL included: settings put it there). In this process group, so Ctrl-C
    reaches it too; stop_worker() makes sure."""
    if concurrency <= 0:
        return None
    return subprocess.Popen(worker_command(concurrency), env=os.environ.copy())


def stop_worker(worker: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """A warm shutdown (the running tasks finish, or go back to the queue when killed)."""
    if worker is None or worker.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(5)


class Command(BaseCommand):
    help = "Migrate, ensure the admin account and demo channel, and serve the site (uvicorn or daphne)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")
        parser.add_argument(
            "--server",
            choices=["uvicorn", "daphne"],
            default=os.environ.get("ASGI_SERVER", "uvicorn"),
            help="uvicorn measured faster on the token path (bench/README.md); daphne is supported too",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("WORKERS", "1")),
            help="processes of the Celery worker started beside the server (uploads); 0: none",
        )

    def handle(self, *args: Any, host: str, port: str, server: str, workers: int, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_instance")
        self.stdout.write(self.style.SUCCESS(f"Colloquy is at http://{host}:{port}/  (Ctrl-C stops it)"))
        if settings.RETENTION_DAYS > 0:
            threading.Thread(
                target=purge_periodically,
                args=(settings.RETENTION_INTERVAL_SECONDS,),
                name="colloquy-retention",
                daemon=True,
            ).start()
        worker = start_worker(workers)
        try:
            # Recovery of unfinished turns runs when chatsite.asgi is imported.
            if server == "daphne":
                from daphne.cli import CommandLineInterface

                CommandLineInterface().run(daphne_arguments(host, port))
            else:
                import uvicorn

                uvicorn.run("chatsite.asgi:application", host=host, port=int(port), **uvicorn_options())
        finally:
            stop_worker(worker)
