"""Colloquy's data: channels, sessions, turns, providers, memberships, audit records."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.files.storage import storages
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from chat.agents.steps import public_steps
from chat.knowledge.fields import EmbeddingField
from chat.realtime import frames

# What a bot turn keeps of its generation that clients fetch on demand instead of
# receiving in every frame: each can be as large as the context window or the framing's
# preamble. The other bot fields (params, usage, timings, ...) are a few hundred bytes.
SUBSTRATE_FIELDS = ("prompt", "raw_completion", "framing")

CHANNEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
CHANNEL_NAME_HELP = "1–64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit."
channel_name_validator = RegexValidator(CHANNEL_NAME_PATTERN, CHANNEL_NAME_HELP)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as the protocol writes times."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def uploads_storage() -> Any:
    """The "uploads" storage of settings.STORAGES (a callable: migrations name it
    instead of recording where files go)."""
    return storages["uploads"]


def new_watch_key() -> str:
    return secrets.token_urlsafe(24)


class Provider(models.Model):
    """A model server, managed by admins. Its API key lives in an environment variable."""

    class Kind(models.TextChoices):
        OPENAI_COMPAT = "openai_compat", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic Messages API"
        DEMO = "demo", "Built-in demo (offline)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    base_url = models.URLField(blank=True, help_text="Empty for the demo provider.")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable that holds the API key (never the key).",
        validators=[RegexValidator(r"^[A-Za-z_][A-Za-z0-9_]*\Z", "An environment variable name.")],
    )
    model_names = models.JSONField(
        "models", default=list, blank=True, help_text="Names of the models it serves."
    )
    default_model = models.CharField(max_length=200, blank=True)
    context_window = models.PositiveIntegerField(default=4096)
    extended_sampling = models.BooleanField(
        default=True,
        help_text="Send top_k and repeat_penalty (llama.cpp, vLLM, Ollama). Untick for OpenAI itself.",
    )
    reasoning_effort = models.BooleanField(
        default=False,
        help_text="Send reasoning_effort when a message asks for thinking (OpenAI-compatible "
        "reasoning models). Anthropic providers use extended thinking instead.",
    )
    vision = models.BooleanField(
        default=False,
        help_text="Its models read images (OpenAI-compatible image_url parts, Anthropic image blocks).",
    )
    vision_models = models.JSONField(
        default=list,
        blank=True,
        help_text="With vision ticked: the models that read images; empty means all of them.",
    )
    transcription = models.BooleanField(
        default=False,
        help_text="Serves OpenAI-compatible /v1/audio/transcriptions (OpenAI, Groq, a whisper server).",
    )
    transcription_model = models.CharField(
        max_length=200, blank=True, help_text="The transcription model, e.g. whisper-1."
    )
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=100, help_text="Lower is tried first in failover.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def modes(self) -> list[str]:
        """The channel modes this provider can serve."""
        if self.kind == self.Kind.ANTHROPIC:
            return ["chat"]
        return ["chat", "completion"]

    @property
    def served_models(self) -> list[str]:
        """The model names it offers (GET /api/providers)."""
        if self.kind == self.Kind.DEMO:
            return ["demo"]
        return list(self.model_names or [self.model_name])

    def sees_images(self, model: str = "") -> bool:
        """Whether ``model`` (default: its default model) reads images. The demo always
        does: it exists so that a fresh install, with no model, shows every feature
        offline, pictures included (it says it received them, not what they show)."""
        if self.kind == self.Kind.DEMO:
            return True
        if not self.vision:
            return False
        return not self.vision_models or (model or self.model_name) in self.vision_models

    @property
    def model_name(self) -> str:
        if self.kind == self.Kind.DEMO:
            return "demo"
        return self.default_model or (self.model_names[0] if self.model_names else "")


class Instruction(models.Model):
    """A named, reusable system prompt ("Concise", "Socratic tutor", a mood). Shared ones
    (no owner) are managed in the admin; each user manages their own."""

    name = models.CharField(max_length=100)
    text = models.TextField(max_length=20000)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="instructions",
        help_text="Empty: shared with everyone.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="one_instruction_name_per_owner"),
            models.UniqueConstraint(
                fields=["name"], condition=Q(owner__isnull=True), name="one_shared_instruction_name"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Channel(models.Model):
    """A named room with its framing, sampling parameters and provider."""

    class Visibility(models.TextChoices):
        PUBLIC = "public"
        PRIVATE = "private"

    class Mode(models.TextChoices):
        CHAT = "chat"
        COMPLETION = "completion"

    name = models.CharField(
        max_length=64, unique=True, validators=[channel_name_validator], help_text=CHANNEL_NAME_HELP
    )
    title = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_channels",
    )
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default="public")
    mode = models.CharField(max_length=12, choices=Mode.choices, default="chat")
    framing = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.SET_NULL, related_name="channels"
    )
    # What members (not the owner) may choose per message, and within which bounds
    # (chat/choices.py); {} lets them choose nothing.
    member_params = models.JSONField(default=dict, blank=True)
    instruction = models.ForeignKey(
        Instruction, null=True, blank=True, on_delete=models.SET_NULL, related_name="channels"
    )
    locked = models.BooleanField(default=False)
    # Agents (issue 17): the tools its replies may call (chat/agents/registry.py names
    # them: "calculator", "mcp:<server>/<tool>", …), those that wait for a person's
    # approval, the agent it is bound to, and whether members may name another agent.
    tools = models.JSONField(default=list, blank=True)
    tools_requiring_approval = models.JSONField(default=list, blank=True)
    agent = models.ForeignKey(
        "Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="channels"
    )
    agent_choice = models.CharField(
        max_length=10,
        choices=[("fixed", "only the channel's agent"), ("members", "members may name any agent")],
        default="fixed",
    )
    # Shared rooms: replies may use the memories of members who consented to it
    # (UserPreference.memory_in_shared_rooms). Off until the owner turns it on.
    memory = models.BooleanField(default=False)
    # The knowledge bases every reply of the channel searches (the channel's own bases,
    # and personal bases its owner or a moderator attached).
    knowledge_bases: models.ManyToManyField[KnowledgeBase, Any] = models.ManyToManyField(
        "KnowledgeBase", blank=True, related_name="attached_to"
    )
    watch_key = models.CharField(max_length=64, default=new_watch_key)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("moderate_channel", "Can lock, purge, interrupt and rotate the watch key of channels")
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(name__regex=CHANNEL_NAME_PATTERN.replace(r"\Z", "$")),
                name="channel_name_format",
            ),
            models.CheckConstraint(
                condition=Q(visibility__in=["public", "private"]), name="channel_visibility_valid"
            ),
            models.CheckConstraint(condition=Q(mode__in=["chat", "completion"]), name="channel_mode_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def active_session(self) -> Session | None:
        return self.sessions.filter(status=Session.Status.ACTIVE).first()

    @property
    def is_public(self) -> bool:
        return self.visibility == self.Visibility.PUBLIC


class Session(models.Model):
    """One conversation in a channel. Reset archives it; nothing is deleted by reset."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        ARCHIVED = "archived"
        DELETED = "deleted"  # soft: purged after RETENTION_DAYS

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="sessions")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="started_sessions",
    )
    title = models.CharField(max_length=200, blank=True)
    # A title a person set is never replaced by a generated one.
    title_by_person = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default="active")
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # Kept by the database itself (triggers on chat_turn: chat/turn_counts.py), whoever adds,
    # hides, unhides or deletes a turn and however (a queryset update, a cascade): lists
    # show it without counting a session's turns on every read. Django never writes it
    # after the insert (save() below).
    visible_turns = models.IntegerField(default=0, editable=False, help_text="Turns not hidden.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel"], condition=Q(status="active"), name="one_active_session_per_channel"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "archived", "deleted"]), name="session_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["channel", "-created_at"]),
            models.Index(fields=["-updated_at", "-id"], name="session_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.channel.name} · {str(self.id)[:8]}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # An instance read before turns came or went holds an older count than the row:
        # an update writes every field but that one.
        if (
            not (self._state.adding or args or kwargs.get("force_insert"))
            and kwargs.get("update_fields") is None
        ):
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields if not f.primary_key and f.name != "visible_turns"
            ]
        super().save(*args, **kwargs)

    @classmethod
    def touch(cls, session_id: Any) -> None:
        """Mark activity in the session now (a turn added or finished): lists show the
        most recently active sessions first. Renames and status changes go through
        save(), which sets updated_at itself."""
        cls.objects.filter(pk=session_id).update(updated_at=timezone.now())


class Turn(models.Model):
    """One message of a session: a user's, the bot's, or an injected agent line."""

    class Role(models.TextChoices):
        USER = "user"
        BOT = "bot"
        AGENT = "agent"

    class FinishReason(models.TextChoices):
        STOP = "stop"
        LENGTH = "length"
        INTERRUPTED = "interrupted"
        ERROR = "error"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="turns")
    role = models.CharField(max_length=5, choices=Role.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="turns"
    )
    text = models.TextField(blank=True)
    hidden = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Bot turns only: what the model saw and did.
    truncated = models.BooleanField(default=False)
    rep_hint = models.CharField(max_length=200, null=True, blank=True)
    finish_reason = models.CharField(max_length=12, choices=FinishReason.choices, null=True, blank=True)
    reasoning = models.TextField(blank=True)
    prompt = models.TextField(blank=True)
    raw_completion = models.TextField(blank=True)
    framing = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    dropped_turns = models.PositiveIntegerField(
        default=0, help_text="Oldest turns left out so the prompt fit the context window."
    )
    # User turns: the per-message choices sent with it (params, thinking, instruction),
    # as checked; the bot turn answering it records what was used (params, instruction).
    request = models.JSONField(default=dict, blank=True)
    instruction = models.CharField(
        max_length=100, blank=True, help_text="Bot turns: the instruction applied."
    )
    # User turns: the files sent with it, as the protocol's Attachment objects (written
    # when the message is saved, each ready by then; a deleted upload stays listed with
    # status "deleted"). chat/uploads/ keeps the files themselves (Upload.turn).
    attachments = models.JSONField(default=list, blank=True)
    # A bot turn: the passages its prompt was given (the ``sources`` event's list).
    sources = models.JSONField(default=list, blank=True)
    # Bot turns (issue 17): the tool calls of the reply in order, each a Step object
    # of the protocol (chat/agents/steps.py), written as they happen.
    steps = models.JSONField(default=list, blank=True)
    agent = models.CharField(max_length=64, blank=True, help_text="The agent that wrote it, if any.")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(role__in=["user", "bot", "agent"]), name="turn_role_valid"),
            models.CheckConstraint(
                condition=Q(finish_reason__isnull=True)
                | Q(finish_reason__in=["stop", "length", "interrupted", "error"]),
                name="turn_finish_reason_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["session", "hidden", "id"]),
            models.Index(fields=["role", "finish_reason"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.role}: {self.text[:40]}"

    def to_dict(self, *, substrate: bool = False) -> dict[str, Any]:
        """The Turn object of the protocol. Frames (``history``, ``turn`` events) carry it
        without the substrate of a bot turn (SUBSTRATE_FIELDS): a prompt holds the whole
        transcript before the reply, up to the context window, so frames would grow with
        the square of the conversation and outgrow what the server may send. Clients
        fetch the substrate on demand (``get_turn``, ``GET /api/turns/{id}``), which is
        what ``substrate=True`` gives. Without it the object also fits one frame: text
        and reasoning beyond that are cut and flagged (only an instance whose replies are
        allowed more tokens than a frame holds ever sees this)."""
        data: dict[str, Any] = {
            "id": self.pk,
            "session": str(self.session_id),
            "role": self.role,
            "text": self.text,
            "author": self.author.get_username() if self.author_id and self.author else None,
            "created_at": iso(self.created_at),
            "hidden": self.hidden,
        }
        if self.role == self.Role.USER:
            data["request"] = self.request
            data["attachments"] = self.attachments
        if self.role == self.Role.BOT:
            data.update(
                author=None,
                truncated=self.truncated,
                rep_hint=self.rep_hint,
                finish_reason=self.finish_reason,
                reasoning=self.reasoning,
                prompt=self.prompt,
                raw_completion=self.raw_completion,
                framing=self.framing,
                params=self.params,
                instruction=self.instruction,
                provider=self.provider,
                model=self.model,
                usage=self.usage,
                timings=self.timings,
                dropped_turns=self.dropped_turns,
                sources=self.sources,
                steps=public_steps(self.steps),
                agent=self.agent or None,
            )
            if not substrate:
                for name in SUBSTRATE_FIELDS:
                    del data[name]
        if substrate:
            return data
        return frames.fit(data, frames.turn_budget(), ("reasoning", "text"))


class Membership(models.Model):
    """A user's place in a channel: needed to see and write in private channels."""

    class Role(models.TextChoices):
        MEMBER = "member"
        OWNER = "owner"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default="member")
    muted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "channel"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.channel} ({self.role})"


class ModerationAction(models.Model):
    """The audit record: who did what to what, when and why."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=40)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64)
    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("ban_user", "Can ban and unban users")]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# What an API token may do (issue 18). A scope never grants what its user may not do
# anyway: it only narrows. A browser session has every scope.
SCOPES = ("chats:read", "chats:write", "chats:delete", "files:write", "admin:moderate")


class ApiToken(models.Model):
    """One of a user's named API tokens. Only its SHA-256 is stored; the token is shown
    once. ``scopes``: what it may do (SCOPES); the token of ``POST /api/me/token`` (named
    LEGACY_NAME) has them all."""

    LEGACY_NAME = "API token"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default=LEGACY_NAME)
    scopes = models.JSONField(default=list)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The token that made this one (None: a browser session or a password did). Revoking
    # a token deletes what it made, all the way down: a leaked token cannot leave tokens
    # behind that outlive its revocation.
    made_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="made")

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="one_token_name_per_user")]

    def __str__(self) -> str:
        return f"token {self.name!r} of {self.user}"

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @classmethod
    def issue(cls, user: Any, made_by: ApiToken | None = None) -> str:
        """Create or rotate the user's full-scope token (LEGACY_NAME) and return it in the
        clear, once. ``made_by``: the token asking, if one is (rotating itself, it keeps
        whatever made it). What the old secret made is the service's to revoke
        (chat.services.tokens.rotate_full_token)."""
        raw = secrets.token_urlsafe(32)
        defaults: dict[str, Any] = {"key_hash": hash_token(raw), "scopes": list(SCOPES), "expires_at": None}
        if made_by is None or made_by.name != cls.LEGACY_NAME:
            defaults["made_by"] = made_by
        cls.objects.update_or_create(user=user, name=cls.LEGACY_NAME, defaults=defaults)
        return raw


# --- credits (issue 18) -----------------------------------------------------------------
# Amounts are integers of micro-credits (1 credit = CREDIT_UNITS): exact sums on SQLite
# and PostgreSQL alike, which decimals in F() arithmetic on SQLite are not.
CREDIT_UNITS = 1_000_000


class ModelPrice(models.Model):
    """Credits per 1,000 tokens of a provider's model. A model without a price costs
    CREDITS_DEFAULT_PRICE (the offline demo included)."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="prices")
    model = models.CharField(
        max_length=200,
        blank=True,
        help_text="Empty: every model of this provider without a price of its own.",
    )
    input_per_1k = models.DecimalField(
        max_digits=12, decimal_places=6, help_text="Credits per 1,000 prompt tokens (0 or more)."
    )
    output_per_1k = models.DecimalField(
        max_digits=12, decimal_places=6, help_text="Credits per 1,000 completion tokens (0 or more)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "model"], name="one_price_per_model"),
            models.CheckConstraint(
                condition=Q(input_per_1k__gte=0) & Q(output_per_1k__gte=0), name="prices_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.model or '*'}"


class Balance(models.Model):
    """A user's credits, in micro-credits: ``available`` to spend, ``held`` by replies
    under way. Changed only by chat.credits.services, in conditional updates."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="credit_balance"
    )
    available = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(held__gte=0), name="held_not_negative")]

    def __str__(self) -> str:
        return f"balance of {self.user}"


class CreditHold(models.Model):
    """Credits set aside for one reply: taken when it is asked for, claimed by the reply
    that answers it, settled once (a debit of what was used, a release of the rest)."""

    class Status(models.TextChoices):
        OPEN = "open"
        SETTLED = "settled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_holds")
    channel = models.ForeignKey("Channel", null=True, on_delete=models.SET_NULL, related_name="+")
    amount = models.BigIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    reply = models.ForeignKey("Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["channel", "status"]), models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"hold {self.pk} of {self.user}"


class LedgerEntry(models.Model):
    """One movement of a user's credits; rows are only ever added. Invariant per user:
    sum(grant) - sum(debit) + sum(refund) == available + held."""

    class Kind(models.TextChoices):
        GRANT = "grant"  # a negative grant is a revocation
        HOLD = "hold"
        DEBIT = "debit"
        RELEASE = "release"
        REFUND = "refund"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ledger")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    amount = models.BigIntegerField(help_text="Micro-credits.")
    hold = models.ForeignKey(
        CreditHold, null=True, blank=True, on_delete=models.SET_NULL, related_name="entries"
    )
    turn = models.ForeignKey("Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    estimated = models.BooleanField(
        default=False, help_text="Token counts estimated: the provider gave none."
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} for {self.user}"


class UserPreference(models.Model):
    """A user's own defaults, used where a channel lets members choose."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    instruction = models.ForeignKey(
        Instruction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Memory (issue 17): whether replies use this user's memories at all, and in rooms
    # others read (when the room's owner allows memory there).
    memory_enabled = models.BooleanField(default=True)
    memory_in_shared_rooms = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"preferences of {self.user}"


class SiteSettings(models.Model):
    """Instance-wide settings kept in the database (one row, pk 1), edited in the admin."""

    task_provider = models.ForeignKey(
        Provider,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The model for small jobs (session titles, prompt suggestions). "
        "Empty: the channel's own provider.",
    )
    task_model = models.CharField(max_length=200, blank=True, help_text="Empty: the provider's default.")

    class Meta:
        verbose_name = verbose_name_plural = "site settings"

    def __str__(self) -> str:
        return "site settings"

    @classmethod
    def load(cls) -> SiteSettings:
        return cls.objects.get_or_create(pk=1)[0]


def upload_path(upload: Upload, filename: str) -> str:
    """Where a file is stored: by owner and id, never by the name it came with."""
    return f"uploads/{upload.owner_id}/{upload.pk}"


class Upload(models.Model):
    """A file a user sent: a document, image, audio or video. Stored through the
    "uploads" storage (private files under var/, or an S3-compatible bucket), processed
    off the request path (chat/uploads/tasks.py), served only to those who may see it
    (chat/uploads/serving.py)."""

    class Kind(models.TextChoices):
        DOCUMENT = "document"
        IMAGE = "image"
        AUDIO = "audio"
        VIDEO = "video"

    class Status(models.TextChoices):
        UPLOADED = "uploaded"
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    channel = models.ForeignKey(
        Channel, null=True, blank=True, on_delete=models.CASCADE, related_name="uploads"
    )
    # The message it was sent with; set once, when the message is saved.
    # A turn deleted for good (by a moderator, a purge, a trim) takes its files along.
    turn = models.ForeignKey(Turn, null=True, blank=True, on_delete=models.CASCADE, related_name="uploads")
    name = models.CharField(max_length=255, help_text="The name it came with (shown, never a path).")
    mime = models.CharField(max_length=100, help_text="Its real type, read from its bytes.")
    size = models.PositiveBigIntegerField(default=0)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UPLOADED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    file = models.FileField(storage=uploads_storage, upload_to=upload_path, max_length=200)
    # What processing found: the text (a document's, a recording's transcript), and facts
    # such as pages, width and height, duration_s, truncated.
    text = models.TextField(blank=True)
    meta = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Processing runs started.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["channel", "-created_at"]),
            models.Index(fields=["status", "updated_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["document", "image", "audio", "video"]), name="upload_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["uploaded", "processing", "ready", "failed"]),
                name="upload_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.status})"

    @property
    def url(self) -> str:
        """Where its bytes are served (access checked per request; watchers of a private
        channel add ``?key=``)."""
        return f"/api/uploads/{self.pk}/content"

    def to_dict(self) -> dict[str, Any]:
        """The protocol's Upload object: the Attachment object and how processing goes."""
        return {
            **self.to_attachment(),
            "progress": self.progress,
            "error": self.error or None,
            "channel": self.channel.name if self.channel_id and self.channel else None,
            "created_at": iso(self.created_at),
        }

    def to_attachment(self) -> dict[str, Any]:
        """The protocol's Attachment object, as a turn carries it."""
        return {
            "id": str(self.pk),
            "name": self.name,
            "mime": self.mime,
            "size": self.size,
            "kind": self.kind,
            "status": self.status,
            "url": self.url,
        }


class KnowledgeBase(models.Model):
    """Documents to search, owned by one person or by one channel (a room's base is
    used by every reply there and visible to its members). Its chunks are embedded by
    one embedding model (``embedder``, ``dims``); re-embedding writes a new
    ``generation`` of chunks and switches to it at once, never mixing vectors."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    description = models.TextField(max_length=2000, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="knowledge_bases",
    )
    channel = models.ForeignKey(
        Channel, null=True, blank=True, on_delete=models.CASCADE, related_name="own_knowledge_bases"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Which model embeds its chunks: "local:<name>" (offline, in-process) or
    # "provider:<provider name>:<model>" (an OpenAI-compatible /v1/embeddings).
    embedder = models.CharField(max_length=300)
    dims = models.PositiveIntegerField()
    # Chunks of this generation are the ones searched.
    generation = models.PositiveIntegerField(default=1)
    # Set while a re-embedding is under way: the embedder it moves to.
    next_embedder = models.CharField(max_length=300, blank=True)
    # Bumped whenever its searchable chunks change (in the transaction that changes
    # them): in-process caches of its vectors compare it.
    revision = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(owner__isnull=False, channel__isnull=True)
                    | Q(owner__isnull=True, channel__isnull=False)
                ),
                name="knowledge_base_one_owner",
            )
        ]

    def __str__(self) -> str:
        return self.name


class KnowledgeDocument(models.Model):
    """One document of a base: from an upload (its extracted text, copied: the base
    keeps it when the upload goes) or pasted text."""

    class Status(models.TextChoices):
        WAITING = "waiting"  # its upload is still being read
        INDEXING = "indexing"
        READY = "ready"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    upload = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="knowledge_documents"
    )
    name = models.CharField(max_length=255)
    text = models.TextField(blank=True)
    # Where its pages or sheets start in ``text``: {"pages": [offset, ...]} or
    # {"sheets": [[title, offset], ...]}.
    meta = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.INDEXING)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["knowledge_base", "created_at"]), models.Index(fields=["status"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["waiting", "indexing", "ready", "failed"]),
                name="knowledge_document_status_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    def to_state(self) -> dict[str, Any]:
        """How its indexing goes: the ``knowledge_base_updated`` event's document, and
        the start of the protocol's Document object."""
        return {
            "id": str(self.pk),
            "name": self.name,
            "status": self.status,
            "progress": self.progress,
            "error": self.error or None,
            "chunks": self.chunk_count,
        }


class KnowledgeChunk(models.Model):
    """A passage of a document: its text, where it is, and its embedding."""

    id = models.BigAutoField(primary_key=True)
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(KnowledgeDocument, on_delete=models.CASCADE, related_name="chunks")
    generation = models.PositiveIntegerField()
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True)  # 1-based, when the file has pages
    section = models.CharField(max_length=200, blank=True)  # a heading or a sheet's title
    start = models.PositiveIntegerField(default=0)  # offsets in the document's text
    end = models.PositiveIntegerField(default=0)
    dims = models.PositiveIntegerField()
    embedding = EmbeddingField(null=True)

    class Meta:
        ordering = ["document", "ordinal"]
        indexes = [
            models.Index(fields=["knowledge_base", "generation"]),
            models.Index(fields=["document", "generation", "ordinal"]),
        ]

    def __str__(self) -> str:
        return f"chunk {self.pk} of {self.document_id}"


# --- agents (issue 17) -----------------------------------------------------------------


class Agent(models.Model):
    """A named bot: its model, instructions, tools, knowledge bases and default
    parameters. A channel may be bound to one; a message may name one."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)
    provider = models.ForeignKey(Provider, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model = models.CharField(max_length=200, blank=True, help_text="Empty: the provider's default.")
    instructions = models.TextField(max_length=20000, blank=True)
    tools = models.JSONField(default=list, blank=True)
    tools_requiring_approval = models.JSONField(default=list, blank=True)
    knowledge_bases: models.ManyToManyField[KnowledgeBase, Any] = models.ManyToManyField(
        "KnowledgeBase", blank=True, related_name="agents"
    )
    params = models.JSONField(default=dict, blank=True, help_text="Default parameters (max_tokens, …).")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class McpServer(models.Model):
    """A Model Context Protocol server whose tools replies may call. Streamable HTTP by
    URL; stdio (a command run on this machine) only when an admin configured it."""

    class Transport(models.TextChoices):
        HTTP = "http", "streamable HTTP"
        STDIO = "stdio", "stdio (a local command; admins only)"

    name = models.SlugField(max_length=64, unique=True)
    transport = models.CharField(max_length=8, choices=Transport.choices, default="http")
    url = models.URLField(blank=True, max_length=500)
    # stdio: the program and its arguments, a JSON list of strings.
    command = models.JSONField(default=list, blank=True)
    # Names of environment variables whose values are sent (HTTP: as the bearer token)
    # or passed (stdio): secrets stay out of the database.
    token_env = models.CharField(max_length=100, blank=True)
    env_names = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    timeout = models.FloatField(default=30.0, help_text="Seconds a tool call may take.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name


class Memory(models.Model):
    """A fact a user's replies remember: written by the ``memory`` tool, extracted after
    a session, or by the user on the account page."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memories")
    text = models.CharField(max_length=1000)
    source_turn = models.ForeignKey(Turn, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    origin = models.CharField(
        max_length=10,
        choices=[("tool", "the memory tool"), ("extracted", "extracted"), ("user", "written by the user")],
        default="user",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return self.text[:60]


class Checkpoint(models.Model):
    """A summary of a session's older turns, written when its prompt outgrew
    COMPACT_AT of the context window: later prompts use it and the turns after
    ``through_turn_id``."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="checkpoints")
    through_turn_id = models.BigIntegerField(help_text="The newest turn it summarises.")
    summary = models.TextField()
    turns = models.PositiveIntegerField(default=0, help_text="How many turns it summarises.")
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["through_turn_id"]

    def __str__(self) -> str:
        return f"checkpoint of {self.session_id} through {self.through_turn_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "session": str(self.session_id),
            "through_turn_id": self.through_turn_id,
            "turns": self.turns,
            "summary": self.summary,
            "created_at": iso(self.created_at),
        }
