"""A user's own defaults: the provider/model and instruction used where a channel lets
them (chat/choices.py)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from chat.choices import usable_instruction
from chat.errors import ServiceError
from chat.models import Provider, UserPreference


def set_preferences(*, user: User, changes: dict[str, Any]) -> UserPreference:
    """Change the user's defaults: ``provider`` (an enabled provider's name, or "" for
    none), ``model`` (one it serves, or "" for its default), ``instruction`` (an id the
    user may use, or null); and their memory switches, ``memory_enabled`` and
    ``memory_in_shared_rooms`` (chat/agents/memory.py)."""
    preference, _ = UserPreference.objects.get_or_create(user=user)
    provider_name = changes.get("provider", preference.provider)
    # A new provider without a model: its default, not the old provider's model.
    kept_model = preference.model if provider_name == preference.provider else ""
    model = changes.get("model", kept_model)
    # (Only a change of provider or model is checked: a provider disabled since it was
    # chosen must not stop the user from changing anything else.)
    if provider_name and ("provider" in changes or "model" in changes):
        provider = Provider.objects.filter(name=provider_name, enabled=True).first()
        if provider is None:
            raise ServiceError(
                "invalid", "No enabled provider has this name.", fields={"provider": ["No such provider."]}
            )
        served = provider.served_models
        if model and model not in served:
            raise ServiceError(
                "invalid", f"{provider_name} serves: {', '.join(served)}.", fields={"model": ["Not served."]}
            )
    elif model and ("provider" in changes or "model" in changes):
        raise ServiceError("invalid", "Choose a provider for the model.", fields={"provider": ["Required."]})
    if "instruction" in changes:
        wanted = changes["instruction"]
        if wanted is not None and usable_instruction(user, wanted) is None:
            raise ServiceError(
                "invalid", "No such instruction.", fields={"instruction": ["No such instruction."]}
            )
        preference.instruction_id = wanted
    for switch in ("memory_enabled", "memory_in_shared_rooms"):
        if switch in changes:
            setattr(preference, switch, bool(changes[switch]))
    preference.provider, preference.model = provider_name, model
    preference.save()
    return preference
