"""Model providers: one small interface (base.py), one module per wire format."""

from __future__ import annotations

from typing import Any

from chat.generation.providers.base import ModelProvider, ProviderConfig, thinking_level

# Extended thinking's token budget per effort (the API's least is 1024), which Anthropic
# is asked for on top of max_tokens (chat/generation/providers/anthropic.py).
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}


def max_output_tokens(kind: str, params: dict[str, Any]) -> int:
    """The most completion tokens a reply with ``params`` may cost at a provider of this
    kind: max_tokens, plus Anthropic's thinking budget (asked for besides the answer's
    max_tokens). What a credit hold sets aside for the answer (chat/credits/holds.py)."""
    extra = 0
    level = thinking_level(params)
    if kind == "anthropic" and level is not None:
        extra = THINKING_BUDGET[level]
    return int(params["max_tokens"]) + extra


def make_provider(config: ProviderConfig) -> ModelProvider:
    """The provider implementation for a Provider row's kind."""
    if config.kind == "openai_compat":
        from chat.generation.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(config)
    if config.kind == "anthropic":
        from chat.generation.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    from chat.generation.providers.demo import DemoProvider

    return DemoProvider(config)
