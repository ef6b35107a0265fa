"""The shapes of the REST API's answers (docs/protocol.md, "Objects" and "REST"), for the
OpenAPI document at /api/schema.

The views answer with the dicts they have always built (``Turn.to_dict``,
``selectors.session_to_dict``, ``channel_summary`` …), which the WebSocket shares; these
serializers only describe them, field by field, and never parse or render anything:
rendering through them would change values (a float field writes ``1`` as ``1.0``).
tests/test_api_schema.py checks that every answer the API gives fits what is declared
here. A field every answer has is required; one that only some have (a bot turn's) is
declared ``required=False``; ``allow_null`` where the protocol has null.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers

from chat.errors import HTTP_STATUS


class Output(serializers.Serializer[Any]):
    """An answer's shape: described for the schema, never read from a client."""

    def to_internal_value(self, data: Any) -> Any:
        raise TypeError(f"{type(self).__name__} describes an answer; it does not parse input.")


# --- Settings ---------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["low", "medium", "high"]}],
        "description": "reasoning before the answer: false, true (= medium) or an effort",
    }
)
class Thinking(serializers.Field):  # type: ignore[type-arg]
    pass


class Framing(Output):
    """How a transcript becomes a completion prompt (the channel's, defaults filled in)."""

    name = serializers.CharField(allow_blank=True)
    preamble = serializers.CharField(allow_blank=True)
    user_prefix = serializers.CharField(allow_blank=True)
    bot_prefix = serializers.CharField(allow_blank=True)
    agent_prefix = serializers.CharField(allow_blank=True)
    turn_suffix = serializers.CharField(allow_blank=True)
    stop = serializers.ListField(child=serializers.CharField())
    quote_user = serializers.BooleanField()


class Params(Output):
    """Sampling parameters (the channel's, defaults filled in); empty `provider` and
    `model` mean the first enabled provider and its default model."""

    provider = serializers.CharField(allow_blank=True)
    model = serializers.CharField(allow_blank=True)
    max_tokens = serializers.IntegerField(min_value=1)
    temperature = serializers.FloatField(min_value=0, max_value=2)
    top_p = serializers.FloatField(min_value=0, max_value=1)
    top_k = serializers.IntegerField(min_value=0, max_value=1000)
    repeat_penalty = serializers.FloatField(min_value=0.5, max_value=2)
    thinking = Thinking()


class Range(Output):
    min = serializers.FloatField()
    max = serializers.FloatField()


class MaxBound(Output):
    max = serializers.IntegerField()


class MemberParams(Output):
    """What members may choose per message: a key absent, they may not set it."""

    models = serializers.ListField(
        child=serializers.CharField(), required=False, help_text='"provider/model" pairs'
    )
    temperature = Range(required=False)
    top_p = Range(required=False)
    top_k = Range(required=False)
    repeat_penalty = Range(required=False)
    max_tokens = MaxBound(required=False)
    thinking = serializers.BooleanField(required=False)


class TurnFraming(Output):
    """The framing a bot reply was written with; empty for a bot line that was injected."""

    name = serializers.CharField(required=False, allow_blank=True)
    preamble = serializers.CharField(required=False, allow_blank=True)
    user_prefix = serializers.CharField(required=False, allow_blank=True)
    bot_prefix = serializers.CharField(required=False, allow_blank=True)
    agent_prefix = serializers.CharField(required=False, allow_blank=True)
    turn_suffix = serializers.CharField(required=False, allow_blank=True)
    stop = serializers.ListField(child=serializers.CharField(), required=False)
    quote_user = serializers.BooleanField(required=False)


class TurnParams(Output):
    """The parameters a bot reply was written with; empty for a bot line that was injected."""

    provider = serializers.CharField(required=False, allow_blank=True)
    model = serializers.CharField(required=False, allow_blank=True)
    max_tokens = serializers.IntegerField(required=False)
    temperature = serializers.FloatField(required=False)
    top_p = serializers.FloatField(required=False)
    top_k = serializers.IntegerField(required=False)
    repeat_penalty = serializers.FloatField(required=False)
    thinking = Thinking(required=False)


class TurnRequest(Output):
    """A user turn's per-message choices, as checked; empty when it made none."""

    params = TurnParams(required=False)
    thinking = Thinking(required=False)
    instruction = serializers.IntegerField(required=False, allow_null=True)
    knowledge_base_ids = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        help_text="knowledge bases searched for its reply besides the channel's attached ones",
    )
    agent = serializers.CharField(required=False, help_text="the agent the message named")


class TurnUsage(Output):
    """Tokens of a finished reply (`estimated` when the provider did not count them);
    empty while it is written and for an injected bot line."""

    prompt_tokens = serializers.IntegerField(required=False)
    completion_tokens = serializers.IntegerField(required=False)
    estimated = serializers.BooleanField(required=False)


class TurnTimings(Output):
    """Milliseconds to the first token (null when none came) and in all; `recovered` when
    another process closed a reply whose process died. Empty while it is written."""

    ttft_ms = serializers.IntegerField(required=False, allow_null=True)
    duration_ms = serializers.IntegerField(required=False)
    retrieval_ms = serializers.IntegerField(
        required=False, help_text="searching knowledge bases and long files, before the model was asked"
    )
    recovered = serializers.BooleanField(required=False)


# --- Uploads ----------------------------------------------------------------------------

# (Named in settings.SPECTACULAR_SETTINGS ENUM_NAME_OVERRIDES: `kind` and `status` name
# other enums too.)
UPLOAD_KINDS = ["document", "image", "audio", "video"]
UPLOAD_STATUSES = ["uploaded", "processing", "ready", "failed"]
ATTACHMENT_STATUSES = ["ready", "deleted"]
SESSION_STATUSES = ["active", "archived", "deleted"]


class Attachment(Output):
    """A file sent with a user turn. `status` "deleted" (and `url` null) once its owner
    deleted it; `url` serves its bytes to whoever may see the turn (add `?key=` on a
    private channel's watch link, `inline=1` for a raster image's thumbnail)."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    mime = serializers.CharField(help_text="its real type, read from its bytes")
    size = serializers.IntegerField(help_text="bytes")
    kind = serializers.ChoiceField(choices=UPLOAD_KINDS)
    status = serializers.ChoiceField(
        choices=ATTACHMENT_STATUSES, help_text="deleted: its owner deleted it (url is null then)"
    )
    url = serializers.CharField(allow_null=True)


class Upload(Output):
    """A file the caller uploaded; processing moves `status` on (uploaded → processing →
    ready | failed), told live by `attachment_updated` events of its channel."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    mime = serializers.CharField(help_text="its real type, read from its bytes")
    size = serializers.IntegerField(help_text="bytes")
    kind = serializers.ChoiceField(choices=UPLOAD_KINDS)
    status = serializers.ChoiceField(choices=UPLOAD_STATUSES)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    error = serializers.CharField(allow_null=True, help_text="why it failed")
    channel = serializers.CharField(allow_null=True)
    url = serializers.CharField()
    created_at = serializers.DateTimeField()


class UploadList(Output):
    uploads = Upload(many=True)


UPLOAD_CONTENT = OpenApiResponse(
    OpenApiTypes.BINARY,
    description="The file's bytes, typed with its real mime; `Content-Disposition: attachment` "
    "except raster images with `inline=1`; `nosniff`; `Content-Security-Policy: default-src 'none'; sandbox`",
)


# --- Turns ------------------------------------------------------------------------------


class SourceBase(Output):
    id = serializers.UUIDField()
    name = serializers.CharField()


class SourceDocument(Output):
    id = serializers.UUIDField(help_text="a knowledge base's document, or the upload of a file sent")
    name = serializers.CharField()


class Source(Output):
    """A passage a reply's prompt was given, numbered as in the prompt (`[n]`). `kb` and
    `chunk` are null for a passage of a file sent with the message (`document` is then
    the upload)."""

    n = serializers.IntegerField()
    kb = SourceBase(allow_null=True)
    document = SourceDocument()
    chunk = serializers.IntegerField(allow_null=True)
    score = serializers.FloatField()
    snippet = serializers.CharField(allow_blank=True, help_text="the passage's start, at most 300 characters")
    page = serializers.IntegerField(allow_null=True)


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"description": "any JSON value"},
        "description": "the arguments object the model sent, as it sent it",
    }
)
class ToolArguments(serializers.Field):  # type: ignore[type-arg]
    pass


class Redaction(Output):
    owner = serializers.CharField(help_text="whose data the result is; only they can read it")


class Step(Output):
    """A tool call of a reply (docs/protocol.md, "Agents")."""

    call_id = serializers.CharField()
    round = serializers.IntegerField()
    name = serializers.CharField()
    arguments = ToolArguments()
    status = serializers.ChoiceField(
        choices=["running", "awaiting_approval", "ok", "error", "denied", "interrupted"]
    )
    ok = serializers.BooleanField(allow_null=True)
    content = serializers.CharField(
        allow_blank=True, help_text="capped at TOOL_OUTPUT_CHARS; empty when redacted"
    )
    truncated = serializers.BooleanField()
    duration_ms = serializers.IntegerField(allow_null=True)
    text_offset = serializers.IntegerField(help_text="how much of the turn's text came before the call")
    redacted = Redaction(allow_null=True, help_text="set when the result is one person's data")
    approved_by = serializers.CharField(allow_null=True)


class ToolDecision(Output):
    call_id = serializers.CharField()
    turn_id = serializers.IntegerField()
    approved = serializers.BooleanField()


class StepContent(Output):
    """The whole result of a redacted step, for the person whose data it is."""

    call_id = serializers.CharField()
    content = serializers.CharField(allow_blank=True)


class Turn(Output):
    """The protocol's Turn object, with the substrate (`prompt`, `raw_completion`,
    `framing`) as every REST answer gives it. The fields from `truncated` on are a bot
    turn's only; `author` is null for bot turns."""

    id = serializers.IntegerField()
    session = serializers.UUIDField()
    role = serializers.ChoiceField(
        choices=[("user", "a user's message"), ("agent", "an injected agent line"), ("bot", "the model's")]
    )
    text = serializers.CharField(allow_blank=True)
    author = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    hidden = serializers.BooleanField()
    truncated = serializers.BooleanField(required=False)
    rep_hint = serializers.CharField(required=False, allow_null=True)
    finish_reason = serializers.ChoiceField(
        choices=["stop", "length", "interrupted", "error"],
        required=False,
        allow_null=True,
        help_text="null while the reply is being written",
    )
    reasoning = serializers.CharField(required=False, allow_blank=True)
    prompt = serializers.CharField(required=False, allow_blank=True)
    raw_completion = serializers.CharField(required=False, allow_blank=True)
    framing = TurnFraming(required=False)
    params = TurnParams(required=False)
    instruction = serializers.CharField(
        required=False, allow_blank=True, help_text="bot turns: the name of the instruction applied"
    )
    request = TurnRequest(required=False, help_text="user turns: the choices the message made")
    attachments = Attachment(many=True, required=False, help_text="user turns: the files sent with it")
    provider = serializers.CharField(required=False, allow_blank=True)
    model = serializers.CharField(required=False, allow_blank=True)
    usage = TurnUsage(required=False)
    timings = TurnTimings(required=False)
    dropped_turns = serializers.IntegerField(
        required=False, help_text="oldest turns left out so the prompt fit the context window"
    )
    sources = Source(many=True, required=False, help_text="bot turns: the passages its prompt was given")
    steps = Step(many=True, required=False, help_text="bot turns: its tool calls, in order")
    agent = serializers.CharField(
        required=False, allow_null=True, help_text="bot turns: the agent that wrote it"
    )


class Checkpoint(Output):
    """A summary of a session's turns up to `through_turn_id` (issue 17, compaction)."""

    id = serializers.IntegerField()
    session = serializers.UUIDField()
    through_turn_id = serializers.IntegerField()
    turns = serializers.IntegerField(help_text="how many turns it summarises")
    summary = serializers.CharField()
    created_at = serializers.DateTimeField()


class TurnList(Output):
    turns = Turn(many=True)
    checkpoints = Checkpoint(many=True)


class Exchange(Output):
    """A message and the bot's answer to it."""

    user_turn = Turn()
    bot_turn = Turn()
    session = serializers.UUIDField()


class ExchangePending(Output):
    """The bot took longer than SYNC_REPLY_TIMEOUT: the message is saved and the reply
    goes on; poll the session's turns."""

    detail = serializers.CharField()
    user_turn = Turn()
    session = serializers.UUIDField()


class Regenerating(Output):
    """A new reply is on its way; `removed_turn` is the bot turn it replaces (now
    hidden), if there was one."""

    removed_turn = serializers.IntegerField(allow_null=True)


class NewSession(Output):
    session = serializers.UUIDField()


class Interrupted(Output):
    """Whether a reply was being written (and so was stopped)."""

    interrupted = serializers.BooleanField()


# --- Channels and members ---------------------------------------------------------------


class ChannelSummary(Output):
    name = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    turns = serializers.IntegerField(help_text="visible turns of the active session")
    visibility = serializers.ChoiceField(choices=["public", "private"])
    locked = serializers.BooleanField()
    generating = serializers.BooleanField(help_text="false while Redis cannot be reached")
    chat_url = serializers.URLField()
    watch_url = serializers.URLField(help_text="with the watch key for those who may see a private channel")


class ChannelList(Output):
    channels = ChannelSummary(many=True)
    next = serializers.URLField(allow_null=True, help_text="the next page, or null")


class ChannelDetail(ChannelSummary):
    owner = serializers.CharField(allow_null=True)
    mode = serializers.ChoiceField(choices=["chat", "completion"])
    framing = Framing()
    params = Params()
    member_params = MemberParams()
    instruction = serializers.IntegerField(allow_null=True, help_text="the channel's instruction")
    knowledge_base_ids = serializers.ListField(
        child=serializers.UUIDField(), help_text="the knowledge bases every reply here searches"
    )
    tools = serializers.ListField(
        child=serializers.CharField(),
        help_text='tools its replies may call ("calculator", "mcp:<server>/<tool>")',
    )
    tools_requiring_approval = serializers.ListField(
        child=serializers.CharField(), help_text="those of its tools that wait for a person's approval"
    )
    tools_apply = serializers.BooleanField(help_text="false in completion mode: the tools are kept, not used")
    agent = serializers.CharField(allow_null=True, help_text="the agent its replies are written by")
    agent_choice = serializers.ChoiceField(
        choices=["fixed", "members"],
        help_text="fixed: messages may name only the channel's agent; members: any enabled agent",
    )
    memory = serializers.BooleanField(help_text="replies may use the memories of members who consented")
    session = serializers.UUIDField(allow_null=True, help_text="the active session")


class Agent(Output):
    """An enabled agent: what a message may name (`agent`) and a channel be bound to."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    provider = serializers.CharField(allow_null=True, help_text="null: the channel's provider")
    model = serializers.CharField(allow_blank=True, help_text="empty: the provider's default")
    tools = serializers.ListField(child=serializers.CharField())
    knowledge_base_ids = serializers.ListField(
        child=serializers.UUIDField(), help_text="the agent's knowledge bases the caller may read"
    )
    params = TurnParams(help_text="its default parameters")


class AgentList(Output):
    agents = Agent(many=True)


class Tool(Output):
    name = serializers.CharField(help_text='"calculator", "mcp:<server>/<tool>"')
    description = serializers.CharField(allow_blank=True)
    builtin = serializers.BooleanField()
    available = serializers.BooleanField(help_text="offered to models now")


class ToolList(Output):
    tools = Tool(many=True)


class WatchUrl(Output):
    watch_url = serializers.URLField()


class Member(Output):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=[("member", "a member"), ("owner", "the channel's owner")])
    muted = serializers.BooleanField()
    since = serializers.DateTimeField()


class MemberList(Output):
    members = Member(many=True)


# --- Sessions ---------------------------------------------------------------------------


class SessionUsage(Output):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()


class Session(Output):
    id = serializers.UUIDField()
    channel = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=["active", "archived", "deleted"])
    title_by_person = serializers.BooleanField(help_text="a person set the title; none is generated then")
    started_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField(help_text="last activity: a turn added or finished, a change")
    archived_at = serializers.DateTimeField(allow_null=True)
    deleted_at = serializers.DateTimeField(allow_null=True)
    turns = serializers.IntegerField(help_text="visible turns")
    usage = SessionUsage()


class SessionList(Output):
    sessions = Session(many=True)
    next = serializers.URLField(allow_null=True, help_text="the next page, or null")


class Deleted(Output):
    deleted = serializers.IntegerField()


class Truncated(Output):
    session = serializers.UUIDField()
    kept = serializers.IntegerField(help_text="visible turns kept")
    deleted = serializers.IntegerField(help_text="turns deleted, hidden ones included")


class Prompts(Output):
    prompts = serializers.ListField(child=serializers.CharField(), help_text="suggested prompts")


# --- Providers and the account ----------------------------------------------------------


class Provider(Output):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["openai_compat", "anthropic", "demo"])
    modes = serializers.ListField(
        child=serializers.ChoiceField(
            choices=[("chat", "chat messages"), ("completion", "a completion prompt")]
        ),
        help_text="the channel modes it can serve",
    )
    models = serializers.ListField(child=serializers.CharField(allow_blank=True))


class ProviderList(Output):
    providers = Provider(many=True)


class AccountUsage(Output):
    """Used today (UTC)."""

    messages = serializers.IntegerField()
    tokens = serializers.IntegerField()


class AccountLimits(Output):
    """The limits that apply (0 = unlimited)."""

    max_message_chars = serializers.IntegerField()
    messages_per_minute = serializers.IntegerField()
    daily_messages = serializers.IntegerField()
    daily_tokens = serializers.IntegerField()


class Preferences(Output):
    """The caller's defaults: used where a channel's member_params offers the model."""

    provider = serializers.CharField(allow_blank=True)
    model = serializers.CharField(allow_blank=True)
    instruction = serializers.IntegerField(allow_null=True)
    memory_enabled = serializers.BooleanField(help_text="replies may use the caller's memories")
    memory_in_shared_rooms = serializers.BooleanField(
        help_text="also in rooms others read, where the owner turned memory on"
    )


class Account(Output):
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    is_moderator = serializers.BooleanField()
    usage = AccountUsage()
    limits = AccountLimits()
    preferences = Preferences()


class Instruction(Output):
    id = serializers.IntegerField()
    name = serializers.CharField()
    text = serializers.CharField()
    shared = serializers.BooleanField(help_text="shared with everyone (managed in the admin)")
    mine = serializers.BooleanField(help_text="the caller's own")


class InstructionList(Output):
    instructions = Instruction(many=True)


# (Named in settings.SPECTACULAR_SETTINGS ENUM_NAME_OVERRIDES, as `MemoryOriginEnum`.)
MEMORY_ORIGINS = ["user", "tool", "extracted"]


class Memory(Output):
    """A fact replies remember about the caller (chat/agents/memory.py)."""

    id = serializers.UUIDField()
    text = serializers.CharField()
    origin = serializers.ChoiceField(
        choices=MEMORY_ORIGINS,
        help_text="user: written by the caller; tool: saved by the bot; extracted: after a session",
    )
    source_turn = serializers.IntegerField(allow_null=True, help_text="the turn it came from")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True, help_text="null: never expires")


class MemoryList(Output):
    memories = Memory(many=True)


class Token(Output):
    token = serializers.CharField(help_text="shown only in this answer")


# --- Knowledge bases --------------------------------------------------------------------

# (Named in settings.SPECTACULAR_SETTINGS ENUM_NAME_OVERRIDES: `status` names other enums too.)
KNOWLEDGE_DOCUMENT_STATUSES = ["waiting", "indexing", "ready", "failed"]


class KnowledgeDocument(Output):
    """A document of a base: `waiting` (its upload is still being read) → `indexing`
    (`progress` 0–100) → `ready` | `failed` (`error`: why)."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=KNOWLEDGE_DOCUMENT_STATUSES)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    error = serializers.CharField(allow_null=True, help_text="why it failed")
    chunks = serializers.IntegerField(help_text="passages indexed")
    upload = serializers.UUIDField(allow_null=True, help_text="the upload it came from (null: pasted text)")
    created_at = serializers.DateTimeField()


class KnowledgeBase(Output):
    """Documents to search: a person's own (`owner`) or a channel's (`channel`)."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    owner = serializers.CharField(allow_null=True, help_text="a personal base's owner")
    channel = serializers.CharField(allow_null=True, help_text="a channel base's channel")
    embedder = serializers.CharField(help_text="the model that embeds its passages")
    dims = serializers.IntegerField()
    documents = KnowledgeDocument(many=True)
    can_manage = serializers.BooleanField(help_text="the caller may change it and its documents")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class KnowledgeBaseList(Output):
    knowledge_bases = KnowledgeBase(many=True)


class KnowledgeDocumentList(Output):
    documents = KnowledgeDocument(many=True)


class NamedRef(Output):
    id = serializers.UUIDField()
    name = serializers.CharField()


class SearchResult(Output):
    chunk = serializers.IntegerField(help_text="the passage's id (GET …/chunks/{chunk})")
    score = serializers.FloatField(min_value=0, max_value=1)
    text = serializers.CharField()
    document = NamedRef()
    page = serializers.IntegerField(allow_null=True)


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "bases whose query embedding failed (searched by keywords only): id → reason",
    }
)
class FailedBases(serializers.DictField):
    pass


class SearchResults(Output):
    results = SearchResult(many=True, help_text="best first")
    failed = FailedBases()


class KnowledgeChunk(Output):
    """One passage, as a citation links to it."""

    id = serializers.IntegerField()
    text = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    section = serializers.CharField(allow_blank=True)
    document = NamedRef()
    knowledge_base = NamedRef()


# --- Errors -----------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}]
        },
        "description": "the messages of each bad field (nested for framing, params and list items)",
    }
)
class FieldErrors(serializers.DictField):
    pass


class Error(Output):
    """Every refusal, ours and the framework's own (not found, not logged in, a bad
    token, the CSRF check): `code` is one of the protocol's error codes."""

    detail = serializers.CharField()
    code = serializers.ChoiceField(choices=list(HTTP_STATUS))
    # (DRF's metaclass takes declared fields out of the class, so this one does not hide
    # Serializer.fields at run time; mypy sees only the class body.)
    fields = FieldErrors(required=False, help_text="with invalid")  # type: ignore[assignment]
    retry_after = serializers.IntegerField(
        required=False, help_text="seconds, with rate_limited, quota_exceeded and unavailable"
    )


ERROR_MEANINGS = {
    400: "bad input: bad_json, unknown_type or invalid (with `fields`); no_vision: an image for a model "
    "that reads none; language_unavailable: no transcription engine for that language",
    401: "not logged in (auth_required), or a bad or revoked token",
    403: "not allowed: forbidden (also a token without the scope the operation names), read_only or "
    "muted (or a session caller without the CSRF token)",
    404: "not found, or private and not the caller's to see",
    409: "locked: the channel is locked; not_ready: an attachment is not processed yet",
    413: "too_long: over MAX_MESSAGE_CHARS; too_large: over MAX_UPLOAD_BYTES or MAX_ATTACHMENTS_PER_MESSAGE",
    415: "unsupported_type: the file's bytes are of a type not accepted",
    429: "rate_limited or quota_exceeded, with `retry_after` and Retry-After",
    502: "provider_error: the model failed",
    503: "unavailable: the database or Redis cannot be reached; nothing was changed (`retry_after`)",
}


def errors(*statuses: int) -> dict[Any, Any]:
    """The error answers an endpoint can give, for ``extend_schema(responses=...)``;
    every endpoint can answer 401 (a bad token), 403 (a token without the scope) and 503."""
    wanted = sorted({401, 403, 503, *statuses})
    return {
        (code, "application/json"): OpenApiResponse(Error, description=ERROR_MEANINGS[code])
        for code in wanted
    }


EVENT_STREAM = OpenApiResponse(
    OpenApiTypes.STR,
    description="Server-Sent Events: `id: {seq}`, `event: {type}`, `data: {json}` (docs/protocol.md)",
)

# Described event by event (the shape schemathesis checks each event of a stream against).
PROMPT_STREAM = OpenApiResponse(
    {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": ["prompt", "error", "done"]},
            "data": {"type": "string", "description": "JSON: {index, text} · {code, text} · {prompts}"},
        },
        "required": ["event", "data"],
    },
    description="Server-Sent Events, unnumbered: `prompt` per suggestion, `error` if the model "
    "failed, then `done`",
)
