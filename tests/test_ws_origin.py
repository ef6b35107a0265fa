"""The WebSocket handshake accepts exactly the origins Django's CSRF check accepts for a
request to the same Host: same scheme, host and port, or one of CSRF_TRUSTED_ORIGINS."""

from __future__ import annotations

import pytest
import websockets
from django.test import Client
from websockets.typing import Origin

from tests.processes import free_port, live_servers
from tests.ws_helpers import open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGINS = [
    "http://localhost",
    "http://localhost:9999",
    "https://localhost",
    "http://127.0.0.1",
    "http://evil.example",
    "null",
]


def csrf_accepts(origin: str) -> bool:
    """Whether REST's CSRF check lets a POST from ``origin`` to http://localhost through."""
    client = Client(enforce_csrf_checks=True, HTTP_HOST="localhost")
    client.get("/accounts/login/")
    answer = client.post(
        "/accounts/logout/", HTTP_ORIGIN=origin, HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value
    )
    assert answer.status_code in (302, 403)
    return answer.status_code == 302


async def websocket_accepts(origin: str, **headers: str) -> bool:
    extra = tuple((name.encode(), value.encode()) for name, value in headers.items())
    socket, connected, _ = await open_socket("/ws/lobby?watch=1", origin=origin.encode(), extra_headers=extra)
    if connected:
        await socket.disconnect()
    return connected


async def test_the_websocket_accepts_exactly_the_origins_the_csrf_check_accepts(channel):
    from chat.realtime.async_db import db_call

    websocket = {origin: await websocket_accepts(origin) for origin in ORIGINS}
    csrf = {origin: await db_call(csrf_accepts)(origin) for origin in ORIGINS}
    assert websocket == csrf
    assert [origin for origin, accepted in websocket.items() if accepted] == ["http://localhost"]


async def test_behind_a_tls_proxy_only_the_https_origin_is_accepted(channel, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await websocket_accepts("https://localhost", **{"x-forwarded-proto": "https"})
    assert not await websocket_accepts("http://localhost", **{"x-forwarded-proto": "https"})


async def test_a_trusted_origin_is_accepted_on_any_allowed_host(channel, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.org"]
    assert await websocket_accepts("https://chat.example.org")
    assert not await websocket_accepts("http://chat.example.org")


async def test_a_handshake_without_an_origin_or_with_a_foreign_host_is_refused(channel):
    _, connected, _ = await open_socket("/ws/lobby?watch=1", origin=None)
    assert not connected
    _, connected, _ = await open_socket(
        "/ws/lobby?watch=1", origin=b"http://evil.example", host=b"evil.example"
    )
    assert not connected


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def server(request, django_db_setup, django_db_blocker):
    with live_servers(request.param, 1) as hosts:
        yield hosts[0]


async def test_a_real_server_refuses_another_port_or_scheme_and_accepts_its_own_origin(server, channel):
    for origin in (f"http://127.0.0.1:{free_port()}", f"https://{server}", "http://127.0.0.1"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                f"ws://{server}/ws/lobby?watch=1", origin=Origin(origin), open_timeout=10
            ):
                pass
        assert refused.value.response.status_code == 403, origin
    async with websockets.connect(
        f"ws://{server}/ws/lobby?watch=1", origin=Origin(f"http://{server}"), open_timeout=10
    ) as accepted:
        first = await accepted.recv()
        assert isinstance(first, str)
        assert '"type":"history"' in first.replace(" ", "")
