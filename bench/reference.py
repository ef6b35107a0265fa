"""The reference: a bare asyncio WebSocket broadcaster (the `websockets` library) that
relays the stub model's stream to every client watching, encoding each event once and
writing it to every socket with ``broadcast``. The figure every result is divided by.

``/watch/<channel>`` watches a channel; a message ``{"model": …}`` on ``/chat/<channel>``
starts a generation there. ``/watch`` and ``/chat`` are the channel "".
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import orjson
import websockets
from websockets.asyncio.server import ServerConnection, broadcast, serve

# Each channel's watchers.
watchers: dict[str, set[ServerConnection]] = {}


async def stream_tokens(stub_port: int, model: str) -> AsyncIterator[str]:
    """Yield the content deltas of the stub's chat stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stub_port)
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True}
    ).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: stub\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    while line := await reader.readline():
        if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
            choice = json.loads(line[6:])["choices"][0]
            text = choice["delta"].get("content")
            if text:
                yield text
    writer.close()


async def handler(ws: ServerConnection, stub_port: int) -> None:
    assert ws.request is not None
    kind, _, channel = ws.request.path.lstrip("/").partition("/")
    clients = watchers.setdefault(channel, set())
    if kind == "watch":
        clients.add(ws)
    try:
        async for message in ws:
            model = json.loads(message)["model"]
            seq = 0
            async for text in stream_tokens(stub_port, model):
                seq += 1
                broadcast(clients, orjson.dumps({"type": "token", "data": text, "seq": seq}).decode())
            broadcast(clients, orjson.dumps({"type": "done", "seq": seq + 1}).decode())
    except websockets.ConnectionClosed:
        pass
    finally:
        clients.discard(ws)


async def main(port: int, stub_port: int) -> None:
    async with serve(
        lambda ws: handler(ws, stub_port),
        "127.0.0.1",
        port,
        compression=None,
        max_queue=None,
        ping_interval=None,
    ):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
