"""Credits through real server processes (issue 18, "Done when"): 50 parallel sends
against a balance that covers exactly 10 holds let exactly 10 reach the model, the
other 40 are answered 402; and the ledger balances to the micro-credit after a run with
a finished reply, an interrupt, a provider error and a process killed mid-reply (another
process's recovery settles its hold). Run on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from chat.models import ApiToken, CreditHold, Turn
from chat.services import create_channel
from tests.conftest import add_provider, use_provider, wait_for
from tests.credits_helpers import assert_ledger_balances, set_available, set_price
from tests.processes import free_port, live_env, live_server, live_servers

pytestmark = pytest.mark.django_db(transaction=True)

HOLD = 100_000  # max_tokens 100 at 1 credit per 1,000 output tokens; input is free
CREDITS = {"CREDITS_ENABLED": "1", "CREDITS_INITIAL": "0", "SESSION_TITLES": "0"}


def model_requests(server: Any) -> int:
    return sum(path.endswith("/chat/completions") for path in server.paths)


def send_all(hosts: list[str], token: str, names: list[str]) -> list[int]:
    async def run() -> list[int]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=60, headers=headers) as client:

            async def send(i: int, name: str) -> int:
                url = f"http://{hosts[i % len(hosts)]}/api/channels/{name}/messages"
                response = await client.post(url, json={"text": f"hello {i}"})
                if response.status_code == 402:
                    assert response.json()["code"] == "insufficient_credits"
                return response.status_code

            return list(await asyncio.gather(*(send(i, name) for i, name in enumerate(names))))

    return asyncio.run(run())


def test_50_parallel_sends_against_10_holds_let_exactly_10_reach_the_model(
    alice, openai_server, django_db_setup
):
    add_provider("fake", openai_server.base_url)
    set_price("fake", input_per_1k="0", output_per_1k="1")
    names = [f"room{i}" for i in range(50)]
    for name in names:  # one channel each: no request is answered together with another
        use_provider(create_channel(name=name, owner=alice), "fake", max_tokens=100)
    set_available(alice, 10 * HOLD)
    token = ApiToken.issue(alice)
    # Every reply stalls after its first token until it is interrupted: none settles
    # (and gives back the rest of its hold) while the sends are answered.
    openai_server.behaviour.stall_after = 1
    with live_servers("uvicorn", 2, **CREDITS, SYNC_REPLY_TIMEOUT="0.2") as hosts:
        statuses = Counter(send_all(hosts, token, names))
        assert statuses[402] == 40, statuses
        assert statuses[202] == 10, statuses
        assert Turn.objects.filter(role="user").count() == 10
        wait_for(lambda: model_requests(openai_server) == 10, timeout=30)
        sent = list(Turn.objects.filter(role="user").values_list("session__channel__name", flat=True))
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
            for name in sent:
                assert client.post(f"http://{hosts[0]}/api/channels/{name}/interrupt").status_code < 300
        finished = Turn.objects.filter(role="bot", finish_reason__isnull=False)
        wait_for(lambda: finished.count() == 10, timeout=30)
    assert model_requests(openai_server) == 10
    assert CreditHold.objects.count() == 10
    assert_ledger_balances(alice)


def test_the_ledger_balances_after_interrupts_provider_errors_and_a_killed_process(
    alice, openai_server, second_openai_server, django_db_setup
):
    add_provider("fake", openai_server.base_url)
    add_provider("broken", second_openai_server.base_url, priority=20)
    # Fails mid-reply: no failover once the model has begun answering.
    second_openai_server.behaviour.drop_after = 2
    second_openai_server.behaviour.delay = 0.05
    openai_server.behaviour.delay = 0.05
    openai_server.behaviour.tokens = [" word"] * 2000
    for name in ("fine", "stopped", "killed"):
        use_provider(create_channel(name=name, owner=alice), "fake", max_tokens=4000)
    use_provider(create_channel(name="failing", owner=alice), "broken", max_tokens=100)
    set_price("fake", input_per_1k="1", output_per_1k="2")
    set_price("broken", input_per_1k="1", output_per_1k="2")
    set_available(alice, 1_000 * 1_000_000)
    token = ApiToken.issue(alice)
    headers = {"Authorization": f"Bearer {token}"}
    env = live_env(**CREDITS, RECOVERY_INTERVAL_SECONDS="1", SYNC_REPLY_TIMEOUT="0.2")
    survivor_port, doomed_port = free_port(), free_port()
    with live_server("uvicorn", survivor_port, env), live_server("uvicorn", doomed_port, env) as doomed:
        survivor, writer = f"http://127.0.0.1:{survivor_port}", f"http://127.0.0.1:{doomed_port}"
        with httpx.Client(timeout=30, headers=headers) as client:

            def post(host: str, path: str, **body: Any) -> httpx.Response:
                return client.post(f"{host}/api/channels/{path}", json=body)

            def replying(name: str) -> bool:
                return Turn.objects.filter(session__channel__name=name, role="bot").exclude(text="").exists()

            # An interrupt mid-reply: pays for what was streamed.
            assert post(survivor, "stopped/messages", text="talk").status_code == 202
            wait_for(lambda: replying("stopped"), timeout=20)
            assert post(survivor, "stopped/interrupt").status_code < 300
            # The model fails mid-reply: what it streamed is paid, estimated.
            assert post(survivor, "failing/messages", text="hello").status_code in (200, 202)
            # A process killed mid-reply: the survivor's recovery settles its hold.
            assert post(writer, "killed/messages", text="talk").status_code == 202
            wait_for(lambda: replying("killed"), timeout=20)
            os.killpg(doomed.pid, signal.SIGKILL)
            # A reply that finishes (shortened, so it does).
            openai_server.behaviour.tokens = [" ok"] * 5
            openai_server.behaviour.delay = 0
            assert post(survivor, "fine/messages", text="hello").status_code in (200, 202)
            deadline = time.monotonic() + 40
            while Turn.objects.filter(role="bot", finish_reason__isnull=True).exists():
                assert time.monotonic() < deadline, "a reply was never closed"
                time.sleep(0.2)
    reasons = dict(Turn.objects.filter(role="bot").values_list("session__channel__name", "finish_reason"))
    assert reasons == {"stopped": "interrupted", "failing": "error", "killed": "error", "fine": "stop"}
    killed = CreditHold.objects.get(channel__name="killed")
    assert killed.entries.get(kind="debit").estimated
    failing = CreditHold.objects.get(channel__name="failing")
    assert failing.entries.get(kind="debit").estimated
    assert CreditHold.objects.get(channel__name="stopped").entries.filter(kind="debit").exists()
    assert_ledger_balances(alice)
