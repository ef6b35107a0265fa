"""Model providers: one small interface (base.py), one module per wire format."""

from __future__ import annotations

from chat.generation.providers.base import ModelProvider, ProviderConfig


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
