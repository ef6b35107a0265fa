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

from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    ProviderError,
    cached_client,
    http_failure,
)

_FINISH = {"length": "length"}  # anything else the server says counts as a stop


class OpenAICompatProvider(ModelProvider):
    def _client(self) -> httpx.AsyncClient:
        # Building a client costs milliseconds (an HTTP pool, a TLS context); reuse one
        # per server and event loop.
        return cached_client(
            ("openai", self.config.base_url),
            lambda: httpx.AsyncClient(timeout=httpx.Timeout(settings.PROVIDER_TIMEOUT, connect=5.0)),
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
        if built.mode == "completion":
            body["prompt"] = built.prompt
        else:
            system = [{"role": "system", "content": built.system}] if built.system else []
            body["messages"] = system + built.messages
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
        try:
            # Leaving this block (the reply ended, was interrupted or cancelled) closes
            # the response, so the model server sees the disconnect and stops generating.
            async with self._client().stream(
                "POST", url, content=orjson.dumps(self._body(request)), headers=self._headers()
            ) as response:
                if response.status_code >= 400:
                    raise http_failure(response.status_code, f"{name}: HTTP {response.status_code}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, "event:" lines
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = orjson.loads(data)
                    if not isinstance(chunk, dict):
                        raise ProviderError(f"{name}: the stream sent something other than an object")
                    if chunk.get("error"):
                        raise ProviderError(f"{name}: {_error_text(chunk['error'])}", retryable=False)
                    usage = chunk.get("usage")
                    if isinstance(usage, dict):
                        finish.prompt_tokens = usage.get("prompt_tokens")
                        finish.completion_tokens = usage.get("completion_tokens")
                    for choice in chunk.get("choices") or ():
                        text, reasoning = _choice_text(choice, completion)
                        if text or reasoning:
                            yield Delta(text=text, reasoning=reasoning)
                        if choice.get("finish_reason"):
                            finished = True
                            finish.reason = _FINISH.get(choice["finish_reason"], "stop")
        except httpx.TimeoutException as exc:
            raise ProviderError(f"{name}: timed out", retryable=True) from exc
        except httpx.TransportError as exc:  # refused, reset, cut off mid-stream
            raise ProviderError(f"{name}: connection failed", retryable=True) from exc
        except orjson.JSONDecodeError as exc:
            raise ProviderError(f"{name}: the stream is not valid JSON", retryable=False) from exc
        if not finished:
            # Servers end every stream with a finish_reason; without one the connection
            # was cut short.
            raise ProviderError(f"{name}: the stream ended early", retryable=True)
        yield finish


def _choice_text(choice: dict[str, Any], completion: bool) -> tuple[str, str]:
    """(text, reasoning) of one streamed choice; reasoning servers name it either way."""
    if completion:
        return choice.get("text") or "", ""
    delta = choice.get("delta") or {}
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    return delta.get("content") or "", reasoning


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:200]
    return str(error)[:200]
