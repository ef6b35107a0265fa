"""Failed logins are throttled per username and per client address, in Redis, wherever a
password is taken: the login page, the admin's login page and HTTP basic on
POST /api/me/token."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import httpx
import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from chat.realtime import store
from tests.processes import live_servers

HERE, THERE = "203.0.113.7", "198.51.100.9"


@pytest.fixture(autouse=True)
def _fresh_counters():
    """Counters live in Redis, outside the test database: start and end each test clean."""

    def clean() -> None:
        client = store.sync_redis()
        for found in client.scan_iter(match=f"{settings.REDIS_PREFIX}:login:*", count=1000):
            client.delete(found)

    clean()
    yield
    clean()


def log_in(username: str, password: str, address: str = HERE):
    client = Client()
    answer = client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )
    return answer, client


def token_request(username: str, password: str, address: str = HERE):
    basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    return APIClient().post("/api/me/token", HTTP_AUTHORIZATION=basic, REMOTE_ADDR=address)


def test_the_eleventh_wrong_password_is_refused_even_when_it_is_right(alice):
    for _ in range(10):
        answer, _ = log_in("alice", "wrong")
        assert answer.status_code == 200 and b"correct username and password" in answer.content
    answer, client = log_in("alice", "pw-alice")
    assert answer.status_code == 429
    assert b"Too many failed logins" in answer.content
    assert int(answer["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session


def test_another_user_from_another_address_is_unaffected(alice, bob):
    for _ in range(11):
        log_in("alice", "wrong")
    answer, client = log_in("bob", "pw-bob", THERE)
    assert answer.status_code == 302 and client.session["_auth_user_id"] == str(bob.pk)


def test_too_many_failures_from_one_address_throttle_every_username_there(bob, settings):
    settings.LOGIN_FAILURES_PER_ADDRESS = 5
    for name in ("a", "b", "c", "d", "e"):
        assert log_in(name, "wrong")[0].status_code == 200
    assert log_in("bob", "pw-bob")[0].status_code == 429
    assert log_in("bob", "pw-bob", THERE)[0].status_code == 302


def test_a_success_resets_the_username_count_but_not_the_address_count(alice, bob, settings):
    settings.LOGIN_FAILURES_PER_USER = 3
    settings.LOGIN_FAILURES_PER_ADDRESS = 5
    for _ in range(2):
        log_in("alice", "wrong")
    assert log_in("alice", "pw-alice")[0].status_code == 302
    for _ in range(2):
        log_in("alice", "wrong")
    assert log_in("alice", "pw-alice")[0].status_code == 302  # 4 failures, but 2 since the success
    log_in("alice", "wrong")  # the address's fifth
    assert log_in("bob", "pw-bob")[0].status_code == 429


def test_the_api_refuses_the_eleventh_password_with_429_even_when_it_is_right(alice, bob):
    for _ in range(10):
        assert token_request("alice", "wrong").status_code == 401
    answer = token_request("alice", "pw-alice")
    assert answer.status_code == 429
    body = answer.json()
    assert body["code"] == "rate_limited" and body["detail"].startswith("Too many failed logins")
    assert body["retry_after"] > 0 and answer["Retry-After"] == str(body["retry_after"])
    assert token_request("bob", "pw-bob", THERE).status_code == 201


def test_a_username_with_a_nul_byte_is_a_wrong_password_not_a_server_error(alice):
    assert token_request("al\x00ice", "pw-alice").status_code == 401


def test_the_admin_login_is_throttled_too(admin_user, settings):
    settings.LOGIN_FAILURES_PER_USER = 1
    client = Client()
    client.post("/admin/login/", {"username": "root", "password": "wrong"}, REMOTE_ADDR=HERE)
    answer = client.post("/admin/login/", {"username": "root", "password": "pw-root"}, REMOTE_ADDR=HERE)
    assert b"Too many failed logins" in answer.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_passwords_on_two_servers_get_exactly_the_limit_of_tries(django_db_setup):
    async def attempt(client: httpx.AsyncClient, host: str) -> int:
        answer = await client.post(f"http://{host}/api/me/token", auth=("mallory", "guess"))
        return answer.status_code

    async def attack(hosts: list[str]) -> Counter:
        async with httpx.AsyncClient(timeout=60) as client:
            statuses = await asyncio.gather(*(attempt(client, hosts[i % 2]) for i in range(24)))
        return Counter(statuses)

    with live_servers("uvicorn", 2, LOGIN_FAILURES_PER_USER="5") as hosts:
        assert asyncio.run(attack(hosts)) == {401: 5, 429: 19}
