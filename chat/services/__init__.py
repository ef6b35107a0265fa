"""Writes, one verb each. Only these (and the generation engine) publish events."""

from chat.services.channels import (
    create_channel,
    delete_channel,
    rotate_watch_key,
    update_channel,
    update_channel_settings,
)
from chat.services.conversation import inject, interrupt, post_message, regenerate, reset
from chat.services.instructions import create_instruction, delete_instruction, update_instruction
from chat.services.moderation import (
    add_member,
    ban_user,
    delete_turn,
    hide_turn,
    interrupt_generation,
    purge_session,
    remove_member,
    set_locked,
    set_muted,
    unban_user,
    unhide_turn,
)
from chat.services.preferences import set_preferences
from chat.services.prompts import prepare_prompt_suggestions
from chat.services.sessions import (
    bulk_delete_sessions,
    delete_session,
    purge_expired_sessions,
    save_generated_title,
    truncate_session,
    update_session,
)
from chat.services.tool_approvals import decide_tool_call

__all__ = [
    "add_member",
    "ban_user",
    "bulk_delete_sessions",
    "create_channel",
    "create_instruction",
    "decide_tool_call",
    "delete_channel",
    "delete_instruction",
    "delete_session",
    "delete_turn",
    "hide_turn",
    "inject",
    "interrupt",
    "interrupt_generation",
    "post_message",
    "prepare_prompt_suggestions",
    "purge_expired_sessions",
    "purge_session",
    "regenerate",
    "remove_member",
    "reset",
    "rotate_watch_key",
    "save_generated_title",
    "set_locked",
    "set_muted",
    "set_preferences",
    "truncate_session",
    "unban_user",
    "unhide_turn",
    "update_channel",
    "update_channel_settings",
    "update_instruction",
    "update_session",
]
