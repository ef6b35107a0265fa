"""The verbs of a conversation: post, regenerate, inject, reset, interrupt."""

from __future__ import annotations

import contextlib
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from chat import limits, permissions
from chat.agents import memory_extraction
from chat.agents.checkpoints import drop_covering
from chat.agents.policy import check_message_agent, check_web_search
from chat.choices import NOT_GIVEN, check_choices, usable_instruction
from chat.credits import holds
from chat.errors import ServiceError
from chat.generation import engine
from chat.knowledge import services as knowledge
from chat.models import Channel, Session, Turn, Upload
from chat.realtime.events import publish_on_commit, reset_event, turn_event, turn_removed_event
from chat.services.channels import check_channel_settings, save_channel_settings
from chat.uploads import services as uploads
from chat.uploads.vision import require_vision

# How long regenerate and reset wait for a running reply to stop before going on.
INTERRUPT_WAIT_S = 5.0


def check_can_write(user: Any, channel: Channel) -> None:
    """Raise unless the user may write in the channel right now."""
    if not (user and user.is_authenticated):
        raise ServiceError("auth_required", "Log in to write in this channel.")
    if not user.is_active or not permissions.can_post(user, channel):
        raise ServiceError("forbidden", "You may not write in this channel.")
    if channel.locked and not permissions.is_moderator(user):
        raise ServiceError("locked", "This channel is locked.")
    if permissions.is_muted(user, channel):
        raise ServiceError("muted", "You are muted in this channel.")


def check_text(text: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(text, str):
        raise ServiceError("invalid", "text must be a string.", fields={"text": ["Expected a string."]})
    if len(text) > settings.MAX_MESSAGE_CHARS:
        raise ServiceError("too_long", f"Messages are limited to {settings.MAX_MESSAGE_CHARS} characters.")
    if not allow_empty and not text.strip():
        raise ServiceError(
            "invalid", "text must not be empty.", fields={"text": ["This field may not be blank."]}
        )
    return text


def active_session(channel: Channel) -> Session:
    """The channel's active session, opened if it has none (the constraint keeps it one)."""
    session = (
        Session.objects.select_for_update().filter(channel=channel, status=Session.Status.ACTIVE).first()
    )
    if session is None:
        session = Session.objects.create(channel=channel)
    return session


def _add_turn(
    *,
    channel: Channel,
    user: Any,
    role: str,
    text: str,
    request: dict[str, Any] | None = None,
    attachments: list[Upload] | None = None,
) -> Turn:
    # No savepoint when a caller's transaction holds it (post_message's, with credits):
    # a failure here fails that whole transaction anyway.
    with transaction.atomic(savepoint=False):
        Channel.objects.select_for_update().filter(pk=channel.pk).first()  # orders turns per channel
        session = active_session(channel)
        # An injected bot line is complete as written: it is not "generating".
        finish = Turn.FinishReason.STOP if role == Turn.Role.BOT else None
        turn = Turn.objects.create(
            session=session, role=role, author=user, text=text, finish_reason=finish, request=request or {}
        )
        Session.touch(session.pk)
        if not session.started_by_id and user is not None:
            session.started_by = user
            session.save(update_fields=["started_by"])
        # In the turn's transaction, so its `turn` event (and every read) carries them.
        uploads.attach(turn, attachments or [])
        publish_on_commit(channel.pk, channel.name, turn_event(turn.to_dict()))
    return turn


def post_message(
    *,
    channel: Channel,
    user: User,
    text: str,
    framing: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    thinking: Any = NOT_GIVEN,
    instruction: Any = NOT_GIVEN,
    attachments: list[str] | None = None,
    image: str | None = None,
    image_mime: str | None = None,
    knowledge_base_ids: list[str] | None = None,
    agent: str | None = None,
    web_search: bool | None = None,
) -> Turn:
    """Save a user turn at once and have the bot answer it (right after the reply being
    written, if there is one). Returns the saved user turn.

    ``framing`` changes the channel's (owner or moderator). ``params``, ``thinking`` and
    ``instruction`` are this reply's only, within the channel's bounds for members
    (chat/choices.py), and are recorded on the turn (``request``). ``attachments``: ids
    of the caller's ready uploads, sent with it; ``image`` (base64, REST's seed form)
    becomes an upload of the caller, processed here. With either, ``text`` may be blank.
    ``knowledge_base_ids``: bases searched for this reply besides the channel's attached
    ones (the caller's own, or the channel's), recorded on the turn as strings.
    ``agent``: the agent to answer, within the channel's policy
    (chat.agents.policy.check_message_agent), recorded as ``request["agent"]``.
    ``web_search``: the web_search tool on (true) or off (false) for this reply,
    recorded as ``request["web_search"]`` (chat.agents.policy.check_web_search)."""
    check_can_write(user, channel)
    # The seed image is an attachment too: it counts towards MAX_ATTACHMENTS_PER_MESSAGE.
    if image is not None:
        uploads.check_attachment_count([*(attachments if isinstance(attachments, list) else []), image])
    sent = uploads.uploads_for_message(user=user, channel=channel, ids=attachments) if attachments else []
    seed = uploads.prepare_seed_image(image, image_mime) if image is not None else None
    text = check_text(text, allow_empty=bool(sent or seed))
    # Everything that can refuse the request is checked before it is counted: a refused
    # request uses up no rate or quota.
    checked = check_channel_settings(channel=channel, user=user, framing=framing)
    request = check_choices(
        channel=channel, user=user, params=params, thinking=thinking, instruction=instruction
    )
    if knowledge_base_ids:
        bases = knowledge.check_message_bases(user=user, channel=channel, ids=knowledge_base_ids)
        request["knowledge_base_ids"] = [str(base.pk) for base in bases]
    if agent is not None:
        request["agent"] = check_message_agent(user=user, channel=channel, name=agent)
    if web_search is not None:
        request["web_search"] = check_web_search(user=user, channel=channel, value=web_search)
    # A model that does not read images is refused before any limit is counted.
    looked_at = [*sent, seed.as_upload(user)] if seed is not None else sent
    require_vision(channel=channel, user=user, request=request, uploads=looked_at)
    if seed is not None:
        # The image's bytes are counted first and given back if the message is refused.
        sent.append(uploads.store_seed_image(user=user, channel=channel, seed=seed))
    # With credits, the hold is taken first and everything after it is in its
    # transaction: a refused hold counts no limit, a refused limit keeps no hold.
    basis = holds.estimate(channel, request, text) if settings.CREDITS_ENABLED else None
    counted = False
    try:
        with transaction.atomic() if basis is not None else contextlib.nullcontext():
            if basis is not None:
                holds.reserve(user, basis.amount)
            limits.check_and_count_message(user)
            counted = True
            save_channel_settings(channel=channel, checked=checked)
            turn = _add_turn(
                channel=channel, user=user, role=Turn.Role.USER, text=text, request=request, attachments=sent
            )
            if basis is not None:
                holds.record_hold(user=user, channel=channel, basis=basis, turn=turn)
    except BaseException:
        # Outside the transaction, which would take the deletion back with it.
        if seed is not None and not counted:
            uploads.discard_seed_upload(sent[-1], counted=seed.sent_size)
        raise
    # robust: the turn is saved whatever happens here (Redis gone since the limits were
    # counted); a failure is logged, and must not report the saved message as failed.
    transaction.on_commit(lambda: engine.request_generation(channel.pk, user.pk), robust=True)
    return turn


def inject(*, channel: Channel, user: User, role: str, text: str) -> Turn:
    """Add a user, agent or bot turn without generating a reply."""
    check_can_write(user, channel)
    if role not in Turn.Role.values:
        raise ServiceError(
            "invalid", "role must be user, agent or bot.", fields={"role": ["Invalid choice."]}
        )
    text = check_text(text)
    limits.check_and_count_message(user)  # an injected turn is a message like any other
    return _add_turn(channel=channel, user=user if role != Turn.Role.BOT else None, role=role, text=text)


def regenerate(
    *,
    channel: Channel,
    user: User,
    framing: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    thinking: Any = NOT_GIVEN,
    instruction: Any = NOT_GIVEN,
    agent: str | None = None,
    web_search: bool | None = None,
) -> Turn | None:
    """Hide the last bot turn (kept for audit) and have the bot answer again. A running
    reply is interrupted first. Returns the hidden turn, if there was one.

    With ``params``, ``thinking``, ``instruction``, ``agent`` or ``web_search``, they replace the choices
    recorded on the turn being answered again (as post_message checks them); without
    any, the new reply is written with the same choices as the one it replaces."""
    check_can_write(user, channel)
    # Bad settings are refused before anything stops; the interrupt reaches Redis before
    # anything is saved, so with Redis down the request fails having changed nothing.
    checked = check_channel_settings(channel=channel, user=user, framing=framing)
    choosing = (
        params is not None
        or thinking is not NOT_GIVEN
        or instruction is not NOT_GIVEN
        or agent is not None
        or web_search is not None
    )
    request = (
        check_choices(channel=channel, user=user, params=params, thinking=thinking, instruction=instruction)
        if choosing
        else None
    )
    if request is not None and agent is not None:
        request["agent"] = check_message_agent(user=user, channel=channel, name=agent)
    if request is not None and web_search is not None:
        request["web_search"] = check_web_search(user=user, channel=channel, value=web_search)
    if request is None:
        _check_kept_instruction(channel, user)
    _require_vision_again(channel, user, request)
    credits = settings.CREDITS_ENABLED
    if not credits:
        limits.check_and_count_message(user)  # a new reply costs like a message does
    engine.interrupt(channel.pk, wait=INTERRUPT_WAIT_S)
    basis = None
    if credits:
        # After the interrupt: the stopped reply's hold is settled, its rest available.
        # The choices the new reply uses: those given, else the answered turn's.
        answered = _answered_turn(Session.objects.filter(channel=channel, status="active").first())
        kept = request if request is not None else (answered.request if answered is not None else {})
        basis = holds.estimate(channel, kept, "")
    else:
        save_channel_settings(channel=channel, checked=checked)
    with transaction.atomic():
        if basis is not None:
            # The hold first, then the limits, in this transaction: a refused hold counts
            # no limit, a refused limit keeps no hold.
            holds.reserve(user, basis.amount)
            limits.check_and_count_message(user)
            save_channel_settings(channel=channel, checked=checked)
        session = active_session(channel)
        last = Turn.objects.filter(session=session, hidden=False).order_by("-id").first()
        hidden = None
        if last is not None and last.role == Turn.Role.BOT:
            last.hidden = True
            last.save(update_fields=["hidden"])
            drop_covering(session.pk, last.pk)  # no summary may keep its text
            hidden = last
            publish_on_commit(channel.pk, channel.name, turn_removed_event(last.pk), redact=True)
        if request is not None:
            _record_request(channel, session, request)
        if basis is not None:
            holds.record_hold(user=user, channel=channel, basis=basis, turn=_answered_turn(session))
        transaction.on_commit(lambda: engine.request_generation(channel.pk, user.pk), robust=True)
    return hidden


def _answered_turn(session: Any) -> Turn | None:
    """The turn a new reply answers: the newest visible one that is not the bot's (the
    generation reads its choices there)."""
    return (
        Turn.objects.filter(session=session, hidden=False)
        .exclude(role=Turn.Role.BOT)
        .select_related("author")
        .order_by("-id")
        .first()
    )


def _check_kept_instruction(channel: Channel, user: User) -> None:
    """A regenerate without choices keeps the answered turn's; an instruction among them
    that is someone else's own is not the caller's to apply again (its text, maybe
    rewritten since, would go into the reply's substrate that every reader sees)."""
    asked = _answered_turn(Session.objects.filter(channel=channel, status=Session.Status.ACTIVE).first())
    kept = asked.request.get("instruction") if asked is not None else None
    if kept is not None and usable_instruction(user, kept) is None:
        raise ServiceError(
            "forbidden",
            "This message used an instruction that is not yours: choose one (instruction: an id or null).",
        )


def _require_vision_again(channel: Channel, user: User, request: dict[str, Any] | None) -> None:
    """The answered turn's images must reach the model the new reply will use (the
    choices given, else the ones recorded on that turn)."""
    asked = _answered_turn(Session.objects.filter(channel=channel, status=Session.Status.ACTIVE).first())
    if asked is None:
        return
    kept = request if request is not None else asked.request
    require_vision(channel=channel, user=user, request=kept, uploads=asked.uploads.all())


def _record_request(channel: Channel, session: Session, request: dict[str, Any]) -> None:
    """A regenerate's choices, on the turn the new reply answers; every screen sees it."""
    asked = _answered_turn(session)
    if asked is None:
        return
    # The bases the message named are the message's own, not a choice a regenerate
    # makes: they stay searched.
    if "knowledge_base_ids" in asked.request:
        request = {**request, "knowledge_base_ids": asked.request["knowledge_base_ids"]}
    if asked.request == request:
        return
    asked.request = request
    asked.save(update_fields=["request"])
    publish_on_commit(channel.pk, channel.name, turn_event(asked.to_dict()))


def reset(*, channel: Channel, user: User) -> Session:
    """Archive the active session and open a fresh one; nothing is deleted."""
    check_can_write(user, channel)
    engine.interrupt(channel.pk, wait=INTERRUPT_WAIT_S)
    with transaction.atomic():
        Channel.objects.select_for_update().filter(pk=channel.pk).first()
        now = timezone.now()
        ending = Session.objects.filter(channel=channel, status=Session.Status.ACTIVE)
        ended = list(ending.values_list("pk", flat=True))
        ending.update(status=Session.Status.ARCHIVED, archived_at=now, updated_at=now)
        memory_extraction.sessions_ended(channel, ended)
        session = Session.objects.create(channel=channel, started_by=user)
        publish_on_commit(channel.pk, channel.name, reset_event(session.pk))
    return session


def interrupt(*, channel: Channel, user: User) -> bool:
    """Stop the reply being written; the partial text is kept as ``interrupted``."""
    check_can_write(user, channel)
    return engine.interrupt(channel.pk)
