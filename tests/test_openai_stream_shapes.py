"""The OpenAI-compatible stream (spoken over httpx): a provider's failures must come out
as ProviderError, the only kind the engine handles; anything else would leave the bot
turn "writing…" without `done` until the recovery sweep. These servers answer 200 with a
body the client cannot use; a reply's usage must be counts or nothing (found in review)."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chat.generation.prompt import BuiltPrompt
from chat.generation.providers.base import GenerationRequest, ProviderConfig, ProviderError
from chat.generation.providers.openai_compat import OpenAICompatProvider

PARAMS = {"max_tokens": 16, "temperature": 0.5, "top_p": 1.0, "top_k": 0, "repeat_penalty": 1.0}


class RawServer:
    """Answers every POST with 200, ``headers`` and ``body`` as given."""

    def __init__(self, body: bytes, headers: dict[str, str]):
        outer = self
        self.body, self.headers = body, headers

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                for name, value in {"Content-Type": "text/event-stream", **outer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(outer.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(outer.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def read_all(base_url: str) -> list[Any]:
    provider = OpenAICompatProvider(ProviderConfig(name="odd", kind="openai_compat", base_url=base_url))
    request = GenerationRequest(
        built=BuiltPrompt(mode="chat", messages=[{"role": "user", "content": "Hi"}]), model="m", params=PARAMS
    )

    async def run() -> list[Any]:
        return [item async for item in provider.stream(request)]

    return asyncio.run(run())


def sse(*chunks: str) -> bytes:
    return "".join(f"data: {c}\n\n" for c in chunks).encode()


FINISH = '{"choices": [{"delta": {}, "finish_reason": "stop"}]}'

ODD_BODIES = {
    # Claims gzip, is not: httpx raises DecodingError (a RequestError, not a TransportError).
    "not-gzip": (b"data: {}\n\n" * 4, {"Content-Encoding": "gzip"}),
    # Valid JSON, wrong shapes.
    "choices-not-a-list": (sse('{"choices": "oops"}', FINISH), {}),
    "choice-not-an-object": (sse('{"choices": [1]}', FINISH), {}),
    "delta-not-an-object": (sse('{"choices": [{"delta": "hi"}]}', FINISH), {}),
    "content-not-a-string": (sse('{"choices": [{"delta": {"content": 5}}]}', FINISH), {}),
    "finish-reason-a-list": (sse('{"choices": [{"delta": {}, "finish_reason": ["stop"]}]}'), {}),
    "usage-as-strings": (
        sse(FINISH, '{"choices": [], "usage": {"prompt_tokens": "3", "completion_tokens": 2}}'),
        {},
    ),
}


@pytest.mark.parametrize("case", sorted(ODD_BODIES))
def test_an_unusable_answer_is_a_provider_error_or_clean_values(case):
    body, headers = ODD_BODIES[case]
    server = RawServer(body, headers)
    try:
        try:
            items = read_all(server.base_url)
        except ProviderError:
            return  # the engine ends the reply as error, announces and charges it properly
        except Exception as exc:
            pytest.fail(f"{case}: {type(exc).__name__}: {exc} escaped as other than a ProviderError")
        for item in items:
            for name in ("text", "reasoning"):
                if hasattr(item, name):
                    assert isinstance(getattr(item, name), str), (case, item)
            for name in ("prompt_tokens", "completion_tokens"):
                value = getattr(item, name, None)
                assert value is None or type(value) is int, (case, item)
    finally:
        server.stop()


def test_an_event_whose_data_spans_lines_is_joined_as_the_format_says():
    """SSE joins an event's data lines with newlines (the SDK did; JSON allows it)."""
    body = (
        b'data: {"choices": [{"delta":\ndata: {"content": "Hi"}}]}\n\n'
        b": a comment\nevent: ignored\n" + sse(FINISH) + b"data: [DONE]\n\n"
    )
    server = RawServer(body, {})
    try:
        items = read_all(server.base_url)
    finally:
        server.stop()
    assert [getattr(item, "text", None) for item in items[:-1]] == ["Hi"]
    assert items[-1].reason == "stop"
