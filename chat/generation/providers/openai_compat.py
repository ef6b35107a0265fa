"""Any OpenAI-compatible server (llama.cpp, vLLM, Ollama, LM Studio, OpenAI, …) through
the official SDK: /v1/chat/completions in chat mode, /v1/completions in completion mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import openai
from django.conf import settings

from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    ProviderError,
    cached_client,
    sdk_failure,
)

_FINISH = {"length": "length"}  # anything else the server says counts as a stop


class OpenAICompatProvider(ModelProvider):
    def _client(self) -> openai.AsyncOpenAI:
        # Building a client costs milliseconds (an HTTP pool, a TLS context); reuse one
        # per server, key and event loop.
        return cached_client(
            ("openai", self.config.base_url, self.config.api_key),
            lambda: openai.AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=self.config.api_key or "not-needed",
                max_retries=0,  # the engine retries once, then fails over
                timeout=openai.Timeout(settings.PROVIDER_TIMEOUT, connect=5.0),
            ),
        )

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        params = request.params
        arguments: dict[str, Any] = {
            "model": request.model or "default",
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params["max_tokens"],
            "temperature": params["temperature"],
            "top_p": params["top_p"],
        }
        if request.built.stop:
            arguments["stop"] = request.built.stop[:4]  # the OpenAI API takes at most four
        if self.config.extended_sampling:
            arguments["extra_body"] = {
                "top_k": params["top_k"],
                "repeat_penalty": params["repeat_penalty"],
            }
        return arguments

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta | Finish]:
        client = self._client()
        arguments = self._arguments(request)
        built = request.built
        upstream: Any = None
        try:
            if built.mode == "completion":
                upstream = await client.completions.create(prompt=built.prompt, **arguments)
            else:
                messages = (
                    [{"role": "system", "content": built.system}] if built.system else []
                ) + built.messages
                upstream = await client.chat.completions.create(messages=cast(Any, messages), **arguments)
            finish = Finish()
            finished = False
            async for chunk in upstream:
                if chunk.usage is not None:
                    finish.prompt_tokens = chunk.usage.prompt_tokens
                    finish.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if built.mode == "completion":
                        text, reasoning = choice.text or "", ""
                    else:
                        delta = choice.delta
                        extra = delta.model_extra or {}
                        text = delta.content or ""
                        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
                    if text or reasoning:
                        yield Delta(text=text, reasoning=reasoning)
                    if choice.finish_reason:
                        finished = True
                        finish.reason = _FINISH.get(choice.finish_reason, "stop")
            if not finished:
                # Servers end every stream with a finish_reason; without one the
                # connection was cut short.
                raise ProviderError(f"{self.config.name}: the stream ended early", retryable=True)
            yield finish
        except openai.APIError as exc:
            raise sdk_failure(openai, exc, self.config.name) from exc
        finally:
            # On interrupt (cancellation) this closes the HTTP response, so the model
            # server sees the disconnect and stops generating.
            if upstream is not None:
                await upstream.close()
