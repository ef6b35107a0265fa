"""Make daphne answer an oversized WebSocket message with close code 1009.

daphne hands autobahn a maximum message size (--websocket-max-message-size), but leaves
autobahn's ``failByDrop`` on, so a client that sends too much sees the TCP connection
dropped with no close frame. The protocol promises 1009; autobahn sends it once
failByDrop is off. Imported by chatsite.asgi, before daphne builds its factory.
"""

from __future__ import annotations

from typing import Any

from daphne import server as daphne_server
from daphne.ws_protocol import WebSocketFactory


class ClosingWebSocketFactory(WebSocketFactory):  # type: ignore[misc]  # an untyped base class (no stubs)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    def setProtocolOptions(self, **options: Any) -> None:  # noqa: N802 (autobahn's name)
        options.setdefault("failByDrop", False)
        super().setProtocolOptions(**options)


def install() -> None:
    daphne_server.WebSocketFactory = ClosingWebSocketFactory
