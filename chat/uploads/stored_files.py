"""An upload's file lives as long as its row: rows also go by cascade (a turn deleted by a
moderator, a purged session, a deleted channel or account), where no uploads service
runs, so the file is deleted from the row's post_delete signal."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)


def delete_with_row(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Delete the file once the row's deletion is committed (a rolled-back delete keeps
    both). Robust: a storage that fails leaves an orphan file, logged, not a failed delete."""
    name = instance.file.name
    if not name:
        return
    storage = instance.file.storage
    transaction.on_commit(lambda: _delete(storage, name))


def _delete(storage: Any, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:  # the row's deletion is committed: say which file is left over
        log.exception("could not delete the stored upload file %s", name)
