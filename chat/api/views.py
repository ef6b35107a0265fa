"""The REST API (docs/protocol.md, "REST"). Views parse, look up through selectors scoped to
the caller, call one service, and answer; outsiders get 404 for private things."""

from __future__ import annotations

import re
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, QueryDict
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import AllowAny, IsAuthenticatedOrReadOnly
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import permissions, selectors, services
from chat.api import outputs
from chat.api.authentication import BearerTokenAuthentication
from chat.api.outputs import EVENT_STREAM, errors
from chat.api.scopes import TokenScopes, held_scopes, held_until
from chat.api.scopes import require as require_scope
from chat.api.serializers import TurnsQuerySerializer
from chat.api.streams import (
    EventFeed,
    EventStreamRenderer,
    await_reply,
    collect_prompts,
    follow_channel,
    follow_exchange,
    prompt_events,
    stream_response,
)
from chat.errors import UNAVAILABLE, ServiceError
from chat.framing import effective_framing, effective_params
from chat.generation.providers.base import ProviderError
from chat.logins import bearer_from_header
from chat.models import SCOPES, ApiToken, Channel, Membership, Session, hash_token, iso
from chat.schemas import (
    BulkDeleteSerializer,
    ChannelCreateSerializer,
    ChannelUpdateSerializer,
    InjectSerializer,
    InstructionCreateSerializer,
    InstructionUpdateSerializer,
    InterruptSerializer,
    MemberSerializer,
    MessageSerializer,
    PreferencesSerializer,
    PromptsSerializer,
    RegenerateSerializer,
    ResetSerializer,
    SessionUpdateSerializer,
    StrictSerializer,
    TruncateSerializer,
    validate,
)
from chat.services import tokens as token_services
from chat.uploads import body_limit

PAGE_SIZE = 100
MAX_PAGE = 100_000  # far beyond any real list; keeps the SQL OFFSET in range
ASCII_DIGITS = re.compile(r"[0-9]{1,18}")  # str.isdigit() also takes "²" and "١"


def require_login(request: Request) -> User:
    """The logged-in caller; anyone else gets a 401."""
    if not isinstance(request.user, User) or not request.user.is_authenticated:
        raise NotAuthenticated("Log in or send Authorization: Bearer <token>.")
    return request.user


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """A whole-number query parameter in [low, high], or a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not ASCII_DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise serializers.ValidationError({name: [f"Expected a whole number from {low} to {high}."]})
    return int(raw)


def last_event_id(request: Request) -> int | None:
    """The SSE `Last-Event-ID` (a seq this server sent), None when absent, else a 400."""
    raw = request.META.get("HTTP_LAST_EVENT_ID", "")
    if raw == "":
        return None
    if not ASCII_DIGITS.fullmatch(raw):
        raise serializers.ValidationError({"Last-Event-ID": ["Expected a seq: a whole number ≥ 0."]})
    return int(raw)


def channel_or_404(request: Request, name: str) -> Channel:
    channel = selectors.channel_for(request.user, name)
    if channel is None:
        raise Http404("No such channel.")
    return channel


def session_or_404(request: Request, session_id: str) -> Session:
    session = selectors.session_for(request.user, session_id)
    if session is None:
        raise Http404("No such session.")
    return session


def watch_url(request: Request, channel: Channel, *, visible: bool = False) -> str:
    return request.build_absolute_uri(selectors.watch_path(request.user, channel, visible=visible))


def channel_summary(
    request: Request, channel: Channel, generating: bool, *, listed: bool = False
) -> dict[str, Any]:
    """A channel as lists show it; ``listed``: a row of selectors.visible_channels (so the
    caller may see it, and its turn count came with it)."""
    return {
        "name": channel.name,
        "title": channel.title,
        "turns": getattr(channel, "turn_count", None),
        "visibility": channel.visibility,
        "locked": channel.locked,
        "generating": generating,
        "chat_url": request.build_absolute_uri(f"/channel/{channel.name}"),
        "watch_url": watch_url(request, channel, visible=listed),
    }


def channel_detail(request: Request, channel: Channel) -> dict[str, Any]:
    session = channel.active_session
    (generating,) = selectors.generating_flags([channel])
    return {
        **channel_summary(request, channel, generating),
        "turns": selectors.visible_turn_count(session),
        "owner": channel.owner.get_username() if channel.owner else None,
        "mode": channel.mode,
        "framing": effective_framing(channel.framing),
        "params": effective_params(channel.params),
        "member_params": channel.member_params or {},
        "instruction": channel.instruction_id,
        "knowledge_base_ids": selectors.attached_ids(channel),
        **selectors.agent_settings(channel),
        "session": str(session.pk) if session else None,
    }


class ChannelsView(APIView):
    required_scopes = {"GET": "chats:read", "POST": "chats:write"}
    # Public channels are readable without an account; changes need one.
    permission_classes = [IsAuthenticatedOrReadOnly, TokenScopes]

    @extend_schema(
        operation_id="channels_list",
        parameters=[OpenApiParameter("page", int, required=False)],
        responses={200: outputs.ChannelList, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        """The channels the caller may see."""
        page = query_int(request, "page", default=1, low=1, high=MAX_PAGE)
        # One query and one Redis round trip, however many rows (tests/test_rest_queries.py).
        rows = selectors.listed_channels(request.user, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        flags = selectors.generating_flags(rows)
        next_url = request.build_absolute_uri(f"/api/channels?page={page + 1}") if more else None
        return Response(
            {
                "channels": [
                    channel_summary(request, c, g, listed=True) for c, g in zip(rows, flags, strict=True)
                ],
                "next": next_url,
            }
        )

    @extend_schema(
        request=ChannelCreateSerializer, responses={201: outputs.ChannelDetail, **errors(400, 403)}
    )
    def post(self, request: Request) -> Response:
        """Open a channel; the caller owns it."""
        caller = require_login(request)
        data = parse(ChannelCreateSerializer, request)
        channel = services.create_channel(owner=caller, **data)
        return Response(channel_detail(request, channel), status=status.HTTP_201_CREATED)


class ChannelDetailView(APIView):
    required_scopes = {"GET": "chats:read", "PATCH": "chats:write", "DELETE": "chats:delete"}
    # Public channels are readable without an account; changes need one.
    permission_classes = [IsAuthenticatedOrReadOnly, TokenScopes]

    @extend_schema(responses={200: outputs.ChannelDetail, **errors(404)})
    def get(self, request: Request, name: str) -> Response:
        return Response(channel_detail(request, channel_or_404(request, name)))

    @extend_schema(
        request=ChannelUpdateSerializer, responses={200: outputs.ChannelDetail, **errors(400, 403, 404)}
    )
    def patch(self, request: Request, name: str) -> Response:
        caller = require_login(request)
        channel = channel_or_404(request, name)
        changes = parse(ChannelUpdateSerializer, request)
        return Response(
            channel_detail(request, services.update_channel(channel=channel, user=caller, changes=changes))
        )

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, name: str) -> Response:
        caller = require_login(request)
        services.delete_channel(channel=channel_or_404(request, name), user=caller)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WatchKeyView(APIView):
    required_scopes = {"POST": "chats:write"}

    @extend_schema(request=None, responses={200: outputs.WatchUrl, **errors(403, 404)})
    def post(self, request: Request, name: str) -> Response:
        """Rotate the watch key: old links and the sockets that used them stop."""
        caller = require_login(request)
        channel = channel_or_404(request, name)
        services.rotate_watch_key(channel=channel, user=caller)
        return Response({"watch_url": watch_url(request, channel)})


def member_to_dict(membership: Membership) -> dict[str, Any]:
    return {
        "username": membership.user.get_username(),
        "role": membership.role,
        "muted": membership.muted,
        "since": iso(membership.created_at),
    }


class MembersView(APIView):
    required_scopes = {"GET": "chats:read", "POST": "chats:write"}
    # Public channels are readable without an account; changes need one.
    permission_classes = [IsAuthenticatedOrReadOnly, TokenScopes]

    @extend_schema(responses={200: outputs.MemberList, **errors(404)})
    def get(self, request: Request, name: str) -> Response:
        """The channel's members (whoever may see the channel may see them)."""
        channel = channel_or_404(request, name)
        rows = selectors.members(channel)
        return Response({"members": [member_to_dict(m) for m in rows]})

    @extend_schema(request=MemberSerializer, responses={201: outputs.Member, **errors(400, 403, 404)})
    def post(self, request: Request, name: str) -> Response:
        """Invite a user (owner or moderator)."""
        caller = require_login(request)
        channel = channel_or_404(request, name)
        user = user_or_404(parse(MemberSerializer, request)["username"])
        membership = services.add_member(actor=caller, channel=channel, user=user)
        return Response(member_to_dict(membership), status=status.HTTP_201_CREATED)


class MemberDetailView(APIView):
    required_scopes = {"DELETE": "chats:write"}

    @extend_schema(responses={204: None, **errors(400, 403, 404)})
    def delete(self, request: Request, name: str, username: str) -> Response:
        """Remove a member (owner or moderator; members may remove themselves)."""
        caller = require_login(request)
        channel = channel_or_404(request, name)
        services.remove_member(actor=caller, channel=channel, user=user_or_404(username))
        return Response(status=status.HTTP_204_NO_CONTENT)


def user_or_404(username: str) -> Any:
    user = selectors.user_by_name(username)
    if user is None:
        raise Http404("No such user.")
    return user


class StreamingView(APIView):
    """A view that also streams: `Accept: text/event-stream` (or `?format=sse`) chooses
    the stream where there is one, and every other answer — an error, an exchange that
    was not streamed — is JSON, labelled so (not as an event stream)."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        if isinstance(response, Response):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class MessagesView(StreamingView):
    required_scopes = {"POST": "chats:write"}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        raw = request.META.get("CONTENT_LENGTH") or ""
        if raw.isascii() and raw.isdigit() and int(raw) > body_limit.message_body_limit():
            raise ServiceError(
                "too_large",
                f"The body ({raw} bytes) is over the limit for a message: its image may be at most "
                f"MAX_UPLOAD_BYTES ({settings.MAX_UPLOAD_BYTES} bytes) before base64.",
            )
        super().initial(request, *args, **kwargs)

    @extend_schema(
        request=MessageSerializer,
        responses={
            (200, "application/json"): outputs.Exchange,
            (200, "text/event-stream"): EVENT_STREAM,
            (202, "application/json"): outputs.ExchangePending,
            **errors(400, 403, 404, 409, 413, 415, 429),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        """Send a message and wait for the bot's answer (bounded by SYNC_REPLY_TIMEOUT);
        with `Accept: text/event-stream` or `?stream=1` the exchange is streamed."""
        caller = require_login(request)
        channel = channel_or_404(request, name)
        data = parse(MessageSerializer, request)
        # Note the seq first: the exchange is followed from here, whatever precedes its
        # joining the fan-out hub.
        after = selectors.current_seq(channel)
        turn = services.post_message(channel=channel, user=caller, **data)
        feed = event_feed(request, None)
        if wants_stream(request):
            return stream_response(follow_exchange(channel, feed, after, turn.pk))  # type: ignore[return-value]
        try:
            bot_id = async_to_sync(await_reply)(channel, feed, after, turn.pk, settings.SYNC_REPLY_TIMEOUT)
        except UNAVAILABLE:  # the message is saved: never answer as if nothing changed
            bot_id = None
        # The events may have been missed (a redaction dropped the log meanwhile): the
        # database has the last word.
        bot = selectors.finished_turn(bot_id) if bot_id is not None else selectors.reply_to(turn)
        if bot is None:
            return Response(
                {
                    "detail": "The bot is still writing; poll the session's turns.",
                    "user_turn": turn.to_dict(substrate=True),
                    "session": str(turn.session_id),
                },
                status=status.HTTP_202_ACCEPTED,
            )
        return Response(
            {
                "user_turn": turn.to_dict(substrate=True),
                "bot_turn": bot.to_dict(substrate=True),
                "session": str(turn.session_id),
            }
        )


def event_feed(request: Request, key: str | None) -> EventFeed:
    """A stream's place in the fan-out, with the login it was opened with (a token or a
    session), which it rechecks like a socket does."""
    if not request.user.is_authenticated:
        return EventFeed(None, key)
    raw = bearer_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
    session_key = None if raw else getattr(request.session, "session_key", None)
    return EventFeed(
        request.user.pk, key, token_hash=hash_token(raw) if raw else None, session_key=session_key
    )


def wants_stream(request: Any) -> bool:
    accept = request.META.get("HTTP_ACCEPT", "")
    return "text/event-stream" in accept or request.GET.get("stream") in ("1", "true")


class ChannelEventsView(StreamingView):
    required_scopes = {"GET": "chats:read"}
    permission_classes = [AllowAny, TokenScopes]  # the same read rules as watching, checked below

    @extend_schema(
        parameters=[
            OpenApiParameter("key", str, required=False, description="a private channel's watch key")
        ],
        responses={(200, "text/event-stream"): EVENT_STREAM, **errors(400, 404)},
    )
    def get(self, request: Request, name: str) -> Any:
        """The channel's broadcast events as Server-Sent Events: `history` first (or the
        events after `Last-Event-ID`), a comment every 15 s. Same read rules as watch."""
        key = request.query_params.get("key")
        channel = selectors.channel_by_name(name)
        if channel is None or not permissions.can_watch(request.user, channel, key):
            raise Http404("No such channel.")
        last = last_event_id(request)
        feed = event_feed(request, key)
        return stream_response(follow_channel(channel, feed, last))


class RegenerateView(APIView):
    required_scopes = {"POST": "chats:write"}

    @extend_schema(
        request=RegenerateSerializer,
        responses={202: outputs.Regenerating, **errors(400, 403, 404, 409, 429)},
    )
    def post(self, request: Request, name: str) -> Response:
        caller = require_login(request)
        channel = channel_or_404(request, name)
        hidden = services.regenerate(channel=channel, user=caller, **parse(RegenerateSerializer, request))
        return Response({"removed_turn": hidden.pk if hidden else None}, status=status.HTTP_202_ACCEPTED)


class InjectView(APIView):
    required_scopes = {"POST": "chats:write"}

    @extend_schema(
        request=InjectSerializer, responses={201: outputs.Turn, **errors(400, 403, 404, 409, 413, 429)}
    )
    def post(self, request: Request, name: str) -> Response:
        caller = require_login(request)
        channel = channel_or_404(request, name)
        turn = services.inject(channel=channel, user=caller, **parse(InjectSerializer, request))
        return Response(turn.to_dict(substrate=True), status=status.HTTP_201_CREATED)


class ResetView(APIView):
    required_scopes = {"POST": "chats:write"}

    @extend_schema(request=ResetSerializer, responses={201: outputs.NewSession, **errors(400, 403, 404, 409)})
    def post(self, request: Request, name: str) -> Response:
        caller = require_login(request)
        channel = channel_or_404(request, name)
        parse(ResetSerializer, request)
        session = services.reset(channel=channel, user=caller)
        return Response({"session": str(session.pk)}, status=status.HTTP_201_CREATED)


class InterruptView(APIView):
    required_scopes = {"POST": "chats:write"}

    @extend_schema(
        request=InterruptSerializer, responses={200: outputs.Interrupted, **errors(400, 403, 404, 409)}
    )
    def post(self, request: Request, name: str) -> Response:
        caller = require_login(request)
        channel = channel_or_404(request, name)
        parse(InterruptSerializer, request)
        running = services.interrupt(channel=channel, user=caller)
        return Response({"interrupted": running})


SESSION_LIST_DEFAULT, SESSION_LIST_MAX = 50, 100
MAX_SESSION_QUERY = 200
SESSION_LIST_PARAMETERS = [
    OpenApiParameter(
        "status",
        str,
        required=False,
        description="active, archived or deleted, or several joined by commas (default: active,archived)",
    ),
    OpenApiParameter("limit", int, required=False, description="1–100 (default 50)"),
    OpenApiParameter(
        "q", str, required=False, description="≤ 200 characters, in the title or a visible turn"
    ),
    OpenApiParameter("cursor", str, required=False, description="from `next`"),
]


def session_statuses(request: Request) -> list[str]:
    raw = request.query_params.get("status")
    if raw is None:
        return [Session.Status.ACTIVE, Session.Status.ARCHIVED]
    statuses = raw.split(",")
    if not all(value in Session.Status.values for value in statuses):
        raise serializers.ValidationError(
            {"status": ["Expected active, archived or deleted (comma-separated)."]}
        )
    return statuses


# What a session list reads of its query; `format` is DRF's (`?format=json`).
SESSION_LIST_QUERY = frozenset({"status", "limit", "q", "cursor", "format"})


def session_list(request: Request, sessions: Any, *, also: frozenset[str] = frozenset()) -> Response:
    """A page of ``sessions`` (already scoped to the caller) as the query asks, with the
    URL of the next page. A parameter it does not read is a 400 naming it, not a page
    that quietly did without it (`page=2` would answer the first page again)."""
    unknown = sorted(set(request.query_params) - SESSION_LIST_QUERY - also)
    if unknown:
        raise serializers.ValidationError({name: ["Unknown parameter."] for name in unknown})
    statuses = session_statuses(request)
    limit = query_int(request, "limit", default=SESSION_LIST_DEFAULT, low=1, high=SESSION_LIST_MAX)
    query = request.query_params.get("q", "")
    if len(query) > MAX_SESSION_QUERY or "\x00" in query:
        raise serializers.ValidationError({"q": [f"At most {MAX_SESSION_QUERY} characters, no NUL."]})
    after = None
    if (cursor := request.query_params.get("cursor")) is not None:
        try:
            after = selectors.decode_session_cursor(cursor)
        except ValueError:
            raise serializers.ValidationError({"cursor": ["Not a cursor this server gave."]}) from None
    rows = selectors.session_page(
        request.user, sessions, statuses=statuses, query=query, after=after, limit=limit
    )
    next_url = None
    if len(rows) > limit:
        rows = rows[:limit]
        params = request.query_params.copy()
        params["cursor"] = selectors.encode_session_cursor(rows[-1])
        next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return Response({"sessions": [selectors.session_to_dict(s) for s in rows], "next": next_url})


class ChannelSessionsView(APIView):
    required_scopes = {"GET": "chats:read"}
    permission_classes = [AllowAny, TokenScopes]  # the same read rules as watching, checked below

    @extend_schema(
        parameters=SESSION_LIST_PARAMETERS, responses={200: outputs.SessionList, **errors(400, 404)}
    )
    def get(self, request: Request, name: str) -> Response:
        """The channel's sessions, most recent activity first."""
        channel = channel_or_404(request, name)
        return session_list(request, selectors.channel_sessions(channel))


class SessionsView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(
        operation_id="sessions_list",
        parameters=[OpenApiParameter("channel", str, required=False), *SESSION_LIST_PARAMETERS],
        responses={200: outputs.SessionList, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        """The caller's sessions (selectors.sessions_for), most recent activity first."""
        require_login(request)
        sessions = selectors.sessions_for(request.user)
        if (name := request.query_params.get("channel")) is not None:
            sessions = sessions.filter(channel__name=name)
        return session_list(request, sessions, also=frozenset({"channel"}))


class SessionDetailView(APIView):
    required_scopes = {"GET": "chats:read", "PATCH": "chats:write", "DELETE": "chats:delete"}

    @extend_schema(responses={200: outputs.Session, **errors(404)})
    def get(self, request: Request, session_id: str) -> Response:
        require_login(request)
        return Response(selectors.session_to_dict(session_or_404(request, session_id)))

    @extend_schema(request=SessionUpdateSerializer, responses={200: outputs.Session, **errors(400, 403, 404)})
    def patch(self, request: Request, session_id: str) -> Response:
        """Rename (`title`) or archive, delete, reopen (`status`): the channel's owner,
        moderators and admins."""
        caller = require_login(request)
        session = session_or_404(request, session_id)
        changes = parse(SessionUpdateSerializer, request)
        if changes.get("status") == Session.Status.DELETED:
            require_scope(request, "chats:delete")  # deleting, as DELETE does
        return Response(
            selectors.session_to_dict(services.update_session(session=session, user=caller, **changes))
        )

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, session_id: str) -> Response:
        caller = require_login(request)
        services.delete_session(session=session_or_404(request, session_id), user=caller)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BulkDeleteView(APIView):
    required_scopes = {"POST": "chats:delete"}

    @extend_schema(
        request=BulkDeleteSerializer,
        responses={200: outputs.Deleted, **errors(400, 403)},
    )
    def post(self, request: Request) -> Response:
        caller = require_login(request)
        ids = parse(BulkDeleteSerializer, request)["ids"]
        return Response({"deleted": services.bulk_delete_sessions(ids=ids, user=caller)})


class TurnsView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(parameters=[TurnsQuerySerializer], responses={200: outputs.TurnList, **errors(400, 404)})
    def get(self, request: Request, session_id: str) -> Response:
        """Turns of a session, oldest first; `include_hidden=1` for moderators. With the
        session's checkpoints placed among them (each after its `through_turn_id`)."""
        require_login(request)
        session = session_or_404(request, session_id)
        query = TurnsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        include_hidden = query.validated_data["include_hidden"] and permissions.is_moderator(request.user)
        limit, before = query.validated_data["limit"], query.validated_data.get("before")
        turns = selectors.turns_page(session, limit=limit, before=before, include_hidden=include_hidden)
        return Response(
            {
                "turns": [t.to_dict(substrate=True) for t in turns],
                "checkpoints": selectors.checkpoints_of_page(session, turns, limit=limit, before=before),
            }
        )


class TurnDetailView(APIView):
    required_scopes = {"GET": "chats:read"}
    permission_classes = [AllowAny, TokenScopes]  # the same read rules as watching, checked below

    @extend_schema(
        parameters=[
            OpenApiParameter("key", str, required=False, description="a private channel's watch key")
        ],
        responses={200: outputs.Turn, **errors(404)},
    )
    def get(self, request: Request, turn_id: str) -> Response:
        """One turn with every field, its prompt whole (`history` and turn events leave
        a bot turn's substrate out). Same read rules as watch; hidden turns for
        moderators only."""
        turn = None
        if ASCII_DIGITS.fullmatch(turn_id):
            turn = selectors.readable_turn(request.user, int(turn_id), request.query_params.get("key"))
        if turn is None:
            raise Http404("No such turn.")
        return Response(turn.to_dict(substrate=True))


class TruncateView(APIView):
    required_scopes = {"POST": "chats:delete"}

    @extend_schema(request=TruncateSerializer, responses={200: outputs.Truncated, **errors(400, 403, 404)})
    def post(self, request: Request, session_id: str) -> Response:
        caller = require_login(request)
        session = session_or_404(request, session_id)
        data = parse(TruncateSerializer, request)
        return Response(
            services.truncate_session(
                session=session, user=caller, keep=data["keep"], keep_from=data.get("from", "end")
            )
        )


class PromptsView(StreamingView):
    required_scopes = {"POST": "chats:write"}

    @extend_schema(
        request=PromptsSerializer,
        responses={
            (200, "application/json"): outputs.Prompts,
            (200, "text/event-stream"): outputs.PROMPT_STREAM,
            # (404: a `?format=` DRF does not know)
            **errors(400, 403, 404, 413, 429, 502),
        },
    )
    def post(self, request: Request) -> Any:
        """Suggested prompts from the task model: streamed (`prompt` per suggestion, then
        `done`), or all at once with `Accept: application/json`. Counts as one message."""
        caller = require_login(request)
        data = parse(PromptsSerializer, request)
        channel = None
        if "channel" in data:
            channel = selectors.channel_for(caller, data["channel"])
            if channel is None:
                raise serializers.ValidationError({"channel": ["No such channel."]})
        text, n, kind = data["text"], data.get("n", 3), data.get("kind", "task")
        config = services.prepare_prompt_suggestions(user=caller, channel=channel, text=text)
        if not wants_json(request):
            return stream_response(prompt_events(config, text=text, n=n, kind=kind))
        try:
            prompts = async_to_sync(collect_prompts)(config, text=text, n=n, kind=kind)
        except ProviderError as exc:
            raise ServiceError("provider_error", f"The model failed: {exc}") from exc
        return Response({"prompts": prompts})


def wants_json(request: Any) -> bool:
    accept = request.META.get("HTTP_ACCEPT", "")
    return "application/json" in accept and "text/event-stream" not in accept


class ProvidersView(APIView):
    required_scopes = {"GET": "chats:read"}
    permission_classes = [AllowAny, TokenScopes]  # which models answer here is no secret

    @extend_schema(responses={200: outputs.ProviderList, **errors()})
    def get(self, request: Request) -> Response:
        providers = selectors.enabled_providers()
        return Response(
            {
                "providers": [
                    {
                        "name": p.name,
                        "kind": p.kind,
                        "modes": p.modes,
                        "models": p.served_models,
                    }
                    for p in providers
                ]
            }
        )


class MeView(APIView):
    required_scopes = {"GET": "chats:read", "PATCH": "chats:write"}

    @extend_schema(responses={200: outputs.Account, **errors()})
    def get(self, request: Request) -> Response:
        require_login(request)
        return Response(selectors.account_state(request.user))

    @extend_schema(request=PreferencesSerializer, responses={200: outputs.Account, **errors(400, 403)})
    def patch(self, request: Request) -> Response:
        """Set the caller's defaults (provider, model, instruction) and memory switches."""
        caller = require_login(request)
        services.set_preferences(user=caller, changes=parse(PreferencesSerializer, request))
        return Response(selectors.account_state(caller))


def instruction_or_404(request: Request, instruction_id: str) -> Any:
    found = None
    if ASCII_DIGITS.fullmatch(instruction_id):
        found = selectors.instruction_for(request.user, int(instruction_id))
    if found is None:
        raise Http404("No such instruction.")
    return found


class InstructionsView(APIView):
    required_scopes = {"GET": "chats:read", "POST": "chats:write"}

    @extend_schema(operation_id="instructions_list", responses={200: outputs.InstructionList, **errors()})
    def get(self, request: Request) -> Response:
        """The shared instructions and the caller's own."""
        caller = require_login(request)
        rows = selectors.instructions_for(caller)
        return Response({"instructions": [selectors.instruction_to_dict(i, caller) for i in rows]})

    @extend_schema(
        request=InstructionCreateSerializer, responses={201: outputs.Instruction, **errors(400, 403)}
    )
    def post(self, request: Request) -> Response:
        """A new instruction of the caller's own."""
        caller = require_login(request)
        created = services.create_instruction(user=caller, **parse(InstructionCreateSerializer, request))
        return Response(selectors.instruction_to_dict(created, caller), status=status.HTTP_201_CREATED)


class InstructionDetailView(APIView):
    required_scopes = {"GET": "chats:read", "PATCH": "chats:write", "DELETE": "chats:write"}

    @extend_schema(responses={200: outputs.Instruction, **errors(404)})
    def get(self, request: Request, instruction_id: str) -> Response:
        caller = require_login(request)
        return Response(selectors.instruction_to_dict(instruction_or_404(request, instruction_id), caller))

    @extend_schema(
        request=InstructionUpdateSerializer, responses={200: outputs.Instruction, **errors(400, 403, 404)}
    )
    def patch(self, request: Request, instruction_id: str) -> Response:
        """Rename or rewrite one of the caller's own (shared ones: in the admin)."""
        caller = require_login(request)
        found = instruction_or_404(request, instruction_id)
        changes = parse(InstructionUpdateSerializer, request)
        changed = services.update_instruction(user=caller, instruction=found, changes=changes)
        return Response(selectors.instruction_to_dict(changed, caller))

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, instruction_id: str) -> Response:
        caller = require_login(request)
        services.delete_instruction(user=caller, instruction=instruction_or_404(request, instruction_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeTokenView(APIView):
    # Every scope: it makes a token that holds them all.
    required_scopes = {"POST": SCOPES}
    # A password may be exchanged for a token here (HTTP basic), so scripts can start
    # from a username and password alone; everywhere else only the token or a session.
    authentication_classes = [BearerTokenAuthentication, BasicAuthentication, SessionAuthentication]

    @extend_schema(request=None, responses={201: outputs.Token, **errors(403, 429)})
    def post(self, request: Request) -> Response:
        """Create or rotate the caller's full-scope API token (named "API token"); it is
        shown only in this answer. A token asking must itself hold every scope and never
        expire."""
        caller = require_login(request)
        raw = token_services.rotate_full_token(
            user=caller,
            held=held_scopes(request),
            until=held_until(request),
            made_by=request.auth if isinstance(request.auth, ApiToken) else None,
        )
        return Response({"token": raw}, status=status.HTTP_201_CREATED)


def parse(schema: type[StrictSerializer], request: Request) -> dict[str, Any]:
    """The body checked against the action's schema, the one the WebSocket uses too."""
    not_json = ServiceError(
        "invalid",
        "Send the body as a JSON object (Content-Type: application/json).",
        fields={"non_field_errors": ["Expected a JSON object."]},
    )
    try:
        data = request.data
    except (TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig) as exc:
        # A form too big for Django to read (left alone, Django answers with its HTML 400).
        raise not_json from exc
    if isinstance(data, QueryDict):
        # A form or multipart body: form rules would read every value as a string and a
        # missing boolean as false, so only JSON carries what the schemas ask for.
        if data:
            raise not_json
        data = {}
    return validate(schema, data)
