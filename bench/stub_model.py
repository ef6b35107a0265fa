"""An OpenAI-compatible stub model that streams tokens at a fixed rate.

The model name carries the pace: ``stub-<rate>-<count>`` streams ``count`` tokens at
``rate`` tokens a second. Each token is `` <index>:<monotonic ns when emitted>``, so a
receiver can tell which tokens it got and how late (same machine, same clock).

``stub-<rate>-<count>-<rounds>`` also calls a tool: a chat request that offers
``tools`` and carries fewer than ``rounds`` ``tool`` messages (results of earlier
calls) is answered with one call of the first tool offered (streamed
``delta.tool_calls``, finish_reason ``tool_calls``); one that carries ``rounds`` results
is answered with text as above. The conversation itself says how far it is, so the
stub keeps no state to decide, and a request without ``tools`` is answered as before.

``GET /recorded?model=<name>&last=<n>``: the last ``n`` chat requests for that model,
each as ``{"body": <as sent>, "arrived_ns", "answered_ns"}`` (monotonic ns when its body
was read and when its ``[DONE]`` was written), so that the benchmark can replay exactly
the requests a reply made, straight to the stub, as its reference, and tell how long
the reply took between one answer and its next request (tool-rounds).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The last chat requests, newest last: (model, body as sent, arrived ns, [answered ns]).
RECORDED: collections.deque[tuple[str, bytes, int, list[int]]] = collections.deque(maxlen=64)


def parse_model(model: str) -> tuple[float, int, int]:
    """(tokens a second, tokens, tool rounds) of a stub model name."""
    try:
        _, rate, count, *rounds = model.split("-")
        return float(rate), int(count), int(rounds[0]) if rounds else 0
    except (ValueError, IndexError):
        return 50.0, 20, 0


def frame(choice: dict[str, Any], chat: bool) -> bytes:
    kind = "chat.completion.chunk" if chat else "text_completion"
    body = {"id": "s", "object": kind, "created": 0, "model": "stub", "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n".encode()


def chunk(text: str, chat: bool, finish: str | None = None) -> bytes:
    if chat:
        return frame({"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}, chat)
    return frame({"index": 0, "text": text, "finish_reason": finish, "logprobs": None}, chat)


def tool_call_chunks(name: str, done: int) -> list[bytes]:
    """One call of ``name`` as servers stream it: the id and name first, then the
    arguments in two pieces, then the finish. Its id is unique in the conversation."""

    def call(piece: dict[str, Any]) -> bytes:
        delta = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **piece}]}
        return frame({"index": 0, "delta": delta, "finish_reason": None}, True)

    return [
        call({"id": f"call_{done}", "type": "function", "function": {"name": name, "arguments": ""}}),
        call({"function": {"arguments": '{"timezone": '}}),
        call({"function": {"arguments": '"UTC"}'}}),
        frame({"index": 0, "delta": {}, "finish_reason": "tool_calls"}, True),
    ]


def tool_to_call(body: dict[str, Any], rounds: int) -> tuple[str, int] | None:
    """(the tool, the results so far) when this request is to be answered with a call."""
    tools = body.get("tools") or []
    if not rounds or not tools:
        return None
    done = sum(1 for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "tool")
    if done >= rounds:
        return None
    return str(tools[0]["function"]["name"]), done


async def recorded(writer: asyncio.StreamWriter, target: str) -> None:
    query = parse_qs(urlsplit(target).query)
    model, last = query.get("model", [""])[0], int(query.get("last", ["1"])[0])
    bodies = [
        {"body": body.decode(), "arrived_ns": arrived, "answered_ns": answered[0] if answered else None}
        for name, body, arrived, answered in RECORDED
        if name == model
    ][-last:]
    payload = json.dumps(bodies).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n")[0]
        if request_line.startswith(b"GET /recorded"):
            await recorded(writer, request_line.split(b" ")[1].decode())
            return
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        raw = await reader.readexactly(length) if length else b""
        arrived, answered = time.monotonic_ns(), list[int]()
        body = json.loads(raw) if raw else {}
        chat = b"/chat/completions" in request_line
        rate, count, rounds = parse_model(body.get("model", ""))
        if chat:
            RECORDED.append((body.get("model", ""), raw, arrived, answered))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        call = tool_to_call(body, rounds) if chat else None
        if call is not None:
            writer.writelines(tool_call_chunks(*call))
        else:
            start = time.monotonic()
            for index in range(count):
                delay = start + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(chunk(f" {index}:{time.monotonic_ns()}", chat))
                await writer.drain()
            writer.write(chunk("", chat, "stop"))
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        answered.append(time.monotonic_ns())
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import sys

    asyncio.run(serve(int(sys.argv[1])))
