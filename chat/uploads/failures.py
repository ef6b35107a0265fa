"""The one way a processor says a file cannot be processed: a short reason a person
can read, which becomes the upload's ``error`` (status failed)."""

from __future__ import annotations


class ProcessingError(Exception):
    """The file is broken, encrypted, too large once opened, or not what it claims:
    ``reason`` is shown to its owner (no paths, no internals)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
