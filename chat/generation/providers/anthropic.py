"""Anthropic's Messages API through the official SDK; chat mode, thinking kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
from django.conf import settings

from chat.generation.prompt import PromptImage
from chat.generation.providers import THINKING_BUDGET
from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    ProviderError,
    ToolCallDelta,
    ToolRound,
    cached_client,
    sdk_failure,
    thinking_level,
)


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


def round_messages(tool_round: ToolRound) -> list[dict[str, Any]]:
    """One round of the tool loop as the Messages API has it: the assistant's text and
    ``tool_use`` blocks, then a user message with a ``tool_result`` per call."""
    text = [{"type": "text", "text": tool_round.text}] if tool_round.text else []  # no empty blocks
    uses = [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in tool_round.calls]
    results = [
        {"type": "tool_result", "tool_use_id": call.id, "content": content, "is_error": not ok}
        for call, (ok, content) in zip(tool_round.calls, tool_round.results, strict=True)
    ]
    return [{"role": "assistant", "content": text + uses}, {"role": "user", "content": results}]


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
        for tool_round in request.rounds:
            arguments["messages"] += round_messages(tool_round)
        if request.tools:
            arguments["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        # The current Messages API (SDK 2.x) takes no temperature, top_p or top_k: the
        # model's own sampling applies; max_tokens and stop sequences are honoured.
        if built.system:
            arguments["system"] = built.system
        if built.stop:
            arguments["stop_sequences"] = built.stop
        level = thinking_level(params)
        # With thinking on, the API wants each round's thinking blocks (with their
        # signatures) sent back before its tool_use blocks, and thinking cannot be
        # switched off in the middle of a tool loop; rounds do not keep those blocks, so
        # a request that offers tools goes without thinking (docs/architecture.md).
        if level is not None and not request.tools:
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
            stopped = called = False
            async for event in upstream:
                if event.type == "message_start":
                    finish.prompt_tokens = event.message.usage.input_tokens
                elif event.type == "content_block_start":
                    if getattr(getattr(event, "content_block", None), "type", None) == "tool_use":
                        called = True
                        yield Delta(tool_calls=[self._call_start(event)])
                elif event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        yield Delta(text=delta.text)
                    elif delta.type == "thinking_delta":
                        yield Delta(reasoning=delta.thinking)
                    elif delta.type == "input_json_delta":
                        yield Delta(tool_calls=[self._call_piece(event)])
                elif event.type == "message_delta":
                    finish.completion_tokens = event.usage.output_tokens
                    if event.delta.stop_reason == "max_tokens":
                        finish.reason = "length"
                    elif event.delta.stop_reason == "tool_use" or called:
                        finish.reason = "tool_calls"
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

    # The SDK builds events without validating them: a server that sends the wrong shape
    # gives attributes of any type, or none. Such a stream is a ProviderError.

    def _call_start(self, event: Any) -> ToolCallDelta:
        block = event.content_block
        index, call_id, name = (
            getattr(event, "index", None),
            getattr(block, "id", None),
            getattr(block, "name", None),
        )
        if type(index) is not int or index < 0 or not isinstance(call_id, str) or not isinstance(name, str):
            raise self._malformed("a tool_use block without a valid index, id or name")
        if not call_id or not name:  # the round sent back names the call by its id
            raise self._malformed("a tool_use block without a valid index, id or name")
        return ToolCallDelta(index=index, id=call_id, name=name)

    def _call_piece(self, event: Any) -> ToolCallDelta:
        index, fragment = getattr(event, "index", None), getattr(event.delta, "partial_json", None)
        if type(index) is not int or index < 0 or not isinstance(fragment, str):
            raise self._malformed("an input_json_delta without a valid index or partial_json")
        return ToolCallDelta(index=index, arguments=fragment)

    def _malformed(self, what: str) -> ProviderError:
        return ProviderError(f"{self.config.name}: the stream sent {what}", retryable=False)
