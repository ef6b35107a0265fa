"""The provider interface: a request in, text and reasoning deltas and a finish out."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from chat.generation.prompt import BuiltPrompt

T = TypeVar("T")


@dataclass(frozen=True)
class ProviderConfig:
    """What a generation needs of a Provider row, read once, detached from the ORM."""

    name: str
    kind: str
    base_url: str = ""
    api_key_env: str = ""
    model: str = ""
    context_window: int = 4096
    extended_sampling: bool = True
    reasoning_effort: bool = False  # OpenAI-compatible: send reasoning_effort for thinking
    vision: bool = False  # its model reads images (Provider.sees_images)

    @property
    def api_key(self) -> str:
        """Read at call time from the environment; never stored, never logged."""
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    @property
    def model_label(self) -> str:
        return "demo" if self.kind == "demo" else self.model


@dataclass(frozen=True)
class ToolCall:
    """A complete call the model made: ``arguments`` as the JSON object it sent."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolRound:
    """One round of the tool loop, for the next request: what the model said and
    called, and what each call returned (in the calls' order)."""

    text: str
    calls: tuple[ToolCall, ...]
    results: tuple[tuple[bool, str], ...]  # (ok, content) per call


@dataclass
class GenerationRequest:
    built: BuiltPrompt
    model: str
    params: dict[str, Any]
    last_user_text: str = ""
    # Chat mode with tools: what the model may call (chat.agents.tools.ToolSpec), and
    # the rounds so far, sent after the built prompt's messages.
    tools: list[Any] = field(default_factory=list)
    rounds: list[ToolRound] = field(default_factory=list)


def thinking_level(params: dict[str, Any]) -> str | None:
    """The effort a reply's ``thinking`` asks for ("low", "medium", "high"), None for
    none; true is "medium"."""
    value = params.get("thinking")
    if value is True:
        return "medium"
    return value if value in ("low", "medium", "high") else None


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call as streamed: ``index`` tells parallel calls apart; the
    first piece of a call has its ``id`` and ``name``; ``arguments`` are fragments of
    its JSON, to be joined."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Delta:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


@dataclass
class Finish:
    reason: str = "stop"  # stop | length | tool_calls
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class ProviderError(Exception):
    """The provider failed. ``retryable``: a connection error, a timeout, 429 or 5xx."""

    message: str
    retryable: bool = False
    status: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class ModelProvider:
    """Streams one reply. Implementations must close their upstream connection when the
    iteration is cancelled or closed, so an interrupt reaches the model server."""

    def __init__(self, config: ProviderConfig):
        self.config = config

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta | Finish]:
        raise NotImplementedError


_clients: dict[tuple[Any, ...], Any] = {}


def cached_client(key: tuple[Any, ...], build: Callable[[], T]) -> T:
    """One SDK client per key and event loop (their connection pools are loop-bound)."""
    full_key = (*key, id(asyncio.get_running_loop()))
    client = _clients.get(full_key)
    if client is None:
        client = _clients[full_key] = build()
    return cast(T, client)


def http_failure(status: int | None, message: str) -> ProviderError:
    retryable = status is None or status == 429 or status >= 500
    return ProviderError(message=message, retryable=retryable, status=status)


def sdk_failure(sdk: Any, exc: Exception, provider: str) -> ProviderError:
    """An error of a provider SDK as ours. The openai and anthropic SDKs are generated
    from the same template and share these exception classes."""
    if isinstance(exc, sdk.APIStatusError):
        return http_failure(exc.status_code, f"{provider}: HTTP {exc.status_code}")
    if isinstance(exc, sdk.APITimeoutError):  # before its base, APIConnectionError
        return ProviderError(f"{provider}: timed out", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(f"{provider}: connection failed", retryable=True)
    return ProviderError(f"{provider}: {getattr(exc, 'message', exc)}", retryable=False)
