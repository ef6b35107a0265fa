"""Images: verified, re-encoded within IMAGE_MAX_SIDE and IMAGE_MAX_BYTES, stripped of
EXIF (GPS included) and every other metadata, so what is stored and shown to models is
exactly what was checked. SVG is kept as is and never rasterised: its text is its XML.

PNG stays PNG, JPEG stays JPEG, WebP stays WebP; a GIF becomes a PNG of its first frame
(animated images keep their first frame: models read stills).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from chat.uploads.failures import ProcessingError
from chat.uploads.sniff import decode_text, is_svg

# Format read -> (format written, its mime).
OUTPUT = {
    "PNG": ("PNG", "image/png"),
    "JPEG": ("JPEG", "image/jpeg"),
    "MPO": ("JPEG", "image/jpeg"),  # a camera's multi-picture JPEG: its first picture
    "WEBP": ("WEBP", "image/webp"),
    "GIF": ("PNG", "image/png"),
}
# Lossy qualities tried in turn before the image is made smaller.
QUALITIES = (85, 70, 55, 40)


def _open(data: bytes) -> Image.Image:
    """Open and check the size before any pixel is decoded (a decompression bomb is a
    tiny file with huge dimensions), then verify the whole file."""
    Image.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that: here it is an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            _check_pixels(image.size)
            image.verify()  # the file's structure and checksums; leaves the image unusable
            image = Image.open(io.BytesIO(data))
            image.load()
        except ProcessingError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as bomb:
            raise ProcessingError(f"image too large ({_pixels_in(bomb)})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
            raise ProcessingError("broken or unreadable image") from error
    if image.format not in OUTPUT:
        raise ProcessingError(f"unsupported image format ({image.format})")
    return image


def _check_pixels(size: tuple[int, int]) -> None:
    pixels = size[0] * size[1]
    if pixels > settings.IMAGE_MAX_PIXELS:
        raise ProcessingError(f"image too large ({pixels} pixels)")


def _pixels_in(bomb: Exception) -> str:
    # Pillow's message: "Image size (N pixels) exceeds limit of …"
    text = str(bomb)
    start = text.find("(")
    return text[start + 1 : text.find(")", start)] if start >= 0 else "too many pixels"


def _prepared(image: Image.Image, fmt: str) -> Image.Image:
    """Upright (EXIF orientation applied, then dropped), within IMAGE_MAX_SIDE, in a mode
    the output format writes."""
    image = ImageOps.exif_transpose(image) or image
    if max(image.size) > settings.IMAGE_MAX_SIDE:
        image.thumbnail((settings.IMAGE_MAX_SIDE, settings.IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    elif fmt == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    elif fmt == "PNG" and image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        image = image.convert("RGBA")
    return image


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    options: dict[str, Any] = {"optimize": True} if fmt in ("PNG", "JPEG") else {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "PNG" and image.mode == "P" and "transparency" in image.info:
        options["transparency"] = image.info["transparency"]
    # No exif=, icc_profile= or pnginfo=: nothing of the original's metadata is written.
    image.save(out, fmt, **options)
    return out.getvalue()


def process_image(data: bytes) -> tuple[bytes, str, dict[str, Any]]:
    """``(bytes, mime, meta)`` of a raster image re-encoded within the limits, with meta
    width and height (and ``converted_from`` when its format changed). Raises
    ProcessingError for a broken image or a decompression bomb."""
    image = _open(data)
    source = image.format or ""
    fmt, mime = OUTPUT[source]
    image.seek(0)  # the first frame of an animation
    image = _prepared(image, fmt)
    qualities = QUALITIES if fmt in ("JPEG", "WEBP") else (0,)
    while True:
        for quality in qualities:
            encoded = _encode(image, fmt, quality)
            if len(encoded) <= settings.IMAGE_MAX_BYTES:
                meta: dict[str, Any] = {"width": image.width, "height": image.height}
                if fmt != source and source != "MPO":
                    meta["converted_from"] = source.lower()
                return encoded, mime, meta
        if max(image.size) <= 16:
            raise ProcessingError("image cannot be made small enough")
        image = image.resize(
            (max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)), Image.Resampling.LANCZOS
        )


def process_svg(data: bytes) -> tuple[str, dict[str, Any]]:
    """An SVG is kept as it came (never rasterised, never shown inline); its text is its XML."""
    text = decode_text(data)
    if text is None or not is_svg(text):
        raise ProcessingError("not a readable SVG")
    return text, {"svg": True}
