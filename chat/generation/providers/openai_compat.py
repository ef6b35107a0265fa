"""Any OpenAI-compatible server (llama.cpp, vLLM, Ollama, LM Studio, OpenAI, …):
/v1/chat/completions in chat mode, /v1/completions in completion mode, streamed as
server-sent events.

Spoken directly over httpx rather than through the ``openai`` SDK: the SDK walks every
message of the request through its type transformer before sending (measured: ~0.1 ms
per message, so a long session's reply started ~50 ms later than a fresh one's) and
builds a typed object per streamed chunk. Here the request body is one ``orjson.dumps``
and each chunk one ``orjson.loads``; the wire format is small and stable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from django.conf import settings

from chat.generation.prompt import PromptImage
from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    ProviderError,
    ToolCallDelta,
    ToolRound,
    cached_client,
    http_failure,
    thinking_level,
)

# Anything else the server says counts as a stop. "function_call" is the finish of the
# legacy (pre-tools) function calling, which a few servers still report.
_FINISH = {"length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}


class OpenAICompatProvider(ModelProvider):
    def _client(self) -> httpx.AsyncClient:
        # Building a client costs milliseconds (an HTTP pool, a TLS context); reuse one
        # per server and event loop.
        return cached_client(
            ("openai", self.config.base_url),
            lambda: httpx.AsyncClient(
                timeout=httpx.Timeout(settings.PROVIDER_TIMEOUT, connect=5.0),
                # As many replies at once as the SDK allowed (httpx's default is 100).
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            ),
        )

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        params, built = request.params, request.built
        body: dict[str, Any] = {
            "model": request.model or "default",
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params["max_tokens"],
            "temperature": params["temperature"],
            "top_p": params["top_p"],
        }
        if built.stop:
            body["stop"] = built.stop[:4]  # the OpenAI API takes at most four
        if self.config.extended_sampling:
            body["top_k"] = params["top_k"]
            body["repeat_penalty"] = params["repeat_penalty"]
        level = thinking_level(params)
        if level is not None and self.config.reasoning_effort:
            body["reasoning_effort"] = level
        if built.mode == "completion":
            body["prompt"] = built.prompt
        else:
            system = [{"role": "system", "content": built.system}] if built.system else []
            body["messages"] = system + [
                {"role": m["role"], "content": wire_content(m["content"])} for m in built.messages
            ]
            for tool_round in request.rounds:
                body["messages"] += round_messages(tool_round)
            if request.tools:
                body["tools"] = [
                    {
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        },
                    }
                    for t in request.tools
                ]
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta | Finish]:
        completion = request.built.mode == "completion"
        url = self.config.base_url.rstrip("/") + ("/completions" if completion else "/chat/completions")
        name = self.config.name
        finish = Finish()
        finished = False
        calls = _Calls(name)
        try:
            # Leaving this block (the reply ended, was interrupted or cancelled) closes
            # the response, so the model server sees the disconnect and stops generating.
            async with self._client().stream(
                "POST", url, content=orjson.dumps(self._body(request)), headers=self._headers()
            ) as response:
                if response.status_code >= 400:
                    raise http_failure(response.status_code, f"{name}: HTTP {response.status_code}")
                async for data in _events(response, name):
                    if data == "[DONE]":
                        break
                    chunk = orjson.loads(data)
                    if not isinstance(chunk, dict):
                        raise _malformed(name, "a chunk that is not an object")
                    if chunk.get("error"):
                        raise ProviderError(f"{name}: {_error_text(chunk['error'])}", retryable=False)
                    usage = chunk.get("usage")
                    if isinstance(usage, dict):
                        finish.prompt_tokens = _count(usage.get("prompt_tokens"))
                        finish.completion_tokens = _count(usage.get("completion_tokens"))
                    choices = chunk.get("choices") or []
                    if not isinstance(choices, list):
                        raise _malformed(name, "choices that are not a list")
                    for choice in choices:
                        text, reasoning, reason, tool_calls = _choice(choice, completion, name)
                        pieces = calls.read(tool_calls)
                        if text or reasoning or pieces:
                            yield Delta(text=text, reasoning=reasoning, tool_calls=pieces)
                        if reason:
                            finished = True
                            finish.reason = _FINISH.get(reason, "stop")
                            if finish.reason == "stop" and calls.seen:
                                # Some servers end a reply that made calls with "stop".
                                finish.reason = "tool_calls"
        except httpx.TimeoutException as exc:
            raise ProviderError(f"{name}: timed out", retryable=True) from exc
        except httpx.TransportError as exc:  # refused, reset, cut off mid-stream
            raise ProviderError(f"{name}: connection failed", retryable=True) from exc
        except httpx.HTTPError as exc:  # a body it cannot decode, a bad redirect…
            raise ProviderError(f"{name}: {type(exc).__name__}", retryable=False) from exc
        except orjson.JSONDecodeError as exc:
            raise _malformed(name, "a chunk that is not JSON") from exc
        if not finished:
            # Servers end every stream with a finish_reason; without one the connection
            # was cut short.
            raise ProviderError(f"{name}: the stream ended early", retryable=True)
        yield finish


# An event's data larger than this is not a token: the server is not speaking the format.
MAX_EVENT_BYTES = 1 << 20


def wire_content(content: str | list[Any]) -> str | list[dict[str, Any]]:
    """A message's content: a string, or (with images) a list of parts: each image a
    data URL in an ``image_url`` part, the text a ``text`` part."""
    if isinstance(content, str):
        return content
    return [
        {"type": "image_url", "image_url": {"url": f"data:{part.mime};base64,{part.data}"}}
        if isinstance(part, PromptImage)
        else {"type": "text", "text": part}
        for part in content
    ]


async def _events(response: httpx.Response, name: str) -> AsyncIterator[str]:
    """The data of each server-sent event: its ``data:`` lines joined by newlines, as the
    SSE format says, sent when the blank line that ends the event arrives."""
    lines: list[str] = []
    size = 0
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines, size = [], 0
            continue
        if line.startswith("data:"):
            data = line[5:]
            lines.append(data[1:] if data.startswith(" ") else data)
            size += len(data)
            if size > MAX_EVENT_BYTES:
                raise _malformed(name, "an event over 1 MiB")
        # Other fields (event:, id:, retry:) and comments (":…") carry nothing we use.
    if lines:
        yield "\n".join(lines)


def round_messages(tool_round: ToolRound) -> list[dict[str, Any]]:
    """One round of the tool loop as the format has it: the assistant's message with its
    calls (arguments as a JSON string), then one ``tool`` message per call."""
    assistant = {
        "role": "assistant",
        "content": tool_round.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
            }
            for call in tool_round.calls
        ],
    }
    # The format has no error flag for a result: the prefix tells the model it failed.
    return [assistant] + [
        {"role": "tool", "tool_call_id": call.id, "content": content if ok else _as_error(content)}
        for call, (ok, content) in zip(tool_round.calls, tool_round.results, strict=True)
    ]


def _choice(choice: Any, completion: bool, name: str) -> tuple[str, str, str, Any]:
    """(text, reasoning, finish reason or "", the delta's tool_calls) of one streamed
    choice; reasoning servers name it either way. A shape the format does not allow is a
    ProviderError."""
    if not isinstance(choice, dict):
        raise _malformed(name, "a choice that is not an object")
    tool_calls = None
    if completion:
        text, reasoning = choice.get("text") or "", ""
    else:
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise _malformed(name, "a delta that is not an object")
        text = delta.get("content") or ""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        tool_calls = delta.get("tool_calls")
    reason = choice.get("finish_reason") or ""
    if not all(isinstance(value, str) for value in (text, reasoning, reason)):
        raise _malformed(name, "text or a finish reason that is not a string")
    return text, reasoning, reason, tool_calls


class _Calls:
    """Reads the streamed ``delta.tool_calls``: ``[{index, id?, type?, function: {name?,
    arguments?}}]``, the first piece of a call with its id and name, the rest with
    fragments of its arguments."""

    def __init__(self, name: str):
        self.name = name
        self.seen = False
        self.last = -1  # the index of the latest call
        self.last_id = ""  # and its id

    def read(self, tool_calls: Any) -> list[ToolCallDelta]:
        if tool_calls is None:
            return []
        if not isinstance(tool_calls, list):
            raise _malformed(self.name, "tool_calls that are not a list")
        pieces = []
        for item in tool_calls:
            if not isinstance(item, dict):
                raise _malformed(self.name, "a tool call that is not an object")
            function = item.get("function") or {}
            if not isinstance(function, dict):
                raise _malformed(self.name, "a tool call function that is not an object")
            call_id = item.get("id") or ""
            name = function.get("name") or ""
            arguments = function.get("arguments") or ""
            if not all(isinstance(value, str) for value in (call_id, name, arguments)):
                raise _malformed(self.name, "a tool call id, name or arguments that is not a string")
            index = item.get("index")
            if index is None:
                # A few servers leave the index out: a piece with a new id starts the next
                # call, one without (or with the same id) continues the latest.
                fresh = self.last < 0 or (call_id and call_id != self.last_id)
                index = self.last + 1 if fresh else self.last
            elif type(index) is not int or index < 0:
                raise _malformed(self.name, "a tool call index that is not a count")
            if index != self.last or call_id:
                self.last_id = call_id
            self.last, self.seen = index, True
            pieces.append(ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments))
        return pieces


def _count(value: Any) -> int | None:
    """A token count as reported, or None (then estimated) when it is not a count."""
    return value if type(value) is int and value >= 0 else None


def _malformed(name: str, what: str) -> ProviderError:
    return ProviderError(f"{name}: the stream sent {what}", retryable=False)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:200]
    return str(error)[:200]


def _as_error(content: str) -> str:
    """A failed call's result as the model reads it: marked as an error (this wire format
    has no flag for it, unlike Anthropic's ``is_error``), once — the loop's own failures
    say "Error: …" already."""
    return content if content.startswith("Error:") else f"Error: {content}"
