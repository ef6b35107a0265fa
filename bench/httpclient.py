"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for the REST and SSE
scenarios: on a shared 2-core machine the client's CPU is taken from the servers it
measures, and this costs a fraction of httpx's per request."""

from __future__ import annotations

import asyncio
import time


class Connection:
    """One keep-alive connection to 127.0.0.1:``port``; reopened when the server closes it."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
        """The request's bytes: this connection's headers, then ``extra`` header lines."""
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        return (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.head}{extra}{length}\r\n"
        ).encode() + body

    async def get(self, path: str) -> tuple[int, bytes]:
        """The status and body of ``GET path``."""
        reader, writer = await self.open()
        writer.write(self.request("GET", path))
        status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = await read_chunked(reader)
        else:
            body = await reader.read()
            self.close()
        if headers.get("connection") == "close":
            self.close()
        return status, body

    async def stream_until(self, data: bytes, first: bytes, last: bytes, timeout: float) -> tuple[int, int]:
        """Send ``data`` (a whole request) and read the streamed answer until ``last``
        appears; the monotonic ns when the request was written and when ``first`` came."""
        reader, writer = await self.open()
        started = time.monotonic_ns()
        writer.write(data)
        seen, first_at = b"", 0
        async with asyncio.timeout(timeout):
            while last not in seen:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"the stream ended early: {seen[:300]!r}")
                seen += chunk
                if b"\r\n\r\n" in seen and not seen.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(seen[:300].decode(errors="replace"))  # a refusal, not a stream
                if not first_at and first in seen:
                    first_at = time.monotonic_ns()
        self.close()  # the rest of the stream is not read: this connection is spent
        return started, first_at


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    return int(lines[0].split()[1]), headers


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return body
        body += await reader.readexactly(size)
        await reader.readline()
