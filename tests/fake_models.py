"""Real HTTP servers that speak the OpenAI and Anthropic streaming wire formats, for
testing providers and the engine without mocking any SDK.

Each server runs in a thread on a free port. Switches (attributes of ``Behaviour``):
delay between chunks, a stall, an error status before the first token, a dropped
connection mid-stream, reasoning deltas, usage or none, and whether stop sequences are
honoured; scripted tool calls (``tool_calls``, below). Every request body is recorded,
and so is a client that hung up mid-stream.
"""

from __future__ import annotations

import email.policy
import json
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "."])
    delay: float = 0.0  # seconds between chunks
    stall_after: int | None = None  # stop sending (but keep the socket) after N tokens
    status: int | None = None  # answer this HTTP status instead of streaming
    drop_after: int | None = None  # close the socket abruptly after N tokens
    reasoning: list[str] = field(default_factory=list)
    usage: bool = True
    honour_stop: bool = True
    finish_reason: str = "stop"
    transcript: str = "bonjour tout le monde"  # what /v1/audio/transcriptions answers
    embedding_dims: int = 64  # /v1/embeddings: length of its (hashed bag-of-words) vectors
    # Scripted tool calls, per streamed chat request in the order received: the calls
    # ({"id", "name", "arguments": a JSON string}) that request is answered with instead
    # of ``tokens`` (finish "tool_calls" / stop_reason "tool_use"); an empty list, or a
    # request beyond the script, is answered with ``tokens`` as usual.
    tool_calls: list[list[dict[str, str]]] = field(default_factory=list)
    tool_text: list[str] = field(default_factory=list)  # tokens streamed before the calls
    tool_fragment: int | None = None  # send each call's arguments in pieces this long
    tool_interleave: bool = False  # alternate the pieces of the calls (index 0, 1, 0, 1…)


class FakeModelServer:
    def __init__(self, flavour: str = "openai"):
        self.flavour = flavour
        self.behaviour = Behaviour()
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = threading.Event()
        self.streamed = 0  # chat and completion requests answered so far (tool_calls' index)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeModelServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                if self.path.endswith("/audio/transcriptions"):
                    server._transcribe(self, self.rfile.read(length))
                    return
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(body)
                server.paths.append(self.path)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                behaviour = server.behaviour
                if self.path.endswith("/embeddings") and behaviour.status is None:
                    time.sleep(behaviour.delay)  # a slow embedding service
                    server._embeddings(self, body)
                    return
                if behaviour.status is not None:
                    payload = json.dumps(
                        {"error": {"message": "failing on purpose", "type": "test"}}
                    ).encode()
                    self.send_response(behaviour.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                with server.lock:
                    script, number = behaviour.tool_calls, server.streamed
                    server.streamed += 1
                calls = script[number] if number < len(script) else []
                try:
                    if server.flavour == "anthropic":
                        if calls:
                            server._tools_anthropic(self, body, calls)
                        else:
                            server._stream_anthropic(self, body)
                    elif calls and "messages" in body:
                        server._tools_openai(self, body, calls)
                    else:
                        server._stream_openai(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnected.set()
                self.close_connection = True

        return Handler

    # --- helpers ---------------------------------------------------------------------------

    def _transcribe(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        """/v1/audio/transcriptions: a multipart form (model, language, file) recorded as
        {field: value} (the file as {"filename", "mime", "data"}), answered {"text": …}."""
        message = BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {handler.headers['Content-Type']}\r\n\r\n".encode() + raw
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            data: Any = part.get_payload(decode=True)
            filename = part.get_filename()
            if filename is not None:
                fields[name] = {"filename": filename, "mime": part.get_content_type(), "data": data}
            else:
                fields[name] = data.decode()
        self.requests.append(fields)
        self.paths.append(handler.path)
        self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        status = self.behaviour.status or 200
        payload = json.dumps(
            {"text": self.behaviour.transcript}
            if status == 200
            else {"error": {"message": "failing on purpose", "type": "test"}}
        ).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _embeddings(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        """/v1/embeddings: each input's words hashed into ``embedding_dims`` buckets (texts
        sharing words are near), as the OpenAI wire format has it."""
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = self.behaviour.embedding_dims
        data = []
        for index, text in enumerate(texts):
            vector = [0.0] * dims
            for word in str(text).lower().split():
                word = word.strip(".,;:!?\"'()")
                if word:
                    vector[zlib.crc32(word.encode()) % dims] += 1.0
            data.append({"object": "embedding", "index": index, "embedding": vector})
        payload = json.dumps(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _visible_tokens(self, body: dict[str, Any]) -> tuple[list[str], str]:
        """The tokens to send, cut at a stop sequence when the server honours them."""
        behaviour = self.behaviour
        tokens = list(behaviour.tokens)
        limit = body.get("max_tokens")
        finish = behaviour.finish_reason
        if limit is not None and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        stops = body.get("stop") or body.get("stop_sequences") or []
        if behaviour.honour_stop and stops:
            text = ""
            for i, token in enumerate(tokens):
                text += token
                if any(s in text for s in stops):
                    cut = min(text.find(s) for s in stops if s in text)
                    before = text[:cut]
                    done = "".join(tokens[:i])
                    tokens = tokens[:i] + ([before[len(done) :]] if len(before) > len(done) else [])
                    finish = "stop"
                    break
        return tokens, finish

    def _send(self, handler: BaseHTTPRequestHandler, data: str, event: str | None = None) -> None:
        chunk = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
        handler.wfile.write(chunk.encode())
        handler.wfile.flush()

    def _pace(self, handler: BaseHTTPRequestHandler, index: int) -> None:
        behaviour = self.behaviour
        if behaviour.drop_after is not None and index >= behaviour.drop_after:
            handler.connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("dropped on purpose")
        if behaviour.stall_after is not None and index >= behaviour.stall_after:
            # Stall, but notice a client that hangs up: probe the socket while waiting.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.05)
                handler.wfile.write(b": keep-alive\n\n")
                handler.wfile.flush()
        if behaviour.delay:
            time.sleep(behaviour.delay)

    def _stream_openai(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        chat = "messages" in body
        tokens, finish = self._visible_tokens(body)
        base = {"id": "cmpl-1", "created": 0, "model": body.get("model", "m")}
        for piece in self.behaviour.reasoning:
            if chat:
                delta = {"role": "assistant", "content": None, "reasoning_content": piece}
                self._send(
                    handler,
                    json.dumps(
                        {
                            **base,
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                        }
                    ),
                )
        for index, token in enumerate(tokens):
            self._pace(handler, index)
            if chat:
                choice = {"index": 0, "delta": {"content": token}, "finish_reason": None}
                self._send(
                    handler, json.dumps({**base, "object": "chat.completion.chunk", "choices": [choice]})
                )
            else:
                choice = {"index": 0, "text": token, "finish_reason": None, "logprobs": None}
                self._send(handler, json.dumps({**base, "object": "text_completion", "choices": [choice]}))
        last = (
            {"index": 0, "delta": {}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": "", "finish_reason": finish, "logprobs": None}
        )
        kind = "chat.completion.chunk" if chat else "text_completion"
        self._send(handler, json.dumps({**base, "object": kind, "choices": [last]}))
        if self.behaviour.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": len(tokens), "total_tokens": 11 + len(tokens)}
            self._send(handler, json.dumps({**base, "object": kind, "choices": [], "usage": usage}))
        self._send(handler, "[DONE]")

    def _stream_anthropic(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        tokens, finish = self._visible_tokens(body)
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": body["model"],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 13, "output_tokens": 1},
        }
        self._send(handler, json.dumps({"type": "message_start", "message": message}), "message_start")
        index = 0
        if self.behaviour.reasoning:
            self._send(
                handler,
                json.dumps(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "thinking", "thinking": ""},
                    }
                ),
                "content_block_start",
            )
            for piece in self.behaviour.reasoning:
                self._send(
                    handler,
                    json.dumps(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "thinking_delta", "thinking": piece},
                        }
                    ),
                    "content_block_delta",
                )
            self._send(handler, json.dumps({"type": "content_block_stop", "index": 0}), "content_block_stop")
            index = 1
        self._send(
            handler,
            json.dumps(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            ),
            "content_block_start",
        )
        for i, token in enumerate(tokens):
            self._pace(handler, i)
            self._send(
                handler,
                json.dumps(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": token},
                    }
                ),
                "content_block_delta",
            )
        self._send(handler, json.dumps({"type": "content_block_stop", "index": index}), "content_block_stop")
        stop_reason = "max_tokens" if finish == "length" else "end_turn"
        self._send(
            handler,
            json.dumps(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": len(tokens)},
                }
            ),
            "message_delta",
        )
        self._send(handler, json.dumps({"type": "message_stop"}), "message_stop")

    # --- scripted tool calls ---------------------------------------------------------------

    def _tool_pieces(self, calls: list[dict[str, str]]) -> tuple[list[tuple[int, int]], list[list[str]]]:
        """The pieces to send, as (call position, fragment number or -1 for the call's
        first piece, with its id and name) in sending order, interleaved or one call after
        the other; and each call's arguments cut ``tool_fragment`` long."""
        size = self.behaviour.tool_fragment
        fragments = [
            [a[i : i + size] for i in range(0, len(a), size)] if size and a else [a]
            for a in (call["arguments"] for call in calls)
        ]
        queues = [[(n, -1)] + [(n, f) for f in range(len(frags))] for n, frags in enumerate(fragments)]
        if not self.behaviour.tool_interleave:
            return [piece for queue in queues for piece in queue], fragments
        order = []
        while any(queues):
            for queue in queues:
                if queue:
                    order.append(queue.pop(0))
        return order, fragments

    def _tools_openai(
        self, handler: BaseHTTPRequestHandler, body: dict[str, Any], calls: list[dict[str, str]]
    ) -> None:
        base = {
            "id": "cmpl-1",
            "created": 0,
            "model": body.get("model", "m"),
            "object": "chat.completion.chunk",
        }

        def send(delta: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            self._send(handler, json.dumps({**base, "choices": [choice]}))

        sent = 0
        for token in self.behaviour.tool_text:
            self._pace(handler, sent)
            send({"content": token})
            sent += 1
        pieces, fragments = self._tool_pieces(calls)
        for n, f in pieces:
            self._pace(handler, sent)
            sent += 1
            if f < 0:  # the call's first piece: id, type, name and no arguments yet
                piece = {
                    "id": calls[n]["id"],
                    "type": "function",
                    "function": {"name": calls[n]["name"], "arguments": ""},
                }
                send({"tool_calls": [{"index": n, **piece}]})
            else:
                send({"tool_calls": [{"index": n, "function": {"arguments": fragments[n][f]}}]})
        send({}, "tool_calls")
        if self.behaviour.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": sent, "total_tokens": 11 + sent}
            self._send(handler, json.dumps({**base, "choices": [], "usage": usage}))
        self._send(handler, "[DONE]")

    def _tools_anthropic(
        self, handler: BaseHTTPRequestHandler, body: dict[str, Any], calls: list[dict[str, str]]
    ) -> None:
        def send(event: dict[str, Any]) -> None:
            self._send(handler, json.dumps(event), event["type"])

        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": body["model"],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 13, "output_tokens": 1},
        }
        send({"type": "message_start", "message": message})
        sent = first = 0
        if self.behaviour.tool_text:
            send({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            for token in self.behaviour.tool_text:
                self._pace(handler, sent)
                sent += 1
                send(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": token},
                    }
                )
            send({"type": "content_block_stop", "index": 0})
            first = 1
        pieces, fragments = self._tool_pieces(calls)
        for position, (n, f) in enumerate(pieces):
            self._pace(handler, sent)
            sent += 1
            index = first + n
            if f < 0:
                block = {"type": "tool_use", "id": calls[n]["id"], "name": calls[n]["name"], "input": {}}
                send({"type": "content_block_start", "index": index, "content_block": block})
            elif fragments[n][f]:
                delta = {"type": "input_json_delta", "partial_json": fragments[n][f]}
                send({"type": "content_block_delta", "index": index, "delta": delta})
            if not any(m == n for m, _ in pieces[position + 1 :]):
                send({"type": "content_block_stop", "index": index})
        send(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": sent},
            }
        )
        send({"type": "message_stop"})
