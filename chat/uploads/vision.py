"""Whether the model that will answer a message can see its images: checked before the
message is counted against any limit, so a refusal costs nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chat.errors import ServiceError
from chat.framing import effective_params
from chat.generation.records import provider_chain
from chat.models import Channel, Upload
from chat.uploads.prompting import is_raster


def require_vision(
    *, channel: Channel, user: Any, request: dict[str, Any] | None, uploads: Iterable[Upload]
) -> None:
    """Raise ``no_vision`` when ``uploads`` hold a raster image and the model that will
    answer does not read images.

    ``request`` is what chat/choices.py check_choices returned for the message (the
    user's preferences already folded in; a regenerate without choices passes the
    answered turn's): the model is then found exactly as the generation will find it
    (chat/generation/records.py read_plan and provider_chain: the message's choice, the
    channel's, the default chain). A completion-mode channel sends text only, whatever
    its model. The demo reads images (Provider.sees_images: a fresh install shows every
    feature offline; it acknowledges them, chat/generation/providers/demo.py). ``user``
    is part of the signature every transport calls with, for per-user rules to come."""
    images = [upload for upload in uploads if is_raster(upload)]
    if not images:
        return
    params = {**effective_params(channel.params), **(request or {}).get("params", {})}
    first = provider_chain(channel, params)[0]
    if channel.mode != "completion" and first.vision:
        return
    why = (
        "this channel writes in completion mode, which sends text only"
        if channel.mode == "completion"
        else "choose a model that does (an admin ticks vision on its provider), or send no image"
    )
    raise ServiceError(
        "no_vision",
        f"The model {first.model_label} of provider {first.name} does not read images; {why}.",
        fields={"attachments": [f"Upload {upload.pk} ({upload.name}) is an image." for upload in images]},
    )
