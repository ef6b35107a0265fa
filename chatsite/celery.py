"""The task queue: `celery -A chatsite worker` runs what chat/uploads/tasks.py,
chat/knowledge/tasks.py and chat/agents/memory_extraction.py define.

Settings come from Django's (CELERY_*), so a worker uses the same database, Redis and
REDIS_PREFIX as the server processes it serves."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["chat.uploads", "chat.knowledge"])
app.autodiscover_tasks(["chat.agents"], related_name="memory_extraction")
