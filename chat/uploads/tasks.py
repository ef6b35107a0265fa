"""Celery tasks: processing an upload off the request path.

``enqueue(upload)`` (called once the upload's row is committed) queues
``process_upload``, which a worker runs: it claims the row (uploaded -> processing),
reads the stored file through the storage API, runs the processor of its kind
(documents.py, images.py, media.py), and ends the row ready (text, meta) or failed
(a short reason in ``error``). Every status change, and progress at most four times a
second, is published to the upload's channel as ``attachment_updated``.

Nothing stays ``processing``: a bad file ends failed (never an exception out to
Celery); the soft time limit ends it failed; a killed worker child gets its task run
again (acks_late + reject_on_worker_lost), twice at most; and ``sweep_stuck`` (queued by
every worker at start and each minute) fails rows whose worker died altogether.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init, worker_ready
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from chat.models import Upload
from chat.realtime.events import attachment_updated_event, publish_on_commit
from chat.uploads.failures import ProcessingError

log = logging.getLogger(__name__)

# Runs of one upload: a worker child killed twice on it (an out-of-memory kill, a
# crash in a decoder) is not given a third chance.
MAX_ATTEMPTS = 2
# Progress events at most this often (seconds).
PROGRESS_INTERVAL = 0.25
# How often a worker looks for rows whose worker died (seconds).
SWEEP_INTERVAL = 60.0
HARD_LIMIT_MARGIN = 30


def stuck_after() -> timedelta:
    """A row processing without a write for this long has no live worker: the hard time
    limit ends any run HARD_LIMIT_MARGIN seconds after the soft one, and runs write
    their progress as they go."""
    return timedelta(seconds=settings.EXTRACT_TIME_LIMIT + HARD_LIMIT_MARGIN + 30)


class _GoneError(Exception):
    """The upload was deleted (or ended by the sweep) while it was being processed."""


def enqueue(upload: Upload) -> None:
    """Queue the processing of a committed upload. With the broker out of reach the
    upload ends failed at once (its owner may send it again) instead of waiting for ever."""
    try:
        process_upload.delay(str(upload.pk))
    except Exception:
        log.exception("could not queue upload %s", upload.pk)
        _end_unqueued(upload)


def _end_unqueued(upload: Upload) -> None:
    updated = Upload.objects.filter(pk=upload.pk, status=Upload.Status.UPLOADED).update(
        status=Upload.Status.FAILED, error="could not be queued for processing", updated_at=timezone.now()
    )
    if updated:
        upload.refresh_from_db()
        _ended(upload)


def _announce(upload: Upload) -> None:
    """attachment_updated to the upload's channel (none without a channel); published
    after the commit, or at once outside a transaction. A publish that fails is logged:
    the row holds the truth and clients read it back."""
    if upload.channel_id is None:
        return
    name = getattr(upload, "_channel_name", None)
    if name is None:
        name = upload.channel.name if upload.channel else ""
        upload._channel_name = name  # type: ignore[attr-defined]
    publish_on_commit(upload.channel_id, name, attachment_updated_event(upload))


def _ended(upload: Upload) -> None:
    """The upload ended ready or failed: announced, and handed to the knowledge-base
    documents waiting on it (they are indexed, or fail with its reason)."""
    _announce(upload)
    from chat.knowledge.indexing import upload_finished

    upload_finished(upload)


class Progress:
    """Reports a run's progress (0..1): written to the row and published, at most every
    PROGRESS_INTERVAL seconds. Raises _GoneError when the row went away meanwhile, which
    stops the processor where it is."""

    def __init__(self, upload: Upload):
        self.upload = upload
        self.last = 0.0
        # A second guard behind Celery's soft limit: its exception is raised wherever the
        # run happens to be, and a library's broad `except` (pypdf has several) can
        # swallow it; a run that reports progress past the limit is ended here instead.
        self.deadline = time.monotonic() + settings.EXTRACT_TIME_LIMIT

    def __call__(self, fraction: float) -> None:
        if time.monotonic() > self.deadline:
            raise SoftTimeLimitExceeded
        percent = max(0, min(99, int(fraction * 100)))
        now = time.monotonic()
        if percent == self.upload.progress or now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        updated = Upload.objects.filter(
            pk=self.upload.pk, status=Upload.Status.PROCESSING, attempts=self.upload.attempts
        ).update(progress=percent, updated_at=timezone.now())
        if not updated:
            raise _GoneError
        self.upload.progress = percent
        _announce(self.upload)


@shared_task(name="chat.uploads.process")
def process_upload(upload_id: str) -> None:
    """Process one upload; never raises for a bad file."""
    upload = _claim(upload_id)
    if upload is None:
        return
    progress = Progress(upload)
    try:
        with upload.file.open("rb") as stored:
            data = stored.read()
        result = _process(upload, data, progress)
    except _GoneError:
        return
    except SoftTimeLimitExceeded:
        _finish(upload, failed=f"took longer than {settings.EXTRACT_TIME_LIMIT} s")
    except ProcessingError as failure:
        _finish(upload, failed=failure.reason)
    except FileNotFoundError:
        _finish(upload, failed="the stored file is missing")
    except Exception:  # a bug or a library's surprise: the file still ends failed, never stuck
        log.exception("processing upload %s failed", upload.pk)
        _finish(upload, failed="could not read this file")
    else:
        _finish(upload, **result)


def _claim(upload_id: str) -> Upload | None:
    """uploaded -> processing (attempts + 1). A row already processing is a run whose
    worker child died: run again, unless that was the last attempt. Ended rows, and
    rows deleted meanwhile, are left alone."""
    with transaction.atomic():
        try:
            # (no select_related: FOR UPDATE may not lock the nullable side of a join)
            upload = Upload.objects.select_for_update().filter(pk=upload_id).first()
        except ValidationError:  # not a UUID: nothing of ours
            return None
        if upload is None or upload.status in (Upload.Status.READY, Upload.Status.FAILED):
            return None
        if upload.status == Upload.Status.PROCESSING and upload.attempts >= MAX_ATTEMPTS:
            upload.status = Upload.Status.FAILED
            upload.error = "processing stopped twice"
            upload.save(update_fields=["status", "error", "updated_at"])
            _ended(upload)
            return None
        upload.status = Upload.Status.PROCESSING
        upload.attempts += 1
        upload.progress = 0
        upload.error = ""
        upload.save(update_fields=["status", "attempts", "progress", "error", "updated_at"])
        _announce(upload)
    return upload


def _process(upload: Upload, data: bytes, progress: Progress) -> dict[str, Any]:
    """What the processor of the upload's kind made of its bytes, as _finish's arguments."""
    if upload.kind == Upload.Kind.DOCUMENT:
        from chat.uploads.documents import extract

        text, meta = extract(data, upload.mime, progress=progress)
        return {"text": text, "meta": meta}
    if upload.kind == Upload.Kind.IMAGE:
        from chat.uploads.images import process_image, process_svg

        if upload.mime == "image/svg+xml":
            text, meta = process_svg(data)
            return {"text": text, "meta": meta}
        encoded, mime, meta = process_image(data)
        return {"meta": meta, "replacement": (encoded, mime)}
    # Audio and video: helper module of the voice branch (PyAV + the transcription engine).
    from chat.uploads import media  # type: ignore[attr-defined,unused-ignore]

    text, meta = media.transcript_of(data)
    result: dict[str, Any] = {"text": text, "meta": meta}
    if meta.get("kind") in (Upload.Kind.AUDIO, Upload.Kind.VIDEO):  # WebM: decided by its streams
        result["kind"] = meta.pop("kind")
    return result


def _capped(text: str, meta: dict[str, Any]) -> str:
    # NUL is not storable in PostgreSQL text (PDFs do yield it).
    text = text.replace("\x00", "")
    if len(text) > settings.EXTRACT_MAX_CHARS:
        text = text[: settings.EXTRACT_MAX_CHARS]
        meta["truncated"] = True
    if text or "chars" in meta:
        meta.setdefault("chars", len(text))
    return text


def _finish(
    upload: Upload,
    *,
    failed: str = "",
    text: str = "",
    meta: dict[str, Any] | None = None,
    replacement: tuple[bytes, str] | None = None,
    kind: str | None = None,
) -> None:
    """End the run ready or failed, unless the row went away or was ended meanwhile (a
    deleted upload, the sweep): then whatever this run stored is taken back."""
    meta = dict(meta or {})
    changes: dict[str, Any] = {"progress": 100, "updated_at": timezone.now()}
    if failed:
        changes.update(status=Upload.Status.FAILED, error=failed[:300])
    else:
        changes.update(status=Upload.Status.READY, error="", text=_capped(text, meta), meta=meta)
    if kind:
        changes["kind"] = kind
    current = Upload.objects.filter(pk=upload.pk, status=Upload.Status.PROCESSING, attempts=upload.attempts)
    if replacement and not failed and current.exists():
        encoded, mime = replacement
        # The re-encoded image takes the original's place (same name: its path is the
        # upload's id); the original, with its metadata, is not kept.
        storage, name = upload.file.storage, upload.file.name
        storage.delete(name)
        changes.update(file=storage.save(name, ContentFile(encoded)), size=len(encoded), mime=mime)
    if not current.update(**changes):
        if "file" in changes:  # deleted meanwhile: its file must not outlive it
            upload.file.storage.delete(changes["file"])
        return
    for field, value in changes.items():
        setattr(upload, field, value)
    _ended(upload)


@worker_init.connect
def _apply_time_limits(**kwargs: Any) -> None:
    """The worker's EXTRACT_TIME_LIMIT governs the runs it does. (Set on the task in
    the decorator, the limits would travel in each message from whoever queued it, and
    the worker would obey the sender's settings.) Soft: SoftTimeLimitExceeded in the
    run, which ends it failed; hard, HARD_LIMIT_MARGIN s later: the child is killed and
    the sweep ends the row."""
    process_upload.soft_time_limit = settings.EXTRACT_TIME_LIMIT
    process_upload.time_limit = settings.EXTRACT_TIME_LIMIT + HARD_LIMIT_MARGIN


def sweep_stuck() -> int:
    """End failed every row left processing by a worker that died altogether (its run
    can no longer be alive: see stuck_after). Returns how many."""
    cutoff = timezone.now() - stuck_after()
    ended = 0
    for upload in Upload.objects.filter(status=Upload.Status.PROCESSING, updated_at__lt=cutoff):
        updated = Upload.objects.filter(
            pk=upload.pk, status=Upload.Status.PROCESSING, updated_at=upload.updated_at
        ).update(
            status=Upload.Status.FAILED, error="processing stopped (worker lost)", updated_at=timezone.now()
        )
        if updated:
            ended += 1
            upload.status, upload.error = Upload.Status.FAILED, "processing stopped (worker lost)"
            _ended(upload)
    return ended


@shared_task(name="chat.uploads.sweep")
def sweep() -> None:
    """sweep_stuck, as a task: run by a pool child like any upload."""
    if ended := sweep_stuck():
        log.warning("ended %d upload(s) left processing by a lost worker", ended)


def _sweep_periodically() -> None:
    while True:
        try:
            sweep.delay()
        except Exception:  # the broker is out of reach: tried again next time
            log.exception("could not queue the sweep of stuck uploads")
        time.sleep(SWEEP_INTERVAL)


@worker_ready.connect
def _start_sweeping(**kwargs: Any) -> None:
    """Each worker queues a sweep at start and every minute (several workers sweeping
    is harmless: each row is ended once). Its main process only queues: a database
    connection opened there (a pool, under PostgreSQL) would be inherited by the
    children it forks later, sockets and all."""
    threading.Thread(target=_sweep_periodically, name="colloquy-upload-sweep", daemon=True).start()
