"""Real types from bytes (sniff.py) and each processor (documents.py, images.py) on real
sample files made by their own libraries (tests/files.py), hostile ones included; the
time limit through a real worker, and the sweep of rows a dead worker left processing."""

from __future__ import annotations

import io
import os
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from PIL import Image

from chat.errors import ServiceError
from chat.models import Upload
from chat.uploads import tasks
from chat.uploads.documents import extract
from chat.uploads.failures import ProcessingError
from chat.uploads.images import process_image, process_svg
from chat.uploads.services import create_upload
from chat.uploads.sniff import DOCX, XLSX, sniff
from tests import files
from tests.conftest import channel_events, wait_for
from tests.processes import output

pytestmark = pytest.mark.usefixtures("_remove_new_upload_files")


def text_of(data: bytes, mime: str) -> tuple[str, dict[str, Any]]:
    seen: list[float] = []
    text, meta = extract(data, mime, progress=seen.append)
    assert seen == sorted(seen) and all(0 < f <= 1 for f in seen)
    return text, meta


# --- sniffing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name", "mime", "kind"),
    [
        (files.pdf, "a.pdf", "application/pdf", "document"),
        (files.docx, "a.docx", DOCX, "document"),
        (files.xlsx, "a.xlsx", XLSX, "document"),
        (files.csv_bytes, "a.csv", "text/csv", "document"),
        (lambda: b"# Title\n\nSome *markdown*.\n", "a.md", "text/markdown", "document"),
        (files.utf8_text, "a.txt", "text/plain", "document"),
        (files.latin1_text, "a.txt", "text/plain", "document"),
        (lambda: "Unicode from Notepad\r\n".encode("utf-16"), "a.txt", "text/plain", "document"),
        (files.png, "a.png", "image/png", "image"),
        (files.jpeg, "a.jpg", "image/jpeg", "image"),
        (files.webp, "a.webp", "image/webp", "image"),
        (files.gif, "a.gif", "image/gif", "image"),
        (files.svg, "a.svg", "image/svg+xml", "image"),
        (lambda: files.audio("wav"), "a.wav", "audio/wav", "audio"),
        (lambda: files.audio("mp3"), "a.mp3", "audio/mpeg", "audio"),
        (lambda: files.without_id3(files.audio("mp3")), "a.mp3", "audio/mpeg", "audio"),
        (lambda: files.audio("m4a"), "a.m4a", "audio/mp4", "audio"),
        (lambda: files.audio("ogg"), "a.ogg", "audio/ogg", "audio"),
        (lambda: files.audio("flac"), "a.flac", "audio/flac", "audio"),
        (lambda: files.audio("webm"), "voice.webm", "audio/webm", "audio"),
        (lambda: files.video("mp4"), "a.mp4", "video/mp4", "video"),
        (lambda: files.video("webm"), "a.webm", "video/webm", "video"),
        (lambda: files.video("mov"), "a.mov", "video/quicktime", "video"),
        (lambda: files.video("avi"), "a.avi", "video/x-msvideo", "video"),
    ],
)
def test_sniff_tells_each_accepted_type_from_its_bytes(make: Any, name: str, mime: str, kind: str) -> None:
    assert sniff(make(), name=name) == (mime, kind)


@pytest.mark.parametrize(
    ("make", "lie", "mime"),
    [
        (files.png, "report.pdf", "image/png"),
        (files.pdf, "photo.jpg", "application/pdf"),
        (files.docx, "sheet.xlsx", DOCX),
        (lambda: files.audio("wav"), "song.mp3", "audio/wav"),
    ],
)
def test_the_bytes_decide_not_the_name(make: Any, lie: str, mime: str) -> None:
    assert sniff(make(), name=lie)[0] == mime


@pytest.mark.parametrize(
    ("make", "name", "described"),
    [
        (files.html, "photo.png", "HTML"),
        (lambda: b"<html><body>hi</body></html>", "notes.txt", "HTML"),
        (files.plain_zip, "report.docx", "ZIP"),
        (lambda: os.urandom(4096), "data.bin", ""),
        (lambda: b"\x7fELF\x02\x01\x01" + b"\x00" * 200, "tool.pdf", ""),
    ],
)
def test_sniff_refuses_anything_else_with_415(make: Any, name: str, described: str) -> None:
    with pytest.raises(ServiceError) as refused:
        sniff(make(), name=name)
    assert refused.value.code == "unsupported_type" and refused.value.http_status == 415
    assert described.lower() in refused.value.text.lower()
    assert "allowed: PDF" in refused.value.text


def test_sniff_finds_office_members_in_a_head_only() -> None:
    data = files.docx()
    start = data.find(b"word/document.xml")
    assert sniff(data[: start + 100], name="a.docx") == (DOCX, "document")


def test_svg_is_told_by_its_root_element_not_by_its_name() -> None:
    assert sniff(files.svg(), name="logo.txt")[0] == "image/svg+xml"
    other_xml = b'<?xml version="1.0"?>\n<!-- svg -->\n<note><svg/></note>\n'
    assert sniff(other_xml, name="logo.svg")[0] == "text/plain"


# --- documents -------------------------------------------------------------------------------


def test_pdf_text_page_by_page() -> None:
    text, meta = text_of(files.pdf(5), "application/pdf")

    for number in range(1, 6):
        assert files.page_line(number) in text
    starts = meta.pop("page_starts")
    assert meta == {"pages": 5, "pages_read": 5, "chars": len(text), "truncated": False}
    # Each page's start offset in the text (for knowledge-base passages' page numbers).
    assert len(starts) == 5 and starts[0] == 0
    for number, (start, end) in enumerate(zip(starts, [*starts[1:], len(text)], strict=True), 1):
        assert files.page_line(number) in text[start:end]


def test_pdf_page_cap(settings: Any) -> None:
    settings.EXTRACT_MAX_PAGES = 2
    text, meta = text_of(files.pdf(5), "application/pdf")

    assert files.page_line(2) in text and files.page_line(3) not in text
    assert (meta["pages"], meta["pages_read"], meta["truncated"]) == (5, 2, True)


def test_character_cap(settings: Any) -> None:
    settings.EXTRACT_MAX_CHARS = 40
    text, meta = text_of(files.pdf(5), "application/pdf")

    assert len(text) <= 40 + 2 * 4 and meta["truncated"] is True  # + page separators
    text, meta = text_of(files.latin1_text(), "text/plain")
    assert len(text) == 40 and meta == {"chars": 40, "truncated": True}


def test_encrypted_pdf_fails_with_a_reason() -> None:
    with pytest.raises(ProcessingError, match="encrypted PDF"):
        text_of(files.encrypted_pdf(), "application/pdf")


def test_pdf_restricted_by_an_owner_password_only_is_read() -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(files.pdf(2))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)

    text, _meta = text_of(out.getvalue(), "application/pdf")
    assert files.page_line(2) in text


def test_broken_pdf_fails_with_a_reason() -> None:
    with pytest.raises(ProcessingError, match="broken PDF"):
        text_of(files.broken_pdf(), "application/pdf")


def test_docx_paragraphs_and_tables_in_order() -> None:
    text, meta = text_of(files.docx(["First", "Second"], [["a", "b"], ["c", "d"]]), DOCX)

    assert text == "First\nSecond\na\tb\nc\td"
    assert (meta["paragraphs"], meta["tables"], meta["truncated"]) == (2, 1, False)


def test_xlsx_sheet_by_sheet() -> None:
    data = files.xlsx({"One": [["x", 1], ["y", 2.5]], "Two": [["only", None, None], [None, None, "far"]]})
    text, meta = text_of(data, XLSX)

    assert text == "# One\nx\t1\ny\t2.5\n# Two\nonly\n\t\tfar\n"
    assert meta["sheets"] == 2
    assert meta["sheet_starts"] == [["One", 0], ["Two", text.index("# Two")]]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (files.csv_bytes, "Łukasz,Kraków"),
        (
            lambda: files.csv_bytes(
                encoding="cp1252", rows=[["café", "crème brûlée"], ["garçon", "fenêtre"]]
            ),
            "crème",
        ),
        (files.latin1_text, "Le garçon a mangé une crème brûlée à côté de la fenêtre."),
        (files.utf8_text, "東京"),
        (lambda: "\ufeffBOM first".encode(), "BOM first"),
    ],
)
def test_text_in_any_charset(make: Any, expected: str) -> None:
    text, _ = text_of(make(), "text/plain")
    assert expected in text and "\ufeff" not in text


def test_zip_bomb_is_refused_before_parsing_by_its_size() -> None:
    bomb = files.zip_bomb_docx(600)
    assert len(bomb) < 1024 * 1024
    assert sniff(bomb, name="report.docx")[0] == DOCX  # it passes for a DOCX…
    with pytest.raises(ProcessingError, match=r"unpacks to 600 MB \(a zip bomb\?\)"):
        text_of(bomb, DOCX)  # …and is refused before python-docx opens it


def test_zip_bomb_is_refused_by_its_ratio() -> None:
    with pytest.raises(ProcessingError, match=r"compressed \d+:1 \(a zip bomb\?\)"):
        text_of(files.zip_bomb_docx(16), DOCX)


# --- images ----------------------------------------------------------------------------------


def reopened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_png_stays_png_without_its_metadata() -> None:
    data, mime, meta = process_image(files.png((64, 48)))

    image = reopened(data)
    assert (mime, image.format, image.size, meta) == (
        "image/png",
        "PNG",
        (64, 48),
        {"width": 64, "height": 48},
    )
    assert b"secret-png-comment" not in data and "Comment" not in image.info


def test_jpeg_is_turned_upright_and_loses_exif_and_gps() -> None:
    original = files.jpeg((80, 40), orientation=6)
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # it had GPS

    data, mime, _meta = process_image(original)
    image = reopened(data)
    assert (mime, image.format, image.size) == ("image/jpeg", "JPEG", (40, 80))
    assert not image.getexif() and b"Exif" not in data and b"SpyCam" not in data
    # The red rectangle was top-left as stored; upright, it is top-right.
    red: Any = image.getpixel((27, 22))
    white: Any = image.getpixel((5, 75))
    assert red[0] > 200 and red[1] < 80 and min(white) > 200


def test_webp_stays_webp() -> None:
    data, mime, meta = process_image(files.webp())
    assert (mime, reopened(data).format, meta["width"]) == ("image/webp", "WEBP", 50)


def test_gif_becomes_png_of_its_first_frame() -> None:
    data, mime, meta = process_image(files.gif(frames=3))
    image = reopened(data)
    assert (mime, image.format, getattr(image, "n_frames", 1)) == ("image/png", "PNG", 1)
    assert meta == {"width": 30, "height": 20, "converted_from": "gif"}


def test_images_are_made_to_fit_the_side_and_bytes_limits(settings: Any) -> None:
    settings.IMAGE_MAX_SIDE = 100
    data, _, meta = process_image(files.png((400, 200)))
    assert reopened(data).size == (100, 50) and (meta["width"], meta["height"]) == (100, 50)

    settings.IMAGE_MAX_SIDE = 2048
    settings.IMAGE_MAX_BYTES = 20_000
    noisy = files.noisy_png((200, 200))
    assert len(noisy) > 100_000
    data, mime, meta = process_image(noisy)
    assert len(data) <= 20_000 and mime == "image/png" and meta["width"] < 200


def test_decompression_bomb_fails_before_decoding() -> None:
    bomb = files.bomb_png()
    assert len(bomb) < 100_000
    with pytest.raises(ProcessingError, match=r"image too large \(10000000000 pixels\)"):
        process_image(bomb)


def test_image_just_over_the_pixel_limit_fails(settings: Any) -> None:
    settings.IMAGE_MAX_PIXELS = 1000
    with pytest.raises(ProcessingError, match=r"image too large \(1600 pixels\)"):
        process_image(files.png((40, 40)))


def test_broken_image_fails_with_a_reason() -> None:
    truncated = files.png((64, 48))[:60]
    with pytest.raises(ProcessingError, match="broken or unreadable image"):
        process_image(truncated)


def test_svg_is_kept_as_text_and_never_parsed_for_entities() -> None:
    laughs = (
        b'<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;">]>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>'
    )
    assert sniff(laughs, name="x.svg")[0] == "image/svg+xml"
    text, meta = process_svg(laughs)
    assert text == laughs.decode() and meta == {"svg": True}


# --- the time limit, and the sweep -----------------------------------------------------------


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {"EXTRACT_TIME_LIMIT": "1"}


@pytest.mark.django_db(transaction=True)
def test_a_worker_sweeps_rows_left_processing_when_it_starts(alice: Any, channel: Any) -> None:
    from tests.processes import celery_worker, live_env

    # (runs before this module's worker starts: it must be the one worker here)
    stuck = Upload.objects.create(
        owner=alice, channel=channel, name="stuck.txt", mime="text/plain", kind="document"
    )
    Upload.objects.filter(pk=stuck.pk).update(
        status="processing", attempts=1, updated_at=timezone.now() - timedelta(hours=1)
    )
    fresh = Upload.objects.create(owner=alice, name="fresh.txt", mime="text/plain", kind="document")
    Upload.objects.filter(pk=fresh.pk).update(status="processing", attempts=1)  # …a live run, say

    with celery_worker(live_env()):
        wait_for(lambda: Upload.objects.get(pk=stuck.pk).status == "failed", 30)
    assert Upload.objects.get(pk=stuck.pk).error == "processing stopped (worker lost)"
    assert Upload.objects.get(pk=fresh.pk).status == "processing"


@pytest.mark.django_db(transaction=True)
def test_sweep_fails_only_rows_with_no_live_run(alice: Any, channel: Any, settings: Any) -> None:
    old = timezone.now() - tasks.stuck_after() - timedelta(seconds=5)
    dead = Upload.objects.create(
        owner=alice, channel=channel, name="dead.pdf", mime="application/pdf", kind="document"
    )
    alive = Upload.objects.create(
        owner=alice, channel=channel, name="alive.pdf", mime="application/pdf", kind="document"
    )
    Upload.objects.filter(pk=dead.pk).update(status="processing", attempts=1, updated_at=old)
    Upload.objects.filter(pk=alive.pk).update(status="processing", attempts=1)

    assert tasks.sweep_stuck() == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, dead.error) == ("failed", "processing stopped (worker lost)")
    assert alive.status == "processing"
    events = [e for e in channel_events(channel) if e["type"] == "attachment_updated"]
    assert [(e["id"], e["status"]) for e in events] == [(str(dead.pk), "failed")]


@pytest.mark.django_db(transaction=True)
def test_time_limit_ends_a_long_extraction_failed(worker: Any, alice: Any, channel: Any) -> None:
    upload = create_upload(
        # ~4.5 s of extraction on an idle core of this machine (0.9 s with the words
        # together: too close to the 1 s limit to fail it for sure).
        user=alice,
        data_or_file=files.pdf(300, lines=55, words_apart=True),
        name="long.pdf",
        channel=channel,
    )

    def ended() -> Upload | None:
        upload.refresh_from_db()
        return upload if upload.status in ("ready", "failed") else None

    wait_for(ended, 30)
    assert (upload.status, upload.error) == ("failed", "took longer than 1 s")
    assert "Soft time limit (1s) exceeded" in output(worker)  # Celery's limit, set by the worker
    # The worker goes on.
    quick = create_upload(user=alice, data_or_file=b"quick\n", name="quick.txt")
    wait_for(lambda: Upload.objects.get(pk=quick.pk).status == "ready", 30)
