"""`make run`: migrate, set the instance up, and serve it (uvicorn, or daphne) in this process.

Running the server in-process keeps the embedded Redis (started by settings when REDIS_URL
is unset) alive exactly as long as the site, and Ctrl-C stops both.
"""

from __future__ import annotations

import logging
import os
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

    def handle(self, *args: Any, host: str, port: str, server: str, **options: Any) -> None:
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
        # Recovery of unfinished turns runs when chatsite.asgi is imported.
        if server == "daphne":
            from daphne.cli import CommandLineInterface

            CommandLineInterface().run(daphne_arguments(host, port))
        else:
            import uvicorn

            uvicorn.run("chatsite.asgi:application", host=host, port=int(port), **uvicorn_options())
