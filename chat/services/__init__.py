"""Writes, one verb each. Only these (and the generation engine) publish events."""

from chat.services.channels import (
    create_channel,
    delete_channel,
    rotate_watch_key,
    update_channel,
    update_channel_settings,
)
from chat.services.conversation import inject, interrupt, post_message, regenerate, reset
from chat.services.moderation import ban_user
from chat.services.sessions import bulk_delete_sessions, delete_session, truncate_session

__all__ = [
    "ban_user",
    "bulk_delete_sessions",
    "create_channel",
    "delete_channel",
    "delete_session",
    "inject",
    "interrupt",
    "post_message",
    "regenerate",
    "reset",
    "rotate_watch_key",
    "truncate_session",
    "update_channel",
    "update_channel_settings",
]
