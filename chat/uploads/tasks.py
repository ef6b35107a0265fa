"""Celery tasks: processing an upload off the request path."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="chat.uploads.process")
def process_upload(upload_id: str) -> None:
    """Placeholder until the extraction lands (issue 15)."""
