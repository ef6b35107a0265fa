"""Broadcast events: built here, numbered in Redis, logged for replay, published to the
channel-layer group of the channel. Only services and the generation engine call this.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal, TypedDict, cast

import orjson
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chat.realtime import background, store

log = logging.getLogger(__name__)

# How the generation snapshot in Redis follows each event type.
GEN_OPS = {"thinking": "start", "token": "text", "reasoning": "reasoning", "done": "end"}


# --- the events, one builder each ------------------------------------------------------
# Nothing else builds an event: a new event type gets its TypedDict and builder here, and
# its row in docs/protocol.md. ``channel`` and ``seq`` are added when it is published.


class TurnEvent(TypedDict):
    type: Literal["turn"]
    id: int
    # …and every other field of the protocol's Turn object (Turn.to_dict()).


class ThinkingEvent(TypedDict):
    type: Literal["thinking"]
    label: str
    turn_id: int


class TextEvent(TypedDict):
    type: Literal["token", "reasoning"]
    data: str
    turn_id: int


class DoneEvent(TypedDict):
    type: Literal["done"]
    turn_id: int
    finish_reason: str
    usage: dict[str, Any]
    timings: dict[str, Any]


class InterruptedEvent(TypedDict):
    type: Literal["interrupted"]
    turn_id: int


class TurnRemovedEvent(TypedDict):
    type: Literal["turn_removed"]
    id: int


class ResetEvent(TypedDict):
    type: Literal["reset"]
    session: str


class SessionUpdatedEvent(TypedDict):
    type: Literal["session_updated"]
    session: str
    title: str
    status: str


class AttachmentUpdatedEvent(TypedDict):
    type: Literal["attachment_updated"]
    id: str
    status: str
    progress: int
    error: str | None


class ChannelUpdatedEvent(TypedDict):
    type: Literal["channel_updated"]
    framing: dict[str, Any]
    params: dict[str, Any]
    member_params: dict[str, Any]
    instruction: int | None
    locked: bool
    visibility: str
    knowledge_base_ids: list[str]
    # Issue 17: selectors.agent_settings
    tools: list[str]
    tools_requiring_approval: list[str]
    tools_apply: bool
    agent: str | None
    agent_choice: str
    memory: bool


class KnowledgeDocumentState(TypedDict):
    id: str
    name: str
    status: str
    progress: int
    error: str | None
    chunks: int


class KnowledgeBaseUpdatedEvent(TypedDict):
    type: Literal["knowledge_base_updated"]
    knowledge_base: str
    document: KnowledgeDocumentState | None


class SourcesEvent(TypedDict):
    type: Literal["sources"]
    turn_id: int
    sources: list[dict[str, Any]]


class ToolCallEvent(TypedDict, total=False):
    """A tool call: while its arguments stream, pieces (``arguments_delta``); once
    complete, and whenever its state changes, the whole Step (chat/agents/steps.py)."""

    type: Literal["tool_call"]
    turn_id: int
    call_id: str
    name: str
    arguments_delta: str


class ToolResultEvent(TypedDict, total=False):
    type: Literal["tool_result"]
    turn_id: int
    call_id: str


class StatusEvent(TypedDict):
    type: Literal["status"]
    turn_id: int
    text: str


class ToolApprovalEvent(TypedDict):
    type: Literal["tool_approval"]
    turn_id: int
    call_id: str
    name: str
    arguments: dict[str, Any]


class CompactedEvent(TypedDict):
    type: Literal["compacted"]
    session: str
    checkpoint: dict[str, Any]


class ErrorEvent(TypedDict, total=False):
    type: Literal["error"]
    code: str
    text: str
    channel: str
    fields: Any
    retry_after: int


class PresenceEvent(TypedDict):
    type: Literal["presence"]
    watchers: int
    participants: int
    channel: str


class PongEvent(TypedDict):
    type: Literal["pong"]
    ts: float


def turn_event(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn was added or finished; ``turn`` is Turn.to_dict() (no substrate)."""
    return {"type": "turn", **turn}


def thinking_event(turn_id: int, label: str) -> ThinkingEvent:
    return {"type": "thinking", "label": label, "turn_id": turn_id}


def token_event(turn_id: int, data: str) -> TextEvent:
    return {"type": "token", "data": data, "turn_id": turn_id}


def reasoning_event(turn_id: int, data: str) -> TextEvent:
    return {"type": "reasoning", "data": data, "turn_id": turn_id}


def done_event(turn_id: int, finish_reason: str, usage: dict[str, Any], timings: dict[str, Any]) -> DoneEvent:
    return {
        "type": "done",
        "turn_id": turn_id,
        "finish_reason": finish_reason,
        "usage": usage,
        "timings": timings,
    }


def interrupted_event(turn_id: int) -> InterruptedEvent:
    return {"type": "interrupted", "turn_id": turn_id}


def turn_removed_event(turn_id: int) -> TurnRemovedEvent:
    return {"type": "turn_removed", "id": turn_id}


def reset_event(session_id: Any) -> ResetEvent:
    return {"type": "reset", "session": str(session_id)}


def session_updated_event(session_id: Any, *, title: str, status: str) -> SessionUpdatedEvent:
    """A session of the channel was renamed (by a person or the task model), archived,
    deleted or reopened."""
    return {"type": "session_updated", "session": str(session_id), "title": title, "status": status}


def attachment_updated_event(upload: Any) -> AttachmentUpdatedEvent:
    """An upload of the channel moved on: uploaded -> processing -> ready | failed
    (``upload`` is a chat.models.Upload)."""
    return {
        "type": "attachment_updated",
        "id": str(upload.pk),
        "status": upload.status,
        "progress": upload.progress,
        "error": upload.error or None,
    }


def channel_updated_event(
    *,
    framing: dict[str, Any],
    params: dict[str, Any],
    member_params: dict[str, Any],
    instruction: int | None,
    locked: bool,
    visibility: str,
    knowledge_base_ids: list[str],
    tools: list[str],
    tools_requiring_approval: list[str],
    tools_apply: bool,
    agent: str | None,
    agent_choice: str,
    memory: bool,
) -> ChannelUpdatedEvent:
    return {
        "type": "channel_updated",
        "framing": framing,
        "params": params,
        "member_params": member_params,
        "instruction": instruction,
        "locked": locked,
        "visibility": visibility,
        "knowledge_base_ids": knowledge_base_ids,
        "tools": tools,
        "tools_requiring_approval": tools_requiring_approval,
        "tools_apply": tools_apply,
        "agent": agent,
        "agent_choice": agent_choice,
        "memory": memory,
    }


def knowledge_base_updated_event(base: Any, document: Any = None) -> KnowledgeBaseUpdatedEvent:
    """A channel's base changed: created, renamed, deleted, or one of its documents was
    added, moved on while indexed (progress), or deleted (``document`` is a
    chat.models.KnowledgeDocument, or None for a change of the base itself). Clients
    read the base again (``GET /api/knowledge-bases/{id}``; a 404: it was deleted)."""
    state = cast(KnowledgeDocumentState, document.to_state()) if document is not None else None
    return {"type": "knowledge_base_updated", "knowledge_base": str(base.pk), "document": state}


def sources_event(turn_id: int, sources: list[dict[str, Any]]) -> SourcesEvent:
    """The passages a reply is given, before its first token (the bot turn's
    ``sources``)."""
    return {"type": "sources", "turn_id": turn_id, "sources": sources}


def tool_call_delta_event(turn_id: int, call_id: str, name: str, delta: str) -> ToolCallEvent:
    """A piece of a call's arguments as the model streams it (JSON text, to append)."""
    return {
        "type": "tool_call",
        "turn_id": turn_id,
        "call_id": call_id,
        "name": name,
        "arguments_delta": delta,
    }


def tool_call_event(turn_id: int, step: dict[str, Any]) -> dict[str, Any]:
    """A call, complete, in its current state: the public Step without its result."""
    fields = {k: v for k, v in step.items() if k not in ("content", "ok", "duration_ms", "truncated")}
    return {"type": "tool_call", "turn_id": turn_id, **fields}


def tool_result_event(turn_id: int, step: dict[str, Any]) -> dict[str, Any]:
    """What a call returned (or why it did not run): the public Step's result fields."""
    keys = ("call_id", "status", "ok", "content", "truncated", "duration_ms", "redacted", "approved_by")
    return {"type": "tool_result", "turn_id": turn_id, **{k: step.get(k) for k in keys}}


def status_event(turn_id: int, text: str) -> StatusEvent:
    """What the reply is doing when it is not writing: "searching the web…"."""
    return {"type": "status", "turn_id": turn_id, "text": text}


def tool_approval_event(turn_id: int, step: dict[str, Any]) -> ToolApprovalEvent:
    """A call waits for the approval of the message's author or the channel's owner."""
    return {
        "type": "tool_approval",
        "turn_id": turn_id,
        "call_id": step["call_id"],
        "name": step["name"],
        "arguments": step["arguments"],
    }


def compacted_event(checkpoint: Any) -> CompactedEvent:
    """The session's older turns were summarised (``checkpoint`` is a
    chat.models.Checkpoint): screens show it folded after its ``through_turn_id``."""
    return {"type": "compacted", "session": str(checkpoint.session_id), "checkpoint": checkpoint.to_dict()}


def error_event(
    code: str,
    text: str,
    *,
    channel: str | None = None,
    fields: Any = None,
    retry_after: int | None = None,
) -> ErrorEvent:
    """To the sender only, or broadcast for a generation's failure (``provider_error``)."""
    event: ErrorEvent = {"type": "error", "code": code, "text": text}
    if channel is not None:
        event["channel"] = channel
    if fields is not None:
        event["fields"] = fields
    if retry_after is not None:
        event["retry_after"] = retry_after
    return event


def presence_event(channel: str, watchers: int, participants: int) -> PresenceEvent:
    return {"type": "presence", "watchers": watchers, "participants": participants, "channel": channel}


def pong_event(ts: float) -> PongEvent:
    return {"type": "pong", "ts": ts}


def turn_detail_event(turn: dict[str, Any], channel: str) -> dict[str, Any]:
    """One turn with its substrate, to the socket that asked (``get_turn``)."""
    return {"type": "turn_detail", **turn, "channel": channel}


def history_event(
    *,
    channel: str,
    mode: str,
    state: dict[str, Any],
    generating: dict[str, Any] | None,
    seq: int,
    epoch: str,
    watchers: int,
) -> dict[str, Any]:
    """A connection's full state; ``state`` is selectors.history_state()."""
    return {
        "type": "history",
        "channel": channel,
        "mode": mode,
        **state,
        "generating": generating,
        "seq": seq,
        "epoch": epoch,
        "watchers": watchers,
    }


# --- publishing ------------------------------------------------------------------------


class LockLostError(Exception):
    """A reply's event was refused: the reply no longer holds its channel's lock."""


def encode_head(event: dict[str, Any]) -> str:
    """The event as JSON without its closing brace; the publish script appends the seq."""
    return orjson.dumps(event).decode()[:-1]


async def apublish(
    channel_id: int,
    channel_name: str,
    event: Mapping[str, Any],
    *,
    redact: bool = False,
    owner: str | None = None,
) -> int:
    """Number, log and broadcast one event; returns its seq. Runs on any event loop.

    ``redact``: the event takes text out of the transcript (a turn hidden, deleted,
    truncated; a session deleted). The replay log is dropped in the same script, so no
    replay (``get_history`` ``since``, ``Last-Event-ID``) from before this event can
    serve what ``history`` now hides: such requests get a fresh ``history`` instead.

    ``owner``: the event is a reply's, published only while that owner holds the
    channel's generation lock; LockLostError otherwise."""
    event = {**event, "channel": channel_name}
    event_type = event["type"]
    op = GEN_OPS.get(event_type, "")
    arg = ""
    if op in ("start", "end"):
        arg = str(event["turn_id"])
    elif op in ("text", "reasoning"):
        arg = event["data"]
    numbered = await store.async_redis().eval(
        store.PUBLISH_SCRIPT,
        8,
        *store.channel_keys(channel_id),
        *store.global_keys(),
        store.key(channel_id, "lock"),
        encode_head(event),
        settings.REPLAY_BUFFER_EVENTS,
        op,
        arg,
        "1" if redact else "0",
        uuid.uuid4().hex,
        owner or "",
    )
    if numbered is None:
        raise LockLostError(f"channel {channel_id}: the lock is no longer {owner}")
    seq, frame, access, epoch = numbered
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(
        store.group_name(channel_id),
        {
            "type": "chan.event",
            "channel_id": channel_id,
            "seq": int(seq),
            "frame": frame,
            "access": int(access),
            "epoch": epoch,
        },
    )
    return int(seq)


def publish(channel_id: int, channel_name: str, event: Mapping[str, Any], *, redact: bool = False) -> int:
    """Synchronous publish, through the background loop (reuses its Redis connections)."""
    return background.run(apublish(channel_id, channel_name, event, redact=redact))


def publish_on_commit(
    channel_id: int, channel_name: str, event: Mapping[str, Any], *, redact: bool = False
) -> None:
    """Publish once the current transaction commits, so nobody sees a rolled-back row.
    A redaction also drops the replay log at once, before the commit: with Redis out of
    reach the change fails (503) instead of committing while the log still holds what it
    takes away."""
    if redact:
        store.forget_log_sync(channel_id)

    def send() -> None:
        try:
            publish(channel_id, channel_name, event, redact=redact)
        except Exception:  # the row is saved; clients heal the gap from history
            log.exception("could not publish %s for channel %s", event.get("type"), channel_name)
            if redact:  # still, no replay may serve what was taken away
                with contextlib.suppress(Exception):
                    store.forget_log_sync(channel_id)

    transaction.on_commit(send)


def redact_on_commit(channel_id: int) -> None:
    """Text left the transcript without an event (an archived session's turn, a session
    that was not the active one): drop the replay log once the change commits, so no
    replay serves it. Clients that ask for one get a fresh ``history``. Dropped before
    the commit as well: with Redis out of reach, the change fails instead."""
    store.forget_log_sync(channel_id)

    def forget() -> None:
        try:
            store.forget_log_sync(channel_id)
        except Exception:
            log.exception("could not drop the replay log of channel %s", channel_id)

    transaction.on_commit(forget)


def access_changed_on_commit(channel_id: int | None) -> None:
    """Who may see a channel (None: any channel) changed. Once the change commits, every
    process rechecks its connections of that channel and closes those no longer allowed
    (4003 for sockets; SSE streams end). Events numbered after the change carry the new
    access version, so no process delivers one before it has rechecked. The version is
    bumped before the commit too: with Redis out of reach the change fails (503) instead
    of leaving every process unaware of it."""
    store.sync_redis().incr(store.global_keys()[0])

    async def tell() -> None:
        await store.bump_access()
        await send_group(store.CONTROL_GROUP, {"type": "ctl.recheck", "channel_id": channel_id})

    def run() -> None:
        try:
            background.run(tell())
        except Exception:
            log.exception("could not announce an access change of channel %s", channel_id)

    transaction.on_commit(run)


def resync_on_commit(channel_id: int) -> None:
    """Once the change commits, give every open connection of the channel a fresh
    ``history``: for a change no event describes in full (a reopened session's turns).
    robust: the change is committed; with Redis down, screens resync on reconnect."""
    transaction.on_commit(lambda: background.run(aresync_channel(channel_id)), robust=True)


async def aclose_user_sockets(user_id: int, code: int = 4003, *, channel_id: int | None = None) -> None:
    """Close every socket of a user, in every process (ban, deactivation), or only
    those in one channel (removed from a private channel)."""
    message: dict[str, Any] = {"type": "ctl.close", "user_id": user_id, "code": code}
    if channel_id is not None:
        message["channel_id"] = channel_id
    await send_group(store.CONTROL_GROUP, message)


async def aresync_channel(channel_id: int) -> None:
    """Give every open connection of a channel, in every process, a fresh ``history``
    (after a purge, which no event describes)."""
    await send_group(store.CONTROL_GROUP, {"type": "ctl.resync", "channel_id": channel_id})


async def send_group(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(group, message)
