"""A minimal asyncio WebSocket client for measuring: a thousand of them must cost the
benchmark little CPU, so it parses server frames by hand (unmasked, text only) and
timestamps each message as it arrives.

A *lazy* client (``lazy_s``) reads its socket at most once every ``lazy_s`` seconds or
so: frames wait in the kernel's receive buffer meanwhile, so one read takes several of
them. The server cannot tell (its writes land in that buffer at once, and a few frames
are far from filling it), but the client spends about half the CPU per frame; its
arrival times include the wait, so only prompt clients' latencies mean anything.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
import time
from collections.abc import Callable


class WSClient(asyncio.Protocol):
    """``on_message`` gets each text message and the monotonic ns of its read; with
    ``on_batch``, the text payloads of one read go to it together instead, undecoded
    (cheaper when a lazy client reads many at once)."""

    def __init__(
        self,
        on_message: Callable[[str, int], None],
        lazy_s: float = 0.0,
        on_batch: Callable[[list[bytes], int], None] | None = None,
    ):
        self.on_message = on_message
        self.on_batch = on_batch
        self.lazy_s = lazy_s
        self.buffer = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received(data)
        transport = self.transport
        if self.lazy_s and self.handshaken.done() and transport and not transport.is_closing():
            # Pause for lazy_s on average, randomly, so that lazy clients that got the
            # same frame do not all read again at the same moment.
            transport.pause_reading()
            asyncio.get_running_loop().call_later(self.lazy_s * (0.5 + random.random()), self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.buffer += data
        if not self.handshaken.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[:end]).split(b"\r\n")[0]
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.handshaken.set_exception(ConnectionError(status.decode()))
                return
            self.handshaken.set_result(True)
        texts = self._frames()
        if self.on_batch is not None:
            if texts:
                self.on_batch(texts, now)
            return
        for text in texts:
            self.on_message(text.decode(), now)

    def _frames(self) -> list[bytes]:
        """The text payloads of the whole frames buffered, which leave the buffer;
        pings are answered and a close is noted on the way."""
        buf, at, texts = self.buffer, 0, []
        while len(buf) - at >= 2:
            opcode = buf[at] & 0x0F
            length = buf[at + 1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) - at < 4:
                    break
                length = struct.unpack_from("!H", buf, at + 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) - at < 10:
                    break
                length = struct.unpack_from("!Q", buf, at + 2)[0]
                offset = 10
            end = at + offset + length
            if len(buf) < end:
                break
            payload = bytes(buf[at + offset : end])
            at = end
            if opcode == 1:
                texts.append(payload)
            elif opcode == 9:  # ping: answer with pong
                self._send_frame(0xA, payload)
            elif opcode == 8:
                self.close_code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                if not self.closed.done():
                    self.closed.set_result(self.close_code)
        del buf[:at]
        return texts

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(header + mask + masked)

    def send_text(self, text: str) -> None:
        self._send_frame(1, text.encode())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: Callable[[str, int], None],
    headers: dict[str, str] | None = None,
    lazy_s: float = 0.0,
    on_batch: Callable[[list[bytes], int], None] | None = None,
) -> WSClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: WSClient(on_message, lazy_s, on_batch), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Origin: http://{host}:{port}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    assert client.transport is not None
    client.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await asyncio.wait_for(client.handshaken, 30)
    return client
