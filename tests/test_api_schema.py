"""/api/schema describes every answer, field by field, and the answers fit it.

- The schema builds without a warning, and no JSON answer in it is a bare object: every
  success has its properties, every error is the Error object, and the error statuses
  each endpoint can give are declared.
- Every answer the API gives in a walk through all of its endpoints (owner, member,
  outsider, anonymous; bot replies with their substrate, an injected bot line, the
  202 of a slow reply, each error status) is validated against the schema by
  schemathesis (`validate_response`): shapes, required fields, nulls, enums, formats.
- schemathesis, on a real server, fuzzes every endpoint and checks status codes, content
  types and bodies against the schema (no 500s).
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import requests
import schemathesis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.test import APIClient

from chat import limits
from chat.credits import balances
from chat.models import ApiToken, Provider, Turn
from chat.services import create_channel, inject
from tests import files, recordings
from tests.conftest import (
    add_provider,
    client_for,
    use_provider,
    use_slow_model,
    wait_for,
    wait_until_no_generation,
)
from tests.processes import clean_env, free_port, live_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
STRING = {"type": "string"}
BINARY = {"type": "string", "format": "binary"}
# The one free-form object the schema has on purpose: field errors nest as deep as the
# input did (framing → stop → "0" → messages).
FREE_FORM = {("Error", "fields", "additionalProperties", "anyOf")}


def openapi() -> dict[str, Any]:
    return APIClient().get("/api/schema?format=json").json()


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(component name, schema) behind a $ref, or (None, the schema itself)."""
    ref = schema.get("$ref")
    if ref is None:
        return None, schema
    name = ref.rsplit("/", 1)[-1]
    return name, document["components"]["schemas"][name]


def untyped_objects(
    document: dict[str, Any], schema: dict[str, Any], where: tuple[str, ...], seen: set[str]
) -> Iterator[str]:
    """Every place under ``schema`` that is an object with nothing said of its fields."""
    name, schema = resolve(document, schema)
    if name is not None:
        if name in seen:
            return
        seen.add(name)
        where = (name,)
    for key in ("oneOf", "anyOf", "allOf"):
        for option in schema.get(key, []):
            yield from untyped_objects(document, option, (*where, key), seen)
    if schema.get("type") == "array":
        yield from untyped_objects(document, schema.get("items", {}), (*where, "items"), seen)
    if schema.get("type") == "object" or "properties" in schema:
        extra = schema.get("additionalProperties")
        if (
            not schema.get("properties")
            and not (isinstance(extra, dict) and extra)
            and where not in FREE_FORM
        ):
            yield ".".join(where)
        for field, sub in schema.get("properties", {}).items():
            yield from untyped_objects(document, sub, (*where, field), seen)
        if isinstance(extra, dict):
            yield from untyped_objects(document, extra, (*where, "additionalProperties"), seen)
    if not schema:
        yield ".".join(where) + " (no schema at all)"


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation


def test_the_schema_builds_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_no_answer_in_the_schema_is_an_untyped_object():
    document = openapi()
    problems = []
    for path, method, operation in operations(document):
        label = f"{method.upper()} {path}"
        for status, response in operation["responses"].items():
            for media_type, content in response.get("content", {}).items():
                schema = content.get("schema", {})
                if media_type == EVENT_STREAM:
                    if schema != STRING and schema.get("required") != ["event", "data"]:
                        problems.append(
                            f"{label} {status}: an event stream is text or its events, not {schema}"
                        )
                    continue
                if media_type == "*/*" and schema == BINARY:
                    continue  # an upload's bytes, typed with its real type
                if media_type != JSON:
                    problems.append(f"{label} {status}: unexpected media type {media_type}")
                    continue
                name, resolved = resolve(document, schema)
                if status.startswith("2") and not resolved.get("properties"):
                    problems.append(f"{label} {status}: no properties")
                if not status.startswith("2") and name != "Error":
                    problems.append(f"{label} {status}: an error answer that is not Error")
                problems += [
                    f"{label} {status}: {place} is an untyped object"
                    for place in untyped_objects(document, schema, (label, status), set())
                ]
    assert problems == []


def test_every_endpoint_declares_its_errors():
    """401 (a bad token) and 503 (no database or Redis) anywhere; 404 where the path
    names something; 400 where there is a body or a query value that must be a number or
    a boolean; 403 for every change (the CSRF check)."""
    problems = []
    for path, method, operation in operations(openapi()):
        declared = set(operation["responses"])
        expected = {"401", "503"}
        if "{" in path:
            expected.add("404")
        checked = [p for p in operation.get("parameters", []) if p["in"] == "query" and p["schema"] != STRING]
        if "requestBody" in operation or checked:
            expected.add("400")
        if method != "get":
            expected.add("403")
        if expected - declared:
            problems.append(f"{method.upper()} {path} lacks {sorted(expected - declared)}")
    assert problems == []


class Walk:
    """Calls the API in-process and validates each answer against /api/schema with
    schemathesis, noting which operation answered with which status."""

    def __init__(self) -> None:
        self.document = openapi()
        self.schema = schemathesis.openapi.from_dict(self.document)
        self.seen: set[tuple[str, str, str]] = set()

    def call(self, method: str, path: str, *, user: Any = None, status: int, **kwargs: Any) -> Any:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")
        if "data" in kwargs:
            kwargs.setdefault("format", "json")
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.content[:500])
        self.check(method, path, response)
        return response.json() if response.content else None

    def check(self, method: str, path: str, response: Any) -> None:
        route = path.split("?", 1)[0]
        operation = self.schema.find_operation_by_path(method, route)
        assert operation is not None, f"{method.upper()} {route} is not in the schema"
        status = str(response.status_code)
        assert status in operation.definition.raw["responses"], (
            f"{operation.label} answered {status}, which it does not declare"
        )
        self.seen.add((operation.path, method, status))
        answer = schemathesis.Response(
            status_code=response.status_code,
            headers={name.lower(): [value] for name, value in response.headers.items()},
            content=response.content,
            request=requests.Request(method.upper(), f"http://testserver{path}").prepare(),
            elapsed=0.0,
            verify=False,
        )
        operation.validate_response(answer)  # raises, naming each mismatch

    def content(self, path: str, *, user: Any = None, status: int) -> None:
        """An upload's bytes (streamed, not JSON), checked like the other answers."""
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")
        response = client.get(path)
        assert response.status_code == status, (path, response.status_code)
        body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
        self.check("get", path, SimpleNamespace(status_code=status, headers=response.headers, content=body))

    def documented(self) -> set[tuple[str, str, str]]:
        return {
            (path, method, status)
            for path, method, operation in operations(self.document)
            for status, response in operation["responses"].items()
            if JSON in response.get("content", {})
        }


def basic(user: Any) -> str:
    return "Basic " + base64.b64encode(f"{user.get_username()}:pw-{user.get_username()}".encode()).decode()


def test_every_answer_fits_the_schema(
    channel, private_channel, alice, bob, carol, admin_user, openai_server, settings, monkeypatch
):
    walk = Walk()
    lobby, session = "/api/channels/lobby", str(channel.active_session.pk)

    # Channels
    walk.call("get", "/api/channels", status=200)
    walk.call("get", "/api/channels", user=alice, status=200)
    walk.call("get", "/api/channels?page=0", status=400)
    walk.call("get", "/api/channels", status=401, HTTP_AUTHORIZATION="Bearer nonsense")
    walk.call(
        "post", "/api/channels", user=alice, data={"name": "new-one", "visibility": "private"}, status=201
    )
    walk.call("post", "/api/channels", user=alice, data={"name": "Bad Name"}, status=400)
    walk.call("post", "/api/channels", data={"name": "anon"}, status=401)
    walk.call("get", lobby, status=200)
    walk.call("get", "/api/channels/backroom", user=carol, status=404)
    walk.call("patch", lobby, user=alice, data={"title": "", "locked": False}, status=200)
    walk.call("patch", lobby, user=bob, data={"title": "mine"}, status=403)
    walk.call("post", "/api/channels/backroom/watch-key", user=alice, status=200)
    walk.call("post", "/api/channels/backroom/watch-key", user=bob, status=403)

    # Members
    walk.call("get", f"{lobby}/members", status=200)
    walk.call("post", f"{lobby}/members", user=alice, data={"username": "carol"}, status=201)
    walk.call("post", f"{lobby}/members", user=alice, data={"username": "nobody"}, status=404)
    walk.call("delete", f"{lobby}/members/alice", user=alice, status=400)
    walk.call("delete", f"{lobby}/members/carol", user=alice, status=204)

    # The conversation: a bot reply with its substrate, an injected bot line (no framing,
    # params, usage or timings), regenerate, interrupt, reset
    exchange = walk.call("post", f"{lobby}/messages", user=alice, data={"text": "Hello"}, status=200)
    assert exchange["bot_turn"]["prompt"] and exchange["bot_turn"]["usage"]
    wait_until_no_generation()
    walk.call("post", f"{lobby}/inject", user=alice, data={"role": "bot", "text": "as written"}, status=201)
    walk.call("post", f"{lobby}/inject", user=alice, data={"role": "agent", "text": "(aside)"}, status=201)
    walk.call("post", f"{lobby}/inject", user=carol, data={"role": "user", "text": "x"}, status=201)
    walk.call("post", f"{lobby}/inject", user=alice, data={"role": "boss", "text": "x"}, status=400)
    walk.call("post", f"{lobby}/regenerate", user=alice, data={}, status=202)
    wait_until_no_generation()
    walk.call("post", f"{lobby}/interrupt", user=alice, data={}, status=200)
    walk.call("post", f"{lobby}/messages", user=alice, data={"text": ""}, status=400)
    walk.call("post", "/api/channels/backroom/messages", user=carol, data={"text": "hi"}, status=404)
    walk.call("post", f"{lobby}/messages", data={"text": "hi"}, status=401)

    # Turns and sessions, with every kind of turn in them
    turns = walk.call("get", f"/api/sessions/{session}/turns", user=alice, status=200)["turns"]
    assert {t["role"] for t in turns} == {"user", "bot", "agent"}
    for turn in turns:
        walk.call("get", f"/api/turns/{turn['id']}", status=200)
    walk.call("get", f"/api/sessions/{session}/turns?include_hidden=1", user=admin_user, status=200)
    walk.call("get", f"/api/sessions/{session}/turns?limit=0", user=alice, status=400)
    walk.call("get", "/api/turns/0", status=404)
    walk.call("get", f"{lobby}/sessions", status=200)
    walk.call("get", "/api/sessions", user=alice, status=200)
    walk.call("get", "/api/sessions?channel=lobby", user=bob, status=200)
    walk.call("get", "/api/sessions", status=401)
    walk.call("get", f"/api/sessions/{session}", user=carol, status=200)
    walk.call("get", "/api/sessions/not-a-uuid", user=alice, status=404)
    walk.call("post", f"/api/sessions/{session}/truncate", user=alice, data={"keep": 2}, status=200)
    walk.call("post", f"/api/sessions/{session}/truncate", user=carol, data={"keep": 0}, status=403)
    walk.call("patch", f"/api/sessions/{session}", user=alice, data={"title": "Named"}, status=200)
    walk.call("patch", f"/api/sessions/{session}", user=alice, data={"status": "gone"}, status=400)
    walk.call("patch", f"/api/sessions/{session}", user=carol, data={"title": "x"}, status=403)
    prompt = {"text": "", "n": 1}
    walk.call("post", "/api/prompts", user=alice, data=prompt, status=200, HTTP_ACCEPT="application/json")
    walk.call("post", "/api/prompts", user=alice, data={"text": "", "n": 0}, status=400)
    walk.call("post", f"{lobby}/reset", user=alice, data={}, status=201)  # archives `session`
    walk.call("get", f"/api/sessions/{session}", user=alice, status=200)
    walk.call("post", "/api/sessions/bulk-delete", user=alice, data={"ids": [session]}, status=200)
    walk.call("post", "/api/sessions/bulk-delete", user=alice, data={"ids": ["x"]}, status=400)
    walk.call("delete", f"/api/sessions/{channel.active_session.pk}", user=carol, status=403)
    walk.call("delete", f"/api/sessions/{channel.active_session.pk}", user=alice, status=204)

    # A reply slower than SYNC_REPLY_TIMEOUT: 202 with the saved message
    settings.SYNC_REPLY_TIMEOUT = 0
    use_slow_model(channel, openai_server, delay=0.01, tokens=[" x"] * 5)
    pending = walk.call("post", f"{lobby}/messages", user=bob, data={"text": "slow"}, status=202)
    assert pending["user_turn"]["text"] == "slow"
    wait_until_no_generation()

    # Refusals: locked, too long, rate limited
    walk.call("patch", lobby, user=alice, data={"locked": True}, status=200)
    walk.call("post", f"{lobby}/messages", user=bob, data={"text": "hi"}, status=409)
    walk.call("post", f"{lobby}/reset", user=bob, data={}, status=409)
    walk.call("patch", lobby, user=alice, data={"locked": False}, status=200)
    settings.MAX_MESSAGE_CHARS = 3
    walk.call("post", f"{lobby}/inject", user=bob, data={"role": "user", "text": "long"}, status=413)
    settings.DAILY_MESSAGES = 1  # alice has sent more than one today
    walk.call("post", f"{lobby}/inject", user=alice, data={"role": "user", "text": "a"}, status=429)

    # Providers, the account, a token
    walk.call("get", "/api/providers", status=200)
    walk.call("get", "/api/me", user=bob, status=200)
    walk.call("get", "/api/me", status=401)
    walk.call("patch", "/api/me", user=bob, data={"provider": "slow", "model": "test-model"}, status=200)
    walk.call("patch", "/api/me", user=bob, data={"provider": "nope"}, status=400)

    # Instructions, and the per-message choices they and the policy allow
    settings.MAX_MESSAGE_CHARS, settings.DAILY_MESSAGES, settings.SYNC_REPLY_TIMEOUT = 1000, 0, 30
    mine = walk.call(
        "post", "/api/instructions", user=alice, data={"name": "Terse", "text": "Be terse."}, status=201
    )
    walk.call("post", "/api/instructions", user=alice, data={"name": ""}, status=400)
    walk.call("get", "/api/instructions", user=bob, status=200)
    walk.call("get", f"/api/instructions/{mine['id']}", user=alice, status=200)
    walk.call("get", f"/api/instructions/{mine['id']}", user=bob, status=404)
    walk.call("patch", f"/api/instructions/{mine['id']}", user=alice, data={"text": "Terse."}, status=200)
    policy = {
        "temperature": {"min": 0, "max": 1},
        "max_tokens": {"max": 9},
        "models": ["slow/test-model"],
        "thinking": True,
    }
    detail = walk.call(
        "patch", lobby, user=alice, data={"member_params": policy, "instruction": mine["id"]}, status=200
    )
    assert detail["member_params"] == policy and detail["instruction"] == mine["id"]
    walk.call("patch", lobby, user=alice, data={"member_params": {"top_k": {"min": 5, "max": 1}}}, status=400)
    chosen = {
        "text": "Hello",
        "params": {"temperature": 0.5, "max_tokens": 4},
        "thinking": "low",
        "instruction": None,
    }
    exchange = walk.call("post", f"{lobby}/messages", user=bob, data=chosen, status=200)
    assert (
        exchange["user_turn"]["request"]["thinking"] == "low"
        and exchange["bot_turn"]["params"]["thinking"] == "low"
    )
    walk.call("post", f"{lobby}/messages", user=bob, data={"text": "x", "params": {"top_p": 0.5}}, status=403)
    walk.call("delete", f"/api/instructions/{mine['id']}", user=bob, status=404)
    walk.call("delete", f"/api/instructions/{mine['id']}", user=alice, status=204)

    # Uploads: a file, its bytes, messages with files, and their refusals (no worker runs
    # here: an upload stays `uploaded`, so sending it is 409 not_ready)
    def a_file(data: bytes = b"hello\n", name: str = "notes.txt") -> Any:
        return SimpleUploadedFile(name, data)

    uploads = "/api/uploads"
    made = walk.call(
        "post",
        uploads,
        user=alice,
        data={"file": a_file(), "channel": "lobby"},
        format="multipart",
        status=201,
    )
    walk.call("post", uploads, user=alice, data={"channel": "lobby"}, format="multipart", status=400)
    walk.call(
        "post",
        uploads,
        user=alice,
        data={"file": a_file(b"\x7fELF" + bytes(99))},
        format="multipart",
        status=415,
    )
    walk.call(
        "post",
        uploads,
        user=carol,
        data={"file": a_file(), "channel": "backroom"},
        format="multipart",
        status=404,
    )
    walk.call("post", uploads, user=bob, data={"file": a_file()}, format="multipart", status=201)
    settings.MAX_UPLOAD_BYTES = 3
    walk.call("post", uploads, user=alice, data={"file": a_file()}, format="multipart", status=413)
    settings.MAX_UPLOAD_BYTES, settings.DAILY_UPLOAD_BYTES = 25 * 1024 * 1024, 8
    walk.call("post", uploads, user=alice, data={"file": a_file()}, format="multipart", status=429)
    settings.DAILY_UPLOAD_BYTES = 0
    walk.call("get", uploads, user=alice, status=200)
    walk.call("get", f"{uploads}?channel=lobby", user=alice, status=200)
    walk.call("get", f"{uploads}?page=1", user=alice, status=400)
    walk.call("get", f"{uploads}/{made['id']}", user=alice, status=200)
    walk.call("get", f"{uploads}/{made['id']}", user=bob, status=404)
    walk.content(f"{uploads}/{made['id']}/content", user=alice, status=200)
    walk.content(f"{uploads}/{made['id']}/content", user=bob, status=404)
    walk.content(f"{uploads}/{made['id']}/content?inline=2", user=alice, status=400)
    attach = {"text": "", "attachments": [made["id"]]}
    walk.call("post", f"{lobby}/messages", user=alice, data=attach, status=409)
    walk.call("post", f"{lobby}/messages", user=alice, data={"text": "x", "image": "AAAA"}, status=415)
    png = base64.b64encode(files.png()).decode()
    blind = walk.call("post", f"{lobby}/messages", user=alice, data={"text": "", "image": png}, status=400)
    assert blind["code"] == "no_vision"  # the channel's model (the fake server's) reads no images
    Provider.objects.update(vision=True)
    exchange = walk.call("post", f"{lobby}/messages", user=alice, data={"text": "", "image": png}, status=200)
    assert exchange["user_turn"]["attachments"][0]["status"] == "ready"
    wait_until_no_generation()
    walk.call("delete", f"{uploads}/{exchange['user_turn']['attachments'][0]['id']}", user=alice, status=204)
    walk.call("delete", f"{uploads}/{made['id']}", user=bob, status=404)
    walk.call("delete", f"{uploads}/{made['id']}", user=alice, status=204)

    # Knowledge bases: a room's and a person's, documents, search, a passage
    kb = "/api/knowledge-bases"
    room = walk.call("post", kb, user=alice, data={"name": "Lobby FAQ", "channel": "lobby"}, status=201)
    own = walk.call("post", kb, user=bob, data={"name": "Bob's", "description": "notes"}, status=201)
    walk.call("post", kb, user=bob, data={"name": "x", "channel": "lobby"}, status=403)
    walk.call("post", kb, user=alice, data={"name": ""}, status=400)
    walk.call("get", kb, user=alice, status=200)
    walk.call("get", f"{kb}?channel=lobby", user=carol, status=200)
    walk.call("get", f"{kb}/available?channel=lobby", user=bob, status=200)
    walk.call("get", f"{kb}/available", user=bob, status=400)
    walk.call("get", f"{kb}/{room['id']}", user=bob, status=200)
    walk.call("get", f"{kb}/{own['id']}", user=alice, status=404)
    walk.call("patch", f"{kb}/{room['id']}", user=alice, data={"description": "hours"}, status=200)
    walk.call("patch", f"{kb}/{room['id']}", user=bob, data={"name": "x"}, status=403)
    added = walk.call(
        "post",
        f"{kb}/{room['id']}/documents",
        user=alice,
        data={"name": "Hours", "text": "9 to 5"},
        status=201,
    )
    settings.KB_MAX_TEXT_CHARS = 3
    walk.call(
        "post", f"{kb}/{room['id']}/documents", user=alice, data={"name": "n", "text": "long"}, status=413
    )
    settings.KB_MAX_TEXT_CHARS = 2_000_000
    walk.call("post", f"{kb}/{room['id']}/documents", user=alice, data={"uploads": ["x"]}, status=400)
    walk.call(
        "post",
        f"{kb}/{own['id']}/search",
        user=bob,
        data={"query": "notes", "limit": 3, "threshold": 0},
        status=200,
    )
    walk.call("post", f"{kb}/{own['id']}/search", user=bob, data={"query": ""}, status=400)
    from chat.models import KnowledgeChunk, KnowledgeDocument

    document = KnowledgeDocument.objects.get(pk=added["documents"][0]["id"])
    chunk = KnowledgeChunk.objects.create(
        knowledge_base=document.knowledge_base,
        document=document,
        generation=1,
        ordinal=0,
        text="9 to 5",
        end=6,
        dims=document.knowledge_base.dims,
    )
    walk.call("get", f"{kb}/{room['id']}/chunks/{chunk.pk}", status=200)
    walk.call("get", f"{kb}/{own['id']}/chunks/{chunk.pk}", status=404)
    walk.call("get", f"{kb}/{room['id']}/chunks/{chunk.pk}?turn=x", status=400)
    walk.call("patch", lobby, user=alice, data={"knowledge_base_ids": [own["id"]]}, status=400)
    walk.call("patch", lobby, user=alice, data={"knowledge_base_ids": [room["id"]]}, status=200)
    walk.call("delete", f"{kb}/{room['id']}/documents/{document.pk}", user=bob, status=403)
    walk.call("delete", f"{kb}/{room['id']}/documents/{document.pk}", user=alice, status=204)
    walk.call("delete", f"{kb}/{own['id']}", user=alice, status=404)
    walk.call("delete", f"{kb}/{own['id']}", user=bob, status=204)

    # Agents and tools (issue 17): the catalogues, a channel bound to an agent, a message naming it
    from chat.models import Agent

    Agent.objects.create(name="helper", tools=["calculator"], params={"max_tokens": 5})
    walk.call("get", "/api/agents", user=bob, status=200)
    walk.call("get", "/api/agents", status=401)
    walk.call("get", "/api/agents/helper", user=bob, status=200)
    walk.call("get", "/api/agents/nobody", user=bob, status=404)
    walk.call("get", "/api/tools", user=bob, status=200)
    tools = {"tools": ["calculator"], "tools_requiring_approval": ["calculator"], "agent": "helper"}
    detail = walk.call("patch", lobby, user=alice, data={**tools, "agent_choice": "fixed"}, status=200)
    assert detail["agent"] == "helper" and detail["tools_apply"] is True
    walk.call("patch", lobby, user=alice, data={"tools": ["nonsense"]}, status=400)
    exchange = walk.call(
        "post", f"{lobby}/messages", user=bob, data={"text": "hi", "agent": "helper"}, status=200
    )
    assert exchange["user_turn"]["request"]["agent"] == "helper"
    wait_until_no_generation()
    # Approving a call when none waits; reading back a step that is not one's own.
    approvals = f"{lobby}/tool-approvals"
    walk.call("post", approvals, user=alice, data={"call_id": "c1", "approve": True}, status=404)
    walk.call("post", approvals, user=alice, data={"call_id": "c 1", "approve": "yes"}, status=400)
    walk.call("post", approvals, data={"call_id": "c1", "approve": True}, status=401)
    bot_turn = exchange["bot_turn"]["id"]
    walk.call("get", f"/api/turns/{bot_turn}/steps/c1", user=bob, status=404)
    walk.call("get", f"/api/turns/{bot_turn}/steps/c1", status=401)

    # Memories (issue 17): the caller's own; another's is not found
    walk.call("patch", "/api/me", user=bob, data={"memory_in_shared_rooms": True}, status=200)
    fact = walk.call("post", "/api/me/memories", user=bob, data={"text": "likes tea"}, status=201)
    walk.call("post", "/api/me/memories", user=bob, data={"text": " "}, status=400)
    walk.call("get", "/api/me/memories", user=bob, status=200)
    walk.call("get", "/api/me/memories", status=401)
    balances.grant(user=bob, credits=Decimal("1.5"), actor=None)  # a balance to describe
    walk.call("get", "/api/me/usage?days=7", user=bob, status=200)
    walk.call("get", "/api/me/usage?days=0", user=bob, status=400)
    walk.call("get", "/api/me/usage", status=401)
    walk.call("patch", f"/api/me/memories/{fact['id']}", user=bob, data={"expires_at": None}, status=200)
    walk.call("patch", f"/api/me/memories/{fact['id']}", user=bob, data={"colour": "red"}, status=400)
    walk.call("patch", f"/api/me/memories/{fact['id']}", user=alice, data={"text": "x"}, status=404)
    walk.call("delete", f"/api/me/memories/{fact['id']}", user=alice, status=404)
    walk.call("delete", f"/api/me/memories/{fact['id']}", user=bob, status=204)

    # A reply that calls tools (issue 17): one call waits for approval, the other reads
    # bob's memories, so its result is his alone to read back.
    from chat.services import post_message

    add_provider("walk-tools", openai_server.base_url)
    use_provider(private_channel, "walk-tools")
    private_channel.tools, private_channel.tools_requiring_approval = ["calculator", "memory"], ["calculator"]
    private_channel.memory = True
    private_channel.save()
    openai_server.behaviour.tool_calls = [
        [
            {"id": "m1", "name": "memory", "arguments": '{"action": "save", "text": "likes green tea"}'},
            {"id": "c1", "name": "calculator", "arguments": '{"expression": "2+2"}'},
        ]
    ]
    openai_server.streamed = 0
    post_message(channel=private_channel, user=bob, text="remember that I like green tea; what is 2+2?")
    waiting = Turn.objects.filter(session__channel=private_channel, role="bot")
    wait_for(lambda: any(s["status"] == "awaiting_approval" for t in waiting.all() for s in t.steps))
    decision = {"call_id": "c1", "approve": True}
    walk.call("post", "/api/channels/backroom/tool-approvals", user=bob, data=decision, status=200)
    wait_until_no_generation()
    tool_turn = waiting.latest("id").pk
    walk.call("get", f"/api/turns/{tool_turn}/steps/m1", user=bob, status=200)
    walk.call("get", f"/api/turns/{tool_turn}/steps/m1", user=alice, status=404)

    walk.call("post", "/api/me/token", status=201, HTTP_AUTHORIZATION=basic(bob))
    walk.call("post", "/api/me/token", status=401, HTTP_AUTHORIZATION="Basic Ym9iOndyb25n")

    # Named tokens with scopes (issue 18): made, listed, one lacking a scope, revoked
    reader = {"name": "reader", "scopes": ["chats:read"]}
    made = walk.call("post", "/api/me/tokens", user=bob, data=reader, status=201)
    walk.call("post", "/api/me/tokens", user=bob, data=reader, status=400)
    walk.call("get", "/api/me/tokens", user=bob, status=200)
    walk.call("get", "/api/me/tokens", status=401)
    read_only = {"HTTP_AUTHORIZATION": f"Bearer {made['token']}"}
    walk.call("get", f"{lobby}/members", status=200, **read_only)
    walk.call("post", f"{lobby}/inject", data={"role": "user", "text": "x"}, status=403, **read_only)
    walk.call("delete", f"/api/me/tokens/{made['id']}", user=bob, status=204)
    walk.call("delete", f"/api/me/tokens/{made['id']}", user=bob, status=404)

    # Transcription (pocketsphinx, offline): a recording, and its refusals
    speech = recordings.wav(*recordings.pcm_of_wav(recordings.spoken("hello")))
    clip = SimpleUploadedFile("note.wav", speech, content_type="audio/wav")
    form = {"data": {"file": clip}, "format": "multipart"}
    heard = walk.call("post", "/api/transcribe?language=en-GB", user=bob, status=200, **form)
    assert heard["language"] == "en-GB"
    walk.call("post", "/api/transcribe?language=ja-JP", user=bob, data={}, format="multipart", status=400)
    walk.call("post", "/api/transcribe", data={}, format="multipart", status=401)
    big = client_for(bob).post(
        "/api/transcribe", b"RIFF", content_type="audio/wav", CONTENT_LENGTH=str(26 * 1024 * 1024)
    )
    assert big.status_code == 413
    walk.check("post", "/api/transcribe", big)

    # The event stream refuses like the rest (its events have tests of their own)
    walk.call("get", "/api/channels/backroom/events", user=carol, status=404)
    walk.call("get", f"{lobby}/events", status=400, HTTP_LAST_EVENT_ID="x")

    # Redis out of reach: 503
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    monkeypatch.setattr(limits, "sync_redis", lambda: dead)
    walk.call("get", "/api/me", user=alice, status=503)
    monkeypatch.undo()

    # Deleting last: the channel, and a channel's answer no one may give
    walk.call("delete", lobby, user=bob, status=403)
    walk.call("delete", lobby, user=alice, status=204)
    walk.call("get", lobby, status=404)

    missed = {
        (path, method, status)
        for path, method, status in walk.documented() - walk.seen
        if status.startswith("2")
    }
    assert missed == set(), "successes never validated"
    errors = {status for _path, _method, status in walk.seen if not status.startswith("2")}
    assert errors >= {"400", "401", "403", "404", "409", "413", "415", "429", "503"}


def test_answers_are_json_whatever_the_client_asked_for(channel, alice):
    """The views that stream answer everything they do not stream as JSON, labelled so;
    a form too big for Django to read is refused like any form (not Django's HTML 400)."""
    walk = Walk()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(alice)}")
    refused = [
        client.post("/api/channels/lobby/messages", {"text": ""}, format="json", HTTP_ACCEPT=EVENT_STREAM),
        client.post("/api/channels/lobby/messages?format=sse", {"text": ""}, format="json"),
        client.get("/api/channels/nothing/events", HTTP_ACCEPT=EVENT_STREAM),
        client.get("/api/channels/lobby/events?format=sse", HTTP_LAST_EVENT_ID="x"),
        client.post(
            "/api/sessions/bulk-delete",
            "&".join(f"ids={i}" for i in range(1001)),
            content_type="application/x-www-form-urlencoded",
        ),
    ]
    for response in refused:
        assert response["Content-Type"] == JSON and response.json()["detail"]
        walk.check(response.request["REQUEST_METHOD"].lower(), response.request["PATH_INFO"], response)
    assert refused[-1].status_code == 400 and refused[-1].json()["code"] == "invalid"
    # `?format=sse` alone does not stream: the exchange is answered as JSON
    answer = client.post("/api/channels/lobby/messages?format=sse", {"text": "hi"}, format="json")
    assert answer.status_code == 200 and answer["Content-Type"] == JSON
    wait_until_no_generation()


def test_the_api_survives_schemathesis(alice, tmp_path):
    lobby = create_channel(name="lobby", owner=alice)
    inject(channel=lobby, user=alice, role="user", text="hello")  # a session with a turn
    token = ApiToken.issue(alice)
    with live_servers("uvicorn", 1, SYNC_REPLY_TIMEOUT="0.3") as hosts:
        base = f"http://{hosts[0]}"
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{base}/api/schema",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance",
                "-H",
                f"Authorization: Bearer {token}",
                # The event stream never ends, and rotating the token would lock the run
                # out; both have tests of their own.
                "--exclude-path",
                "/api/channels/{name}/events",
                "--exclude-path",
                "/api/me/token",
                "--max-examples",
                "5",
                "--seed",
                "1",
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=clean_env(),
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
