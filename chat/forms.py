"""Forms of the pages. They only shape input; the services decide what is valid."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError

from chat.errors import ServiceError
from chat.models import SCOPES, Channel
from chat.scopes import MODERATE, SCOPE_LABELS


class ServiceForm(forms.Form):
    """A form whose input a service checks."""

    def add_service_error(self, error: ServiceError) -> None:
        """Show a service's refusal next to the fields it names."""
        fields = error.fields or {}
        named = [field for field in fields if field in self.fields]
        for field in named:
            messages = fields[field]
            self.add_error(field, messages if isinstance(messages, list) else [str(messages)])
        if not named:
            self.add_error(None, error.text)


class ChannelForm(ServiceForm):
    name = forms.CharField(
        max_length=64,
        help_text="1–64 of a-z, 0-9, - and _, starting with a letter or digit.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    title = forms.CharField(max_length=200, required=False)
    visibility = forms.ChoiceField(choices=Channel.Visibility.choices, initial=Channel.Visibility.PUBLIC)
    mode = forms.ChoiceField(choices=Channel.Mode.choices, initial=Channel.Mode.CHAT)


class PreferencesForm(ServiceForm):
    """A user's defaults: ``model`` is a "provider/model" pair (or none)."""

    model = forms.ChoiceField(required=False, label="Default model")
    instruction = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="Default instruction"
    )

    def __init__(self, *args: Any, models: list[str], instructions: list[tuple[int, str]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        none = [("", "— the channel's —")]
        self.fields["model"].choices = none + [(pair, pair) for pair in models]  # type: ignore[attr-defined]
        self.fields["instruction"].choices = none + instructions  # type: ignore[attr-defined]

    def changes(self) -> dict[str, Any]:
        provider, _, model = self.cleaned_data["model"].partition("/")
        return {"provider": provider, "model": model, "instruction": self.cleaned_data["instruction"]}


class InstructionForm(ServiceForm):
    """One of the user's own instructions, new or changed (chat/services/instructions.py)."""

    name = forms.CharField(max_length=100)
    text = forms.CharField(max_length=20000, strip=False, widget=forms.Textarea(attrs={"rows": 4}))


class TokenForm(ServiceForm):
    """A new named API token (chat/services/tokens.py checks the rest)."""

    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    scopes = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (UTC, optional)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args: Any, moderator: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        offered = [s for s in SCOPES if moderator or s != MODERATE]
        self.fields["scopes"].choices = [(s, f"{s} — {SCOPE_LABELS[s]}") for s in offered]  # type: ignore[attr-defined]


class SignupForm(UserCreationForm[Any]):
    pass


class ThrottledLoginMixin:
    """A login form that shows a throttled attempt (chat.login_throttle) as its error,
    in place of the server error the backend's refusal would otherwise be."""

    throttled: ServiceError | None = None

    def clean(self) -> Any:
        try:
            return super().clean()  # type: ignore[misc]
        except ServiceError as error:
            self.throttled = error
            raise ValidationError(error.text, code=error.code) from error


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
