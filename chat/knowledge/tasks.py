"""Celery tasks of knowledge bases (the work itself: chat/knowledge/indexing.py).

Like the uploads' tasks: on the same queue, acknowledged late (a worker child killed
mid-run has its task run again; both tasks start by removing what an earlier run
wrote), with the worker's EXTRACT_TIME_LIMIT as their time limit (soft: the document
ends failed; hard, HARD_LIMIT_MARGIN s later: the child is killed and the task runs
again). A re-embedding hands the rest of its base to a new run before that limit.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_init
from django.conf import settings

from chat.knowledge import indexing
from chat.uploads.tasks import HARD_LIMIT_MARGIN


@shared_task(name="chat.knowledge.index")
def index_document(document_id: str) -> None:
    """Index one document; never raises for a bad document."""
    indexing.index(document_id)


@shared_task(name="chat.knowledge.reembed")
def reembed_base(base_id: str, key: str, after: str = "") -> None:
    """Move a base to another embedding model (generation + 1, then the switch)."""
    indexing.reembed(base_id, key, after)


@worker_init.connect
def _apply_knowledge_time_limits(**kwargs: Any) -> None:
    """The worker's own EXTRACT_TIME_LIMIT governs its runs (as chat/uploads/tasks.py)."""
    for task in (index_document, reembed_base):
        task.soft_time_limit = settings.EXTRACT_TIME_LIMIT
        task.time_limit = settings.EXTRACT_TIME_LIMIT + HARD_LIMIT_MARGIN
