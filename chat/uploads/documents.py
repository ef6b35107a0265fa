"""Documents: their text, with caps on pages (EXTRACT_MAX_PAGES) and characters
(EXTRACT_MAX_CHARS, meta.truncated). PDF (pypdf), DOCX (python-docx), XLSX (openpyxl,
read-only), CSV and Markdown/plain text (charset detection).

Zip-based formats are refused before any parsing when their members would unpack to an
absurd size or ratio (a zip bomb): the sizes come from the zip's directory, and Python's
zipfile never inflates a member past its declared size.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings

from chat.uploads.failures import ProcessingError
from chat.uploads.sniff import DOCX, XLSX, decode_text

Progress = Callable[[float], None]

# A zip-based document unpacking to more than this is refused (the biggest honest
# 25 MB Office file unpacks to a few hundred MB at most; its XML compresses ~10:1).
ZIP_MAX_UNCOMPRESSED = 512 * 1024 * 1024
ZIP_MAX_RATIO = 200  # one member: uncompressed / compressed
ZIP_MAX_MEMBERS = 10_000
MB = 1024 * 1024


class _Text:
    """Text gathered piece by piece up to EXTRACT_MAX_CHARS."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chars = 0
        self.truncated = False

    def add(self, piece: str) -> bool:
        """Adds ``piece`` (cut at the cap); False once the cap is reached."""
        room = settings.EXTRACT_MAX_CHARS - self.chars
        if len(piece) > room:
            piece, self.truncated = piece[:room], True
        self.parts.append(piece)
        self.chars += len(piece)
        return not self.truncated

    def result(self, separator: str, **meta: Any) -> tuple[str, dict[str, Any]]:
        text = separator.join(self.parts)
        return text, {**meta, "chars": len(text), "truncated": self.truncated}


def extract(data: bytes, mime: str, *, progress: Progress) -> tuple[str, dict[str, Any]]:
    """``(text, meta)`` of a document of type ``mime`` (sniff.py's); raises
    ProcessingError with a reason for a broken, encrypted or hostile file."""
    if mime == "application/pdf":
        return pdf_text(data, progress)
    if mime == DOCX:
        check_zip(data)
        return docx_text(data, progress)
    if mime == XLSX:
        check_zip(data)
        return xlsx_text(data, progress)
    if mime in ("text/csv", "text/markdown", "text/plain"):
        return plain_text(data)
    raise ProcessingError(f"not a document type ({mime})")


def check_zip(data: bytes) -> None:
    """Refuse a zip bomb before anything unpacks it."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ProcessingError("broken file (not a readable zip archive)") from None
    if len(members) > ZIP_MAX_MEMBERS:
        raise ProcessingError(f"refused: {len(members)} files inside (a zip bomb?)")
    total = sum(member.file_size for member in members)
    if total > ZIP_MAX_UNCOMPRESSED:
        raise ProcessingError(f"refused: unpacks to {total // MB} MB (a zip bomb?)")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > MB and ratio > ZIP_MAX_RATIO:
            raise ProcessingError(f"refused: compressed {int(ratio)}:1 (a zip bomb?)")


def pdf_text(data: bytes, progress: Progress) -> tuple[str, dict[str, Any]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _opens_without_password(reader):
            raise ProcessingError("encrypted PDF")
        pages = len(reader.pages)
    except ProcessingError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError):
        raise ProcessingError("broken PDF") from None
    readable = min(pages, settings.EXTRACT_MAX_PAGES)
    text = _Text()
    read = 0
    # Where each page starts in the joined text (pages are joined by a blank line), so
    # that a knowledge base's passages know their page.
    page_starts: list[int] = []
    for number in range(readable):
        try:
            # NUL is not storable in PostgreSQL text (PDFs do yield it); taken out here,
            # before the offsets are counted.
            page_text = (reader.pages[number].extract_text() or "").replace("\x00", "")
        except (PdfReadError, ValueError, KeyError, TypeError, RecursionError):
            page_text = ""  # one broken page does not lose the others
        read += 1
        progress(read / readable)
        page_starts.append(text.chars + 2 * len(text.parts))
        if not text.add(page_text):
            break
    truncated = read < pages
    result, meta = text.result("\n\n", pages=pages, pages_read=read)
    meta["truncated"] = meta["truncated"] or truncated
    meta["page_starts"] = page_starts
    return result, meta


def _opens_without_password(reader: Any) -> bool:
    """An owner-password-only PDF (printing or copying restricted) opens with the empty
    user password; one that needs a password does not."""
    from pypdf.errors import DependencyError, PdfReadError

    try:
        return bool(reader.decrypt(""))
    except (DependencyError, PdfReadError, NotImplementedError, ValueError):
        return False


def docx_text(data: bytes, progress: Progress) -> tuple[str, dict[str, Any]]:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception:  # python-docx raises KeyError, lxml errors, PackageNotFoundError…
        raise ProcessingError("broken DOCX") from None
    text = _Text()
    blocks = list(document.iter_inner_content())
    for index, block in enumerate(blocks):
        piece = _table_text(block) if isinstance(block, Table) else block.text
        if piece and not text.add(piece):
            break
        if index % 50 == 0:
            progress((index + 1) / len(blocks))
    return text.result("\n", paragraphs=len(document.paragraphs), tables=len(document.tables))


def _table_text(table: Any) -> str:
    return "\n".join("\t".join(cell.text for cell in row.cells) for row in table.rows)


def xlsx_text(data: bytes, progress: Progress) -> tuple[str, dict[str, Any]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # openpyxl raises KeyError, InvalidFileException, lxml errors…
        raise ProcessingError("broken XLSX") from None
    text = _Text()
    sheets = book.worksheets
    # [title, offset of its "# title" line] per sheet read, for knowledge-base passages.
    sheet_starts: list[list[Any]] = []
    try:
        for index, sheet in enumerate(sheets):
            sheet_starts.append([str(sheet.title), text.chars])
            if not text.add(f"# {sheet.title}\n"):
                break
            if not all(text.add(line + "\n") for line in _rows(sheet)):
                break
            progress((index + 1) / len(sheets))
    finally:
        book.close()
    return text.result("", sheets=len(sheets), sheet_starts=sheet_starts)


def _rows(sheet: Any) -> Iterator[str]:
    for row in sheet.iter_rows(values_only=True):
        cells = ["" if value is None else str(value) for value in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            yield "\t".join(cells)


def plain_text(data: bytes) -> tuple[str, dict[str, Any]]:
    """CSV, Markdown and plain text: decoded from whatever charset they are in."""
    decoded = decode_text(data)
    if decoded is None:
        raise ProcessingError("not readable text (unknown character set)")
    text = _Text()
    text.add(decoded)
    return text.result("")
