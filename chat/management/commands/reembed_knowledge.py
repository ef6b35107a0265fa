"""`manage.py reembed_knowledge (--base ID | --all) [--embedder KEY]`: move knowledge
bases to another embedding model. The worker re-embeds each base into a new generation
and switches to it at once (chat/knowledge/indexing.py reembed); searches go on reading
the old vectors until then, never a mix."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from chat.knowledge.embeddings import EmbeddingError, default_embedder_key, embedder_for
from chat.knowledge.indexing import queue_reembed
from chat.models import KnowledgeBase


class Command(BaseCommand):
    help = (
        "Re-embed knowledge bases with another embedding model (default: the site's EMBEDDINGS), "
        "through the worker. Bases already on it are left alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--base", action="append", default=[], metavar="ID", help="a base's id (repeatable)"
        )
        which.add_argument("--all", action="store_true", help="every base")
        parser.add_argument(
            "--embedder",
            default="",
            metavar="KEY",
            help='"local:wordllama-l2-256", "provider:<name>:<model>", "local" or "<name>:<model>"',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        given = options["embedder"]
        key = _key(given) if given else default_embedder_key()
        try:
            dims = embedder_for(
                key
            ).dims  # a provider is asked once: a wrong key fails here, not in the worker
        except EmbeddingError as exc:
            raise CommandError(f"--embedder {key}: {exc}") from exc
        if options["all"]:
            bases = list(KnowledgeBase.objects.all())
        else:
            ids = []
            for value in options["base"]:
                try:
                    ids.append(uuid.UUID(value))
                except ValueError:
                    raise CommandError(f"--base {value}: not a knowledge base id") from None
            bases = list(KnowledgeBase.objects.filter(pk__in=ids))
            missing = set(ids) - {base.pk for base in bases}
            if missing:
                raise CommandError(f"--base {', '.join(sorted(map(str, missing)))}: no such knowledge base")
        queued = 0
        for base in bases:
            if base.embedder == key and not base.next_embedder:
                self.stdout.write(f"{base.pk} ({base.name}): already embedded by {key}")
                continue
            with transaction.atomic():
                queue_reembed(base, key)
            queued += 1
            self.stdout.write(f"{base.pk} ({base.name}): re-embedding with {key} ({dims} dimensions) queued")
        self.stdout.write(f"{queued} base(s) queued.")


def _key(value: str) -> str:
    if value in ("local",) or value.startswith(("local:", "provider:")):
        return "local:wordllama-l2-256" if value == "local" else value
    return f"provider:{value}"
