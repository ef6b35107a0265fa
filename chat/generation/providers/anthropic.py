"""Anthropic's Messages API through the official SDK; chat mode, thinking kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
from django.conf import settings

from chat.generation.prompt import PromptImage
from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    ProviderError,
    cached_client,
    sdk_failure,
    thinking_level,
)

# Extended thinking's token budget per effort (the API's least is 1024).
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}


def wire_content(content: str | list[Any]) -> str | list[dict[str, Any]]:
    """A message's content: a string, or (with images) a list of blocks: each image a
    base64 ``image`` block, the text a ``text`` block."""
    if isinstance(content, str):
        return content
    return [
        {"type": "image", "source": {"type": "base64", "media_type": part.mime, "data": part.data}}
        if isinstance(part, PromptImage)
        else {"type": "text", "text": part}
        for part in content
    ]


class AnthropicProvider(ModelProvider):
    def _client(self) -> anthropic.AsyncAnthropic:
        kwargs: dict[str, Any] = {
            "api_key": self.config.api_key or "not-set",
            "max_retries": 0,
            "timeout": anthropic.Timeout(settings.PROVIDER_TIMEOUT, connect=5.0),
        }
        if self.config.base_url:
            kwargs["base_url"] = self.config.base_url
        return cached_client(
            ("anthropic", self.config.base_url, self.config.api_key),
            lambda: anthropic.AsyncAnthropic(**kwargs),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta | Finish]:
        client = self._client()
        params = request.params
        built = request.built
        arguments: dict[str, Any] = {
            "model": request.model,
            "max_tokens": params["max_tokens"],
            "messages": [{"role": m["role"], "content": wire_content(m["content"])} for m in built.messages]
            or [{"role": "user", "content": "…"}],
            "stream": True,
        }
        # The current Messages API (SDK 2.x) takes no temperature, top_p or top_k: the
        # model's own sampling applies; max_tokens and stop sequences are honoured.
        if built.system:
            arguments["system"] = built.system
        if built.stop:
            arguments["stop_sequences"] = built.stop
        level = thinking_level(params)
        if level is not None:
            # max_tokens must exceed the budget, and covers thinking and answer alike: the
            # answer keeps the max_tokens it was given. (Thinking also refuses a changed
            # temperature or top_k; neither is sent.)
            budget = THINKING_BUDGET[level]
            arguments["thinking"] = {"type": "enabled", "budget_tokens": budget}
            arguments["max_tokens"] = params["max_tokens"] + budget
        upstream: Any = None
        try:
            upstream = await client.messages.create(**arguments)
            finish = Finish()
            stopped = False
            async for event in upstream:
                if event.type == "message_start":
                    finish.prompt_tokens = event.message.usage.input_tokens
                elif event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        yield Delta(text=delta.text)
                    elif delta.type == "thinking_delta":
                        yield Delta(reasoning=delta.thinking)
                elif event.type == "message_delta":
                    finish.completion_tokens = event.usage.output_tokens
                    if event.delta.stop_reason == "max_tokens":
                        finish.reason = "length"
                elif event.type == "message_stop":
                    stopped = True
            if not stopped:
                raise ProviderError(f"{self.config.name}: the stream ended early", retryable=True)
            yield finish
        except anthropic.APIError as exc:
            raise sdk_failure(anthropic, exc, self.config.name) from exc
        finally:
            if upstream is not None:
                await upstream.close()
