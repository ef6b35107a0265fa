"""Prepare an instance: providers, the moderators group, an admin account and a public
demo channel."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from chat.generation.records import ensure_default_providers
from chat.models import Channel
from chat.permissions import ensure_moderators_group
from chat.services import create_channel


class Command(BaseCommand):
    help = "Ensure the providers, an admin account and the public demo channel exist."

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_default_providers()
        ensure_moderators_group()
        user_model = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        admin = user_model.objects.filter(username=username).first()
        if admin is None:
            password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
            admin = user_model.objects.create_superuser(username=username, email="", password=password)
            if os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
                self.stdout.write(f"Admin account '{username}' created with the given password.")
            else:
                # Printed once, to the terminal of whoever ran `make run`; never logged.
                self.stdout.write(
                    self.style.WARNING(f"Admin account created: {username} / {password}  (shown only now)")
                )
        if not Channel.objects.filter(name="demo").exists():
            create_channel(name="demo", title="Demo channel", owner=admin, visibility="public")
            self.stdout.write("Public channel 'demo' created.")
