"""`manage.py purge_sessions`: delete the sessions older than RETENTION_DAYS (`make run`
runs it every RETENTION_INTERVAL_SECONDS; elsewhere, cron)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from chat.services import purge_expired_sessions


class Command(BaseCommand):
    help = (
        "Delete sessions whose last activity is older than RETENTION_DAYS, and deleted ones "
        "RETENTION_DAYS after their deletion (0 keeps everything)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = purge_expired_sessions(days=settings.RETENTION_DAYS)
        if count:
            self.stdout.write(f"{count} session(s) older than {settings.RETENTION_DAYS} days deleted.")
