"""Small jobs for the task model: session titles (chat/generation/titles.py) and prompt
suggestions (chat/generation/suggestions.py).

The task model is the provider and model an admin chose for small jobs
(SiteSettings.task_provider / task_model); without one, the channel's own provider, and
without a channel the first enabled provider. A job is one short chat completion through
the same provider classes a reply uses, streamed, and charged to nobody's tokens: a job
that needs counting counts itself as a message (chat/limits.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

from chat.framing import effective_params
from chat.generation.prompt import BuiltPrompt
from chat.generation.providers import make_provider
from chat.generation.providers.base import Delta, Finish, GenerationRequest, ProviderConfig
from chat.generation.records import DEMO_CONFIG, provider_chain, provider_config
from chat.models import Channel, Provider, SiteSettings


def task_config(channel: Channel | None) -> ProviderConfig:
    """The task model (synchronous: reads the database)."""
    site = SiteSettings.objects.select_related("task_provider").filter(pk=1).first()
    chosen = site.task_provider if site is not None else None
    if chosen is not None and chosen.enabled:
        return provider_config(chosen, site.task_model if site is not None else "")
    if channel is not None:
        return provider_chain(channel, effective_params(channel.params))[0]
    first = Provider.objects.filter(enabled=True).order_by("priority", "name").first()
    return provider_config(first) if first is not None else DEMO_CONFIG


async def complete(
    config: ProviderConfig, *, system: str, user: str, max_tokens: int, temperature: float = 0.3
) -> AsyncGenerator[str, None]:
    """The text of one short chat completion, as it streams. Raises ProviderError as a
    reply's stream does."""
    built = BuiltPrompt(mode="chat", system=system, messages=[{"role": "user", "content": user}])
    params = {**effective_params({}), "max_tokens": max_tokens, "temperature": temperature}
    request = GenerationRequest(built=built, model=config.model, params=params, last_user_text=user)
    # Every provider's stream is an async generator: closing it closes the connection.
    stream = cast(AsyncGenerator[Delta | Finish, None], make_provider(config).stream(request))
    try:
        async for item in stream:
            if isinstance(item, Delta) and item.text:
                yield item.text
    finally:
        await stream.aclose()
