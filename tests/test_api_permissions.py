"""Every endpoint on a private channel, for owner, member, outsider, anonymous and admin."""

import pytest
from rest_framework.test import APIClient

from chat.models import ApiToken

pytestmark = pytest.mark.django_db

ROLES = ["owner", "member", "outsider", "anonymous", "admin"]
# (method, path, body) → expected status per role, in ROLES order.
MATRIX = [
    (("get", "/api/channels/backroom", None), [200, 200, 404, 404, 200]),
    (("patch", "/api/channels/backroom", {"title": "x"}), [200, 403, 404, 401, 200]),
    (("post", "/api/channels/backroom/watch-key", None), [200, 403, 404, 401, 200]),
    (("post", "/api/channels/backroom/inject", {"role": "user", "text": "x"}), [201, 201, 404, 401, 201]),
    (("post", "/api/channels/backroom/reset", None), [201, 201, 404, 401, 201]),
    (("post", "/api/channels/backroom/interrupt", None), [200, 200, 404, 401, 200]),
    (("post", "/api/channels/backroom/regenerate", {}), [202, 202, 404, 401, 202]),
    (("get", "/api/channels/backroom/sessions", None), [200, 200, 404, 404, 200]),
    (("get", "/api/channels/backroom/events", None), [200, 200, 404, 404, 200]),
    (("get", "/api/sessions/{session}", None), [200, 200, 404, 401, 200]),
    (("get", "/api/sessions/{session}/turns", None), [200, 200, 404, 401, 200]),
    (("post", "/api/sessions/{session}/truncate", {"keep": 0}), [200, 403, 404, 401, 200]),
    (("delete", "/api/sessions/{session}", None), [204, 403, 404, 401, 204]),
    (("delete", "/api/channels/backroom", None), [204, 403, 404, 401, 204]),
]
CASES = [(call, role, statuses[i]) for call, statuses in MATRIX for i, role in enumerate(ROLES)]


@pytest.mark.parametrize(
    ("call", "role", "expected"), CASES, ids=[f"{c[0]} {c[1]} as {r}" for c, r, _ in CASES]
)
def test_who_gets_what(private_channel, alice, bob, carol, admin_user, call, role, expected):
    users = {"owner": alice, "member": bob, "outsider": carol, "anonymous": None, "admin": admin_user}
    client = APIClient()
    if users[role] is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(users[role])}")
    method, path, body = call
    path = path.format(session=private_channel.active_session.pk)
    if path.endswith("/events"):
        # A stream: the status line is all this test needs, so read only that.
        response = client.get(path, HTTP_ACCEPT="text/event-stream")
        status = response.status_code
        if hasattr(response, "close"):
            response.close()
    else:
        status = getattr(client, method)(path, body, format="json").status_code
    assert status == expected
