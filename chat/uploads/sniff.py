"""A file's real type, from its bytes: never from the name it came with (a PNG named
report.pdf is an image/png; HTML named photo.png is refused).

Binary formats are told by their signatures; zip-based Office files by the members they
must have; text by decoding (NUL-free, a charset that charset-normalizer finds), then
SVG and HTML by their first element. The name only picks between text flavours (CSV,
Markdown, plain), which have no signature of their own.
"""

from __future__ import annotations

import io
import re
import zipfile

import puremagic
from charset_normalizer import from_bytes

from chat.errors import ServiceError

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SVG = "image/svg+xml"

KINDS = {
    "application/pdf": "document",
    DOCX: "document",
    XLSX: "document",
    "text/csv": "document",
    "text/markdown": "document",
    "text/plain": "document",
    "image/png": "image",
    "image/jpeg": "image",
    "image/gif": "image",
    "image/webp": "image",
    SVG: "image",
    "audio/mpeg": "audio",
    "audio/wav": "audio",
    "audio/mp4": "audio",
    "audio/ogg": "audio",
    "audio/flac": "audio",
    "audio/webm": "audio",
    "video/mp4": "video",
    "video/webm": "video",
    "video/quicktime": "video",
    "video/x-msvideo": "video",
}
# Raster images a browser may show (the content view's ?inline=1).
RASTER = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

ALLOWED_TEXT = (
    "PDF, TXT, MD, CSV, DOCX, XLSX, JPG, PNG, GIF, WebP, SVG, MP3, WAV, M4A, OGG, FLAC, WebM, MP4, MOV, AVI"
)
# Text is judged on this much of its start (charset detection is slow on megabytes).
TEXT_SAMPLE = 64 * 1024
WESTERN = frozenset({"cp1252", "latin_1", "iso8859_15"})

_VIDEO_CODECS = (b"V_VP8", b"V_VP9", b"V_AV1", b"V_MPEG", b"V_MS/", b"V_THEORA")
_HTML = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body|script|iframe|meta)\b", re.I | re.S
)
# The first element of an XML text, past the declaration, comments and a doctype.
_XML_PROLOG = re.compile(
    r"^\ufeff?\s*(<\?xml[^>]*\?>\s*)?((<!--.*?-->|<!DOCTYPE[^>\[]*(\[.*?\])?\s*>)\s*)*", re.S
)
_FIRST_TAG = re.compile(r"<([A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")


def sniff(head: bytes, *, name: str = "", size: int | None = None) -> tuple[str, str]:
    """``(mime, kind)`` of a file whose first bytes are ``head`` (pass the whole file
    when you have it: Office files are told by their zip members; with only a head,
    the members' local headers within it are looked at). Raises ServiceError
    ``unsupported_type`` for anything not allowed."""
    mime = _binary(head) or _text(head, name)
    if mime is None:
        raise ServiceError(
            "unsupported_type",
            f"This file's type ({_described(head)}) is not accepted; allowed: {ALLOWED_TEXT}.",
            fields={"file": [f"Unsupported file type ({_described(head)})."]},
        )
    return mime, KINDS[mime]


def _binary(head: bytes) -> str | None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None  # a UTF-16 text's BOM, which would pass for an MPEG audio frame header
    if head.find(b"%PDF-", 0, 1024) >= 0:  # readers accept a header within the first KiB
        return "application/pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF":
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12])
    if head.startswith(b"PK\x03\x04"):
        return _office(head)
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or _mpeg_audio_frame(head):
        return "audio/mpeg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska; only its WebM flavour is allowed
        if b"webm" not in head[:64]:
            return None
        # Recorders (MediaRecorder) send audio-only WebM; processing confirms from the streams.
        sample = head[:65536]
        return "video/webm" if any(codec in sample for codec in _VIDEO_CODECS) else "audio/webm"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "audio/mp4"
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free") and len(head) >= 8:
        return "video/quicktime"  # QuickTime files from before the ftyp box
    return None


def _mpeg_audio_frame(head: bytes) -> bool:
    # An MPEG audio frame header: 11 sync bits, a version, and a layer that is not 00 (ADTS AAC).
    return (
        len(head) >= 4
        and head[0] == 0xFF
        and head[1] & 0xE0 == 0xE0
        and head[1] & 0x06 != 0
        and head[2] & 0xF0 != 0xF0
    )


def _office(head: bytes) -> str | None:
    """DOCX only with word/document.xml, XLSX only with xl/workbook.xml; other zips are refused."""
    try:
        names = set(zipfile.ZipFile(io.BytesIO(head)).namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        # Only a head: the local file headers it holds (name length at 26, name at 30).
        names = set()
        for match in re.finditer(rb"PK\x03\x04", head):
            start = match.start()
            length = int.from_bytes(head[start + 26 : start + 28], "little")
            names.add(head[start + 30 : start + 30 + length].decode("utf-8", "replace"))
    if "word/document.xml" in names:
        return DOCX
    if "xl/workbook.xml" in names:
        return XLSX
    return None


def _has_nul(data: bytes) -> bool:
    return b"\x00" in data


def decode_text(data: bytes) -> str | None:
    """The text of ``data`` if it is text: UTF-8 (with or without BOM), else the charset
    charset-normalizer finds; None for binary data (NULs, or no charset fits)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its BOM ("Unicode" in Notepad)
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
        return None if "\x00" in text else text
    if _has_nul(data):
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    results = list(from_bytes(data))
    if not results:
        return None
    best = results[0]
    # Short Western text fits several single-byte charsets equally well (cp1250 and
    # cp1252 tie on French): among the equals, the Western one, as browsers default to.
    for match in results:
        if (match.chaos, match.coherence) == (best.chaos, best.coherence) and any(
            charset in WESTERN for charset in match.could_be_from_charset
        ):
            return str(match)
    return str(best)


def _text(head: bytes, name: str) -> str | None:
    sample = head[:TEXT_SAMPLE]
    if len(head) > TEXT_SAMPLE:
        # A cut may fall inside a multi-byte character: drop a few bytes at the end.
        for cut in range(4):
            if (text := decode_text(sample[: len(sample) - cut])) is not None:
                break
    else:
        text = decode_text(sample)
    if text is None or not text.strip():
        return None if text is None else "text/plain"
    if _HTML.match(sample) or _HTML.match(text.encode("utf-8", "replace")):
        return None  # HTML is never accepted, whatever its name
    if is_svg(text):
        return SVG
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return "text/csv"
    if lowered.endswith((".md", ".markdown")):
        return "text/markdown"
    return "text/plain"


def is_svg(text: str) -> bool:
    """Whether an XML text's root element is <svg> (looked up without parsing: no XML
    parser ever expands an uploaded document's entities)."""
    prolog = _XML_PROLOG.match(text)
    rest = text[prolog.end() if prolog else 0 :]
    if not rest.startswith("<"):
        return False
    tag = _FIRST_TAG.match(rest)
    return tag is not None and tag.group(2) == "svg"


def _described(head: bytes) -> str:
    """What a refused file seems to be, for its error message."""
    try:
        found = puremagic.magic_string(head[:65536])
    except (puremagic.PureError, ValueError):
        found = []
    if _HTML.match(head[:TEXT_SAMPLE]):
        return "HTML"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if found:
        return found[0].name or found[0].mime_type or "unknown"
    return "binary data" if _has_nul(head[:TEXT_SAMPLE]) else "unknown"
