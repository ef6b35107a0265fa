"""The hot path's last step: a broadcast frame written straight to the socket.

Through ASGI, every frame to every socket costs a queue hand-off, a wake-up of the
socket's writer task, and the server's ``send`` (a coroutine chain that frames the text
again for each socket). That was most of the CPU per delivery, which the reference
broadcaster (``websockets.broadcast``) spends once per event. When the server is
uvicorn's ``websockets`` implementation, the fan-out writes the frame, framed once per
event per process, to the socket's transport itself. Sockets that negotiated
permessage-deflate (browsers do) get it uncompressed, which RFC 7692 allows (a message
without RSV1 is an uncompressed one, and leaves both compression contexts alone); token
frames are a few dozen bytes, and histories still go out compressed through ``send``.

Order is kept: a socket takes this path only while its own writer has nothing queued
or in flight, and both end up in the same transport buffer. A socket that falls behind
(more than HIGH_WATER_BYTES unsent) goes back to its queue, whose bound and resync rules
apply as before. Any other server (daphne, another implementation) uses the queue.
"""

from __future__ import annotations

import struct
from typing import Any

from websockets.protocol import State

# Unsent bytes above which a socket is "behind": its frames queue again (and its writer
# waits for the buffer to drain), as with the server's own ``send``. websockets' default.
HIGH_WATER_BYTES = 64 * 1024

_last_text: str | None = None
_last_frame = b""


def direct_socket(send: Any) -> Any | None:
    """The server's WebSocket protocol object behind ``send``, when frames may be written
    to it directly (see the module's docstring); None otherwise. Call it once the
    handshake is complete (after a frame went out): extensions are known only then."""
    protocol: Any = getattr(send, "__self__", None)
    is_websockets = any(
        cls.__name__ == "WebSocketCommonProtocol" and cls.__module__ == "websockets.legacy.protocol"
        for cls in type(protocol).__mro__
    )
    if not is_websockets or protocol.transport is None:
        return None
    if any(extension.name != "permessage-deflate" for extension in protocol.extensions):
        return None  # an extension whose frames we would have to shape
    return protocol


def framed(text: str) -> bytes:
    """``text`` as an unmasked WebSocket text frame. The hub hands the same string to
    every socket of the process, so it is framed once per event, not once per socket."""
    global _last_text, _last_frame
    if text is not _last_text:
        payload = text.encode()
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x81, size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x81, 126, size)
        else:
            head = struct.pack("!BBQ", 0x81, 127, size)
        _last_text, _last_frame = text, head + payload
    return _last_frame


def write_now(protocol: Any, text: str) -> bool:
    """Write the frame if the socket is open and keeping up; False: queue it instead."""
    transport = protocol.transport
    if (
        protocol.state is not State.OPEN
        or transport.is_closing()
        or transport.get_write_buffer_size() > HIGH_WATER_BYTES
    ):
        return False
    transport.write(framed(text))
    return True
