"""Shared fixtures: three users in the healthchecks style (owner, member, outsider), an
admin, channels built through the services, and clean-up of Redis and generations."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from chat.generation import engine
from chat.models import Channel
from chat.realtime import store


def pytest_configure(config: Any) -> None:
    # Hashing a password the production way takes a quarter of a second; the tests make
    # hundreds of users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Generator[None, Any, None]:
    """A failing test's report ends with the logs of the server processes and workers
    running then (tests/processes.py): a socket dropped by a server shows its cause."""
    from tests.processes import forget_ended, log_tails

    if call.when == "setup":
        forget_ended()
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, tail in log_tails():
            report.sections.append((title, tail))


@pytest.fixture(scope="session", autouse=True)
def _clean_redis_after_run() -> Iterator[None]:
    yield
    client = store.sync_redis()
    for found in client.scan_iter(match=f"{settings.REDIS_PREFIX}*", count=1000):
        client.delete(found)


def wait_until_no_generation(timeout: float = 30) -> None:
    """Wait until no process (server processes included) writes or owes a reply: a
    reply still running when a transactional test ends would race its database flush."""
    client = store.sync_redis()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [
            key
            # pending before lock: a driver takes the lock before it consumes the pending
            # request, so a reply moving from one to the other is seen in one or the other.
            for pattern in (f"{settings.REDIS_PREFIX}:*:pending", f"{settings.REDIS_PREFIX}:*:lock")
            for key in client.scan_iter(match=pattern, count=1000)
        ]
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError(f"replies still running after {timeout} s: {busy}")


@pytest.fixture(autouse=True)
def _fresh_limits() -> Iterator[None]:
    """Usage counters are keyed by user id, and ids repeat from test to test: each test
    starts with nobody having used anything."""
    yield
    client = store.sync_redis()
    for found in client.scan_iter(match=f"{settings.REDIS_PREFIX}:limits:*", count=1000):
        client.delete(found)


@pytest.fixture(autouse=True)
def _no_generation_left_running() -> Iterator[None]:
    """A reply still being written when a test ends would write into the next test's
    database; stop them and wait."""
    yield
    deadline = time.monotonic() + 10
    while engine._running and time.monotonic() < deadline:
        for channel_id in list(engine._running):
            engine.interrupt(channel_id)
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _other_connections_idle_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests: before the database is emptied for the next test (a TRUNCATE
    of every table on PostgreSQL), wait (at most 10 s each) until the test's Celery
    worker, if it has one, ended every task it received, and, on PostgreSQL, until no
    other connection — a live server, a worker — is inside a statement or a transaction.
    The flush deadlocked in CI with a page's last request still being served, and with a
    task still indexing, as their tests ended."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and marker.kwargs.get("transaction")) or bool(
        {"transactional_db", "live_server"} & set(request.fixturenames)
    )
    if not transactional:
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up first: this ends before its flush
    yield
    if "worker" in request.fixturenames:
        from tests.processes import worker_idle

        worker = request.getfixturevalue("worker")
        deadline = time.monotonic() + 10
        while not worker_idle(worker):
            if time.monotonic() > deadline:
                logging.getLogger(__name__).warning("the worker is still busy as the database is emptied")
                break
            time.sleep(0.02)
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    busy = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
        "AND state IN ('active', 'idle in transaction')"
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(busy)
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.02)
    logging.getLogger(__name__).warning("other connections still busy as the database is emptied")


def client_for(user: Any = None) -> Any:
    """A REST client, with the user's API token when there is a user."""
    from rest_framework.test import APIClient

    from chat.models import ApiToken

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")
    return client


def make_user(username: str, **extra: Any) -> Any:
    return get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)


@pytest.fixture
def alice(db: Any) -> Any:
    """Owner of the channels below."""
    return make_user("alice")


@pytest.fixture
def bob(db: Any) -> Any:
    """A member."""
    return make_user("bob")


@pytest.fixture
def carol(db: Any) -> Any:
    """An outsider."""
    return make_user("carol")


@pytest.fixture
def mona(db: Any) -> Any:
    """A moderator: in the moderators group, not staff."""
    from django.contrib.auth.models import Group

    from chat.permissions import ensure_moderators_group

    ensure_moderators_group()  # a transactional test flushes what migrations made
    user = make_user("mona")
    user.groups.add(Group.objects.get(name="moderators"))
    return user


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged_errors() -> Iterator[list[logging.LogRecord]]:
    """What was logged as an error during the test: a refused input or an answered frame
    is the client's business, an unexpected exception is a bug (it fails the test that
    asks)."""
    handler = ErrorRecords()
    logging.getLogger().addHandler(handler)
    try:
        yield handler.records
    finally:
        logging.getLogger().removeHandler(handler)


@pytest.fixture
def admin_user(db: Any) -> Any:
    return get_user_model().objects.create_superuser(username="root", password="pw-root")


@pytest.fixture
def channel(alice: Any, bob: Any) -> Channel:
    """A public channel owned by alice, with bob as a member."""
    from chat.services import add_member, create_channel

    created = create_channel(name="lobby", owner=alice, title="Lobby")
    add_member(actor=alice, channel=created, user=bob)
    return created


@pytest.fixture
def private_channel(alice: Any, bob: Any) -> Channel:
    from chat.services import add_member, create_channel

    created = create_channel(name="backroom", owner=alice, visibility="private")
    add_member(actor=alice, channel=created, user=bob)
    return created


# --- generation helpers ---------------------------------------------------------------------

from tests.fake_models import FakeModelServer  # noqa: E402


@pytest.fixture
def openai_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer("openai").start()
    yield server
    server.stop()


@pytest.fixture
def second_openai_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer("openai").start()
    yield server
    server.stop()


@pytest.fixture
def anthropic_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer("anthropic").start()
    yield server
    server.stop()


def add_provider(name: str, base_url: str, *, kind: str = "openai_compat", priority: int = 10, **extra: Any):
    from chat.models import Provider

    return Provider.objects.create(
        name=name, kind=kind, base_url=base_url, default_model="test-model", priority=priority, **extra
    )


def use_provider(channel: Channel, name: str, **params: Any) -> None:
    channel.params = {**channel.params, "provider": name, **params}
    channel.save()


def use_slow_model(
    channel: Channel, server: FakeModelServer, *, delay: float, tokens: list[str] | None = None, **params: Any
) -> None:
    """Point the channel at a fake model that streams ``tokens`` ``delay`` seconds apart."""
    if tokens is not None:
        server.behaviour.tokens = tokens
    server.behaviour.delay = delay
    add_provider("slow", server.base_url)
    use_provider(channel, "slow", **params)


def channel_events(channel: Channel) -> list[dict[str, Any]]:
    """Every event the channel broadcast, read back from its replay log in Redis."""
    import json

    entries = store.sync_redis().xrange(store.key(channel.pk, "log"))
    return [json.loads(fields["f"]) for _id, fields in entries]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {getattr(predicate, '__name__', 'condition')}")


def wait_for_done(channel: Channel, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    def enough_done() -> list[dict[str, Any]] | None:
        events = channel_events(channel)
        return events if sum(e["type"] == "done" for e in events) >= count else None

    return wait_for(enough_done, timeout)


# A real browser and a real server process, shared by a module's tests (the browser and
# live-server tests ask for them by name).
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.browser import chromium  # Playwright is imported only where a browser is asked for

    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def host(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    from tests.processes import live_servers

    with live_servers("uvicorn", 1) as hosts:
        yield hosts[0]


# A real Celery worker (prefork: a main process and one child) over the test database
# and the test Redis, shared by a module's tests; those tests are transactional_db, so
# the worker sees their rows. A module changes the worker's settings by overriding
# ``worker_env`` (e.g. {"EXTRACT_TIME_LIMIT": "2"}). One module's worker stops before
# the next module's starts: they consume the same queue.
@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def worker(django_db_setup: Any, django_db_blocker: Any, worker_env: dict[str, str]) -> Iterator[Any]:
    from tests.processes import celery_worker, live_env

    with django_db_blocker.unblock(), celery_worker(live_env(**worker_env)) as process:
        yield process


@pytest.fixture(scope="module")
def _remove_new_upload_files() -> Iterator[None]:
    """Files a module's uploads left in the local uploads directory are removed when it
    ends (transactional tests flush the rows, not the files)."""
    import shutil
    from pathlib import Path

    root = Path(settings.UPLOADS_DIR) / "uploads"
    before = set(root.glob("*/*")) if root.exists() else set()
    yield
    for path in set(root.glob("*/*")) - before if root.exists() else ():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
