"""Issue 14: a field the server does not support (an image, a mood, web search...) is a
400 naming it on every transport, never a 200 that quietly did without it."""

from __future__ import annotations

import pytest

from chat.models import Turn
from tests.conftest import client_for
from tests.test_strict_input import rest_invalid, ws_answer, ws_invalid

UNSUPPORTED = [
    ("image", "data:image/png;base64,AAAA"),
    ("mood", "friendly"),
    ("web_searching", True),  # web_search itself is a message field since December 2026
    ("files", ["a.txt"]),
]


# REST messages take the seed form's image since issue 15 (tests/test_attachments.py);
# regenerate and the socket still refuse it.
REST_CASES = [
    (path, field, value)
    for path in ("messages", "regenerate")
    for field, value in UNSUPPORTED
    if (path, field) != ("messages", "image")
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "field", "value"), REST_CASES)
def test_rest_names_an_unsupported_field_and_writes_nothing(channel, alice, field, value, path):
    body = {"text": "hello", field: value} if path == "messages" else {field: value}
    response = client_for(alice).post(f"/api/channels/lobby/{path}", body, format="json")
    assert rest_invalid(response, field)["fields"][field] == ["Unknown field."]
    assert not Turn.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("field", "value"), UNSUPPORTED)
async def test_the_socket_names_an_unsupported_field_and_stays_open(channel, alice, field, value):
    ws_invalid(await ws_answer(alice, {"type": "message", "text": "hello", field: value}), field)
