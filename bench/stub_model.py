"""An OpenAI-compatible stub model that streams tokens at a fixed rate.

The model name carries the pace: ``stub-<rate>-<count>`` streams ``count`` tokens at
``rate`` tokens a second. Each token is `` <index>:<monotonic ns when emitted>``, so a
receiver can tell which tokens it got and how late (same machine, same clock).
"""

from __future__ import annotations

import asyncio
import json
import time


def parse_model(model: str) -> tuple[float, int]:
    try:
        _, rate, count = model.split("-")
        return float(rate), int(count)
    except ValueError:
        return 50.0, 20


def chunk(text: str, chat: bool, finish: str | None = None) -> bytes:
    if chat:
        choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        body = {
            "id": "s",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "stub",
            "choices": [choice],
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        body = {"id": "s", "object": "text_completion", "created": 0, "model": "stub", "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n".encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = json.loads(await reader.readexactly(length)) if length else {}
        chat = b"/chat/completions" in head.split(b"\r\n")[0]
        rate, count = parse_model(body.get("model", ""))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
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
