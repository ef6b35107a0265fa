"""Prompt suggestions: who may ask, and what it costs."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from chat import limits
from chat.credits import holds
from chat.errors import ServiceError
from chat.generation.providers.base import ProviderConfig
from chat.generation.tasks import task_config
from chat.models import Channel


def prepare_prompt_suggestions(*, user: Any, channel: Channel | None, text: str) -> ProviderConfig:
    """Check and count a request for prompt suggestions (one message against the
    caller's limits) and return the task model that will answer it."""
    if not (user and user.is_authenticated and user.is_active):
        raise ServiceError("auth_required", "Log in to get prompt suggestions.")
    if len(text) > settings.MAX_MESSAGE_CHARS:
        raise ServiceError("too_long", f"Texts are limited to {settings.MAX_MESSAGE_CHARS} characters.")
    config = task_config(channel)
    holds.require_some_credit(user)  # not billed, but not free once credits are spent
    limits.check_and_count_message(user)
    return config
