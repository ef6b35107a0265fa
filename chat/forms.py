"""Forms of the pages. They only shape input; the services decide what is valid."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from chat.errors import ServiceError
from chat.models import Channel


class ChannelForm(forms.Form):
    name = forms.CharField(
        max_length=64,
        help_text="1–64 of a-z, 0-9, - and _, starting with a letter or digit.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    title = forms.CharField(max_length=200, required=False)
    visibility = forms.ChoiceField(choices=Channel.Visibility.choices, initial=Channel.Visibility.PUBLIC)
    mode = forms.ChoiceField(choices=Channel.Mode.choices, initial=Channel.Mode.CHAT)

    def add_service_error(self, error: ServiceError) -> None:
        """Show a service's refusal next to the fields it names."""
        fields = error.fields or {}
        named = [field for field in fields if field in self.fields]
        for field in named:
            messages = fields[field]
            self.add_error(field, messages if isinstance(messages, list) else [str(messages)])
        if not named:
            self.add_error(None, error.text)


class SignupForm(UserCreationForm):
    pass
