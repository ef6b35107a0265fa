"""What a prompt makes of the files sent with its turns (docs/architecture.md, "Files").

- A document's text, an SVG's XML, a recording's transcript: put in the turn's text
  before what was typed, between lines naming the file, whole up to
  ATTACHMENT_PROMPT_CHARS characters. A longer file sent with the message being answered
  gives its passages most relevant to that message instead (chat/knowledge/retrieval.py
  LongFiles, numbered like knowledge-base passages and listed as the reply's sources);
  a longer file of an earlier turn, or one whose passages cannot be ranked, is cut
  there with a note saying how much was left out.
- A raster image (PNG, JPEG, WebP, GIF): its stored, re-encoded bytes, as an image part
  of the turn (chat/generation/prompt.py PromptImage; each provider its own wire shape).
  Every image of the conversation that is still in the prompt's window is sent, newest
  first, up to PROMPT_MAX_IMAGES images and PROMPT_IMAGE_BYTES bytes in all: older ones
  are named in their turn's text instead (both APIs cap a request's size and image count;
  a long conversation about photos must not grow past them).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models.functions import Length, Substr

from chat.generation.prompt import PromptImage, PromptTurn, shown_name
from chat.knowledge.retrieval import LongFiles
from chat.models import Turn, Upload

log = logging.getLogger(__name__)

# The types sent to a model as pixels. SVG is an image too, but it is markup (and a
# script carrier): its text goes in as a document's does.
RASTER_MIMES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})

# Of the images in a prompt's window, at most this many (the newest) and this many
# bytes in all are sent. Anthropic takes up to 100 images and 32 MB a request; OpenAI
# 500 images and 50 MB. Base64 adds a third, so 20 MiB of images is ~27 MB on the wire.
PROMPT_MAX_IMAGES = 20
PROMPT_IMAGE_BYTES = 20 * 1024 * 1024


def is_raster(upload: Upload) -> bool:
    return upload.kind == Upload.Kind.IMAGE and upload.mime in RASTER_MIMES


def file_block(name: str, kind: str, text: str, total_chars: int, cut_at_extraction: bool = False) -> str:
    """A file's text as the model receives it, marked with its name. ``text`` is at most
    ATTACHMENT_PROMPT_CHARS long; ``total_chars`` is the whole stored text's length;
    ``cut_at_extraction``: the file held more than was stored (EXTRACT_MAX_CHARS, meta
    ``truncated``)."""
    name = shown_name(name)
    spoken = kind in (Upload.Kind.AUDIO, Upload.Kind.VIDEO)
    opening = f"[transcript of {name}]" if spoken else f"[file: {name}]"
    body = text if text.strip() else "(no text was found in this file)"
    left_out = total_chars - len(text)
    if left_out > 0:
        body += (
            f"\n[… {left_out:,} more characters of {name} were left out: a prompt takes the first "
            f"{settings.ATTACHMENT_PROMPT_CHARS:,} characters of a file]"
        )
    elif cut_at_extraction:
        body += f"\n[… the rest of {name} was left out: its text was cut when it was read]"
    return f"{opening}\n{body}\n[end of {name}]"


@dataclass
class TurnFiles:
    """What one turn's files add to it."""

    blocks: list[str] = field(default_factory=list)  # text, in the order sent
    images: list[PromptImage] = field(default_factory=list)

    def apply(self, role: str, text: str) -> PromptTurn:
        """The turn with its files: their text first, then what was typed."""
        full = "\n\n".join([*self.blocks, text] if text else self.blocks)
        return PromptTurn(role, full, tuple(self.images))


def files_of_turns(
    session_id: Any, turn_ids: Iterable[int], long_files: LongFiles | None = None
) -> dict[int, TurnFiles]:
    """What the ready files of these turns (of one session) add to them, by turn id:
    read in one query for the whole window whatever its number of turns (two when files
    were sent), plus the bytes of the images that will be sent. ``long_files``: which
    files too long for a prompt give their best passages instead of their head."""
    wanted = set(turn_ids)
    if not wanted:
        return {}
    limit = settings.ATTACHMENT_PROMPT_CHARS
    rows = (
        Upload.objects.filter(
            turn__session_id=session_id, turn_id__gte=min(wanted), status=Upload.Status.READY
        )
        # A document's text may be a million characters: the database cuts it.
        .annotate(head=Substr("text", 1, limit), length=Length("text"))
        .defer("text")
    )
    uploads = [u for u in rows if u.turn_id in wanted]  # hidden turns are not in the prompt
    if not uploads:
        return {}
    order = _sent_order({u.turn_id for u in uploads if u.turn_id is not None})
    uploads.sort(key=lambda u: (u.turn_id, order.get(str(u.pk), len(order)), u.created_at))
    sent, unreadable = _images_to_send([u for u in uploads if is_raster(u)])
    files: dict[int, TurnFiles] = {}
    for upload in uploads:
        assert upload.turn_id is not None
        entry = files.setdefault(upload.turn_id, TurnFiles())
        if not is_raster(upload):
            head: str = getattr(upload, "head", "") or ""
            length: int = getattr(upload, "length", 0) or 0
            cut = bool((upload.meta or {}).get("truncated"))
            retrieve = long_files is not None and long_files.wants(upload, length)
            passages = long_files.block(upload, length) if long_files is not None and retrieve else None
            entry.blocks.append(passages or file_block(upload.name, upload.kind, head, length, cut))
        elif upload.pk in sent:
            entry.images.append(sent[upload.pk])
        elif upload.pk in unreadable:
            entry.blocks.append(f"[image unavailable: {shown_name(upload.name)}]")
        else:
            entry.blocks.append(
                f"[image left out: {shown_name(upload.name)} (only the newest images are sent)]"
            )
    return files


def _sent_order(turn_ids: set[int]) -> dict[str, int]:
    """Each upload's place in its turn's ``attachments`` (the order the user gave)."""
    order: dict[str, int] = {}
    for attachments in Turn.objects.filter(pk__in=turn_ids).values_list("attachments", flat=True):
        for index, item in enumerate(attachments or []):
            if isinstance(item, dict) and "id" in item:
                order[str(item["id"])] = index
    return order


def _images_to_send(images: list[Upload]) -> tuple[dict[Any, PromptImage], set[Any]]:
    """The newest images within PROMPT_MAX_IMAGES and PROMPT_IMAGE_BYTES, read from
    storage, by upload id; and the ids of those storage could not give."""
    chosen: dict[Any, PromptImage] = {}
    unreadable: set[Any] = set()
    total = 0
    for upload in reversed(images):  # newest first
        if len(chosen) >= PROMPT_MAX_IMAGES:
            break
        data = read_bytes(upload)
        if data is None:
            unreadable.add(upload.pk)
            continue
        if total + len(data) > PROMPT_IMAGE_BYTES:
            break
        total += len(data)
        meta = upload.meta or {}
        chosen[upload.pk] = PromptImage(
            name=shown_name(upload.name),
            mime=upload.mime,
            width=int(meta.get("width") or 0),
            height=int(meta.get("height") or 0),
            data=base64.b64encode(data).decode("ascii"),
        )
    return chosen, unreadable


def read_bytes(upload: Upload) -> bytes | None:
    """The stored file's bytes, or None when storage cannot give them (deleted meanwhile,
    the bucket unreachable): the reply goes on without that image, named as left out."""
    try:
        with upload.file.open("rb") as handle:
            data: bytes = handle.read()
            return data
    except Exception as exc:  # any storage backend's failure; the reply must still be written
        log.warning("could not read upload %s for a prompt: %s", upload.pk, exc)
        return None
