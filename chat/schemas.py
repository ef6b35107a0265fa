"""What clients may send: one strict schema per action, shared by the REST API and the
WebSocket, so both transports accept exactly the same input and refuse it in the same
words (`invalid` with `fields`).

Strict means: no key the action does not define, and no coercion. DRF's own fields turn
"5" and 5.0 into 5, "yes" into True and 5 into "5", and trim strings; a client that sends
those gets an answer built from something it did not send. Here an integer is a JSON
integer, a number a JSON number, a string a JSON string (as sent, and without NUL, which
PostgreSQL text cannot hold), a boolean a JSON boolean. Checks that need the database or
the settings of the moment (text length, blank text, a provider's existence, framing
merged with the channel's) stay in the services and answer with their own codes.
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chat.errors import ServiceError
from chat.models import channel_name_validator

# --- strict fields -----------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A JSON string, taken as sent: not trimmed unless asked, never NUL (DRF's
    CharField refuses "\\u0000" already: "Null characters are not allowed.")."""

    default_error_messages = {"invalid": "Expected a string."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not a bool (Python's bool is an int), not "5", not 5.0."""

    default_error_messages = {"invalid": "Expected an integer."}

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictFloatField(serializers.FloatField):
    """A JSON number (integer or not), finite; not a bool, not "0.5"."""

    default_error_messages = {"invalid": "Expected a number."}

    def to_internal_value(self, data: Any) -> float:
        if not isinstance(data, (int, float)) or isinstance(data, bool) or not math.isfinite(data):
            self.fail("invalid")
        return float(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """true or false; not "yes", "true", 1 or "on"."""

    default_error_messages = {"invalid": "Expected true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictChoiceField(serializers.ChoiceField):
    """One of the choices, as a JSON string (DRF would match 5 to "5")."""

    default_error_messages = {"invalid_choice": "Expected one of: {choices}."}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str) or data not in self.choice_strings_to_values:
            self.fail("invalid_choice", choices=", ".join(str(choice) for choice in self.choices))
        return self.choice_strings_to_values[data]


class StrictUUIDField(serializers.UUIDField):
    """A UUID as a JSON string (DRF would read an integer as one)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StrictDateTimeField(serializers.DateTimeField):
    """An ISO 8601 moment as a JSON string (one without an offset is read in UTC)."""

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        return super().to_internal_value(value)


THINKING_LEVELS = ("low", "medium", "high")


@extend_schema_field({"oneOf": [{"type": "boolean"}, {"type": "string", "enum": list(THINKING_LEVELS)}]})
class ThinkingField(serializers.Field):  # type: ignore[type-arg]
    """Reasoning before the answer: true, false, or an effort ("low", "medium", "high");
    true means "medium" (chat/generation/providers/base.py thinking_level)."""

    default_error_messages = {"invalid": 'Expected true, false, "low", "medium" or "high".'}

    def to_internal_value(self, data: Any) -> bool | str:
        if isinstance(data, bool) or data in THINKING_LEVELS:
            return data  # type: ignore[no-any-return]
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


class StrictObjectField(serializers.DictField):
    """A JSON object, passed on whole (framing and params are checked key by key when
    they are merged with the channel's own, in chat/framing.py)."""

    default_error_messages = {"not_a_dict": "Expected an object."}


class StrictListField(serializers.ListField):
    default_error_messages = {"not_a_list": "Expected a list."}


class StrictSerializer(serializers.Serializer[Any]):
    """Rejects keys it does not know instead of ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


# --- one schema per action ----------------------------------------------------------------
# (Named *Serializer: drf-spectacular names the OpenAPI components after them.)


# An Instruction's id (chat.models.Instruction); null: none, even where the channel has one.
def instruction_id_field() -> StrictIntegerField:
    return StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)


class RegenerateSerializer(StrictSerializer):
    # framing changes the channel (owner, moderator); params, thinking and instruction
    # apply to this reply only (chat/choices.py).
    framing = StrictObjectField(required=False)
    params = StrictObjectField(required=False)
    thinking = ThinkingField(required=False)
    instruction = instruction_id_field()
    # An agent's name (GET /api/agents) to answer this reply: the channel's, any where
    # members may choose (agent_choice "members"), any for the owner; the service checks.
    agent = StrictCharField(required=False, max_length=64)
    # Web search for this reply: true adds the web_search tool (400 where the instance
    # has no search endpoint), false leaves it out; the service checks.
    web_search = StrictBooleanField(required=False)


class SocketMessageSerializer(RegenerateSerializer):
    """A message over the WebSocket (no seed-form image: upload it, then attach it)."""

    # Blank and over-long text are the service's to refuse (`invalid`, `too_long`);
    # text may be blank when attachments are sent.
    text = StrictCharField(allow_blank=True)
    # Ids of the caller's ready uploads; how many, and whose, is the service's to check
    # (`too_large`, `invalid`, `not_ready`, naming the id).
    attachments = StrictListField(child=StrictCharField(max_length=100), required=False)
    # Knowledge bases searched for this reply besides the channel's attached ones; which
    # the caller may use is the service's to check (`invalid`, naming the id).
    knowledge_base_ids = StrictListField(child=StrictCharField(max_length=100), required=False, max_length=20)


class MessageSerializer(SocketMessageSerializer):
    """A message over REST: also the seed form's image, sent inline as base64 (a data:
    URL's prefix is allowed), which becomes an upload of the caller."""

    image = StrictCharField(required=False)
    image_mime = StrictCharField(required=False, max_length=100)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "image_mime" in attrs and "image" not in attrs:
            raise serializers.ValidationError({"image_mime": ["Only with image."]})
        return attrs


class InjectSerializer(StrictSerializer):
    role = StrictChoiceField(choices=["user", "agent", "bot"])
    text = StrictCharField(allow_blank=True)


class ResetSerializer(StrictSerializer):
    """No fields."""


class InterruptSerializer(StrictSerializer):
    """No fields."""


class ToolDecisionSerializer(StrictSerializer):
    """approve_tool / deny_tool: the call waiting for approval (its Step's call_id)."""

    call_id = StrictCharField(max_length=64)


class ToolApprovalSerializer(StrictSerializer):
    """POST /api/channels/{name}/tool-approvals."""

    call_id = StrictCharField(max_length=64)
    approve = StrictBooleanField()


class PingSerializer(StrictSerializer):
    """No fields."""


class GetHistorySerializer(StrictSerializer):
    since = StrictIntegerField(required=False, allow_null=True)


class GetTurnSerializer(StrictSerializer):
    id = StrictIntegerField(min_value=1, max_value=2**63 - 1)


class ChannelCreateSerializer(StrictSerializer):
    name = StrictCharField(validators=[channel_name_validator])
    # A title is display text: surrounding blanks are dropped, as before.
    title = StrictCharField(max_length=200, required=False, allow_blank=True, trim_whitespace=True)
    visibility = StrictChoiceField(choices=["public", "private"], required=False)
    mode = StrictChoiceField(choices=["chat", "completion"], required=False)
    framing = StrictObjectField(required=False)
    params = StrictObjectField(required=False)


class ChannelUpdateSerializer(StrictSerializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True, trim_whitespace=True)
    visibility = StrictChoiceField(choices=["public", "private"], required=False)
    locked = StrictBooleanField(required=False)
    framing = StrictObjectField(required=False)
    params = StrictObjectField(required=False)
    # What members may choose per message (chat/choices.py checks it whole).
    member_params = StrictObjectField(required=False)
    instruction = instruction_id_field()
    # Ids of knowledge bases every reply searches (the channel's own, the caller's own, or
    # ones attached already); whose, and how many, is the service's to check.
    knowledge_base_ids = StrictListField(
        child=StrictCharField(max_length=100), required=False, max_length=1000
    )
    # Issue 17 (chat/agents/policy.py checks them: which names exist, at most 64, the
    # approvals among the tools, chat mode only).
    tools = StrictListField(child=StrictCharField(max_length=200), required=False, max_length=1000)
    tools_requiring_approval = StrictListField(
        child=StrictCharField(max_length=200), required=False, max_length=1000
    )
    agent = StrictCharField(required=False, allow_null=True, max_length=64)
    agent_choice = StrictChoiceField(choices=["fixed", "members"], required=False)
    memory = StrictBooleanField(required=False)


class InstructionCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=100, trim_whitespace=True)
    text = StrictCharField(max_length=20000)


class InstructionUpdateSerializer(StrictSerializer):
    name = StrictCharField(max_length=100, required=False, trim_whitespace=True)
    text = StrictCharField(max_length=20000, required=False)


class PreferencesSerializer(StrictSerializer):
    """PATCH /api/me: the caller's defaults ("" clears provider and model) and whether
    replies use their memories (chat/agents/memory.py)."""

    provider = StrictCharField(max_length=64, required=False, allow_blank=True)
    model = StrictCharField(max_length=200, required=False, allow_blank=True)
    instruction = instruction_id_field()
    memory_enabled = StrictBooleanField(required=False)
    memory_in_shared_rooms = StrictBooleanField(required=False)


class MemoryCreateSerializer(StrictSerializer):
    """POST /api/me/memories. Blank and over-long text are the service's to refuse."""

    text = StrictCharField()
    expires_at = StrictDateTimeField(required=False, allow_null=True)


class MemoryUpdateSerializer(StrictSerializer):
    text = StrictCharField(required=False)
    expires_at = StrictDateTimeField(required=False, allow_null=True)


class MemberSerializer(StrictSerializer):
    username = StrictCharField(max_length=150)


class TruncateSerializer(StrictSerializer):
    keep = StrictIntegerField(min_value=0)
    # "end": the most recent ``keep`` visible turns stay; "start": the first ones.
    # (Before issue 14 the first ones stayed, with no choice.) Declared through locals():
    # the field's name is a Python keyword.
    locals()["from"] = StrictChoiceField(choices=["end", "start"], required=False)


class SessionUpdateSerializer(StrictSerializer):
    # A title is display text: surrounding blanks are dropped; "" clears it.
    title = StrictCharField(max_length=200, required=False, allow_blank=True, trim_whitespace=True)
    status = StrictChoiceField(choices=["active", "archived", "deleted"], required=False)


class PromptsSerializer(StrictSerializer):
    # Over-long text is the service's to refuse (`too_long`).
    text = StrictCharField(allow_blank=True)
    n = StrictIntegerField(min_value=1, max_value=5, required=False)
    kind = StrictChoiceField(choices=["creative", "task", "question", "continuation"], required=False)
    channel = StrictCharField(max_length=64, required=False)


class BulkDeleteSerializer(StrictSerializer):
    ids = StrictListField(child=StrictUUIDField(), max_length=1000)


class KnowledgeBaseCreateSerializer(StrictSerializer):
    # Trimmed and measured (1–100, ≤ 2000) by the service, which names the field.
    name = StrictCharField()
    description = StrictCharField(required=False, allow_blank=True)
    channel = StrictCharField(required=False, max_length=64, help_text="a channel's base: the channel's name")


class KnowledgeBaseUpdateSerializer(StrictSerializer):
    name = StrictCharField(required=False)
    description = StrictCharField(required=False, allow_blank=True)


class KnowledgeTextSerializer(StrictSerializer):
    name = StrictCharField()
    text = StrictCharField(allow_blank=True)


class KnowledgeDocumentsSerializer(StrictSerializer):
    """One of: ``uploads`` (ids of the caller's uploads), ``text`` with ``name`` (one
    pasted text), ``texts`` (several). Lengths and ownership are the service's to check
    (`too_large`, `invalid`, `unsupported_type`, naming the field)."""

    uploads = StrictListField(child=StrictCharField(max_length=100), required=False, max_length=1000)
    text = StrictCharField(required=False, allow_blank=True)
    name = StrictCharField(required=False)
    texts = StrictListField(child=KnowledgeTextSerializer(), required=False, max_length=1000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("text" in attrs) != ("name" in attrs):
            raise serializers.ValidationError(
                {"name" if "text" in attrs else "text": ["Required with text."]}
            )
        forms = [key for key in ("uploads", "text", "texts") if key in attrs]
        if len(forms) != 1:
            text = "Send one of uploads, text (with name) or texts."
            raise serializers.ValidationError({"non_field_errors": [text]})
        return attrs


class KnowledgeSearchSerializer(StrictSerializer):
    query = StrictCharField(min_length=1, max_length=2000)
    limit = StrictIntegerField(required=False, min_value=1, max_value=50)
    threshold = StrictFloatField(required=False, min_value=0, max_value=1)


# The WebSocket's client messages: `type` picks the schema, the other keys must fit it.
SOCKET_MESSAGES: dict[str, type[StrictSerializer]] = {
    "message": SocketMessageSerializer,
    "regenerate": RegenerateSerializer,
    "inject": InjectSerializer,
    "reset": ResetSerializer,
    "interrupt": InterruptSerializer,
    "approve_tool": ToolDecisionSerializer,
    "deny_tool": ToolDecisionSerializer,
    "get_history": GetHistorySerializer,
    "get_turn": GetTurnSerializer,
    "ping": PingSerializer,
}


def error_fields(errors: Any) -> Any:
    """DRF's errors as plain JSON: list items' errors come keyed by their index (an int),
    which JSON object keys cannot be, so keys become strings ("0")."""
    if isinstance(errors, dict):
        return {str(key): error_fields(value) for key, value in errors.items()}
    if isinstance(errors, list):
        return [error_fields(item) if isinstance(item, (dict, list)) else str(item) for item in errors]
    return str(errors)


def validate(schema: type[StrictSerializer], data: Any) -> dict[str, Any]:
    """The validated input, or ServiceError("invalid") naming every bad field."""
    if not isinstance(data, dict):
        raise ServiceError(
            "invalid", "Expected a JSON object.", fields={"non_field_errors": ["Expected a JSON object."]}
        )
    serializer = schema(data=data)
    if not serializer.is_valid():
        fields = error_fields(serializer.errors)
        raise ServiceError("invalid", f"Invalid input: {', '.join(fields)}.", fields=fields)
    return dict(serializer.validated_data)


def validate_socket_message(message: dict[str, Any]) -> dict[str, Any]:
    """A WebSocket frame checked against its type's schema (`type` is the envelope)."""
    schema = SOCKET_MESSAGES[message["type"]]
    return validate(schema, {key: value for key, value in message.items() if key != "type"})
