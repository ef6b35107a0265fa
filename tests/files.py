"""Real sample files, each made by its own library (reportlab, python-docx, openpyxl,
Pillow, pypdf), and hostile ones: an encrypted PDF, a zip bomb dressed as a DOCX, a
decompression-bomb PNG, files lying about their type."""

from __future__ import annotations

import csv
import io
import struct
import zipfile
import zlib
from typing import Any

# --- documents ------------------------------------------------------------------------------


def page_line(number: int) -> str:
    """The known text on page ``number`` of pdf()."""
    return f"Page {number} says colloquy-{number:04d}"


def pdf(pages: int = 3, *, extra: str = "", lines: int = 0, words_apart: bool = False) -> bytes:
    """A PDF of ``pages`` pages, each with page_line(n) (and ``extra``) on it, and
    ``lines`` lines of filler (more text: slower extraction). ``words_apart``: each filler
    word is a text object of its own, ~5 times slower to extract for the same text."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    drawing = canvas.Canvas(out, pagesize=A4)
    for number in range(1, pages + 1):
        drawing.drawString(72, 760, page_line(number))
        if extra:
            drawing.drawString(72, 740, extra)
        for line in range(lines):
            filler = f"Filler line {line} of page {number}: a quick fox"
            if words_apart:
                for place, word in enumerate(filler.split()):
                    drawing.drawString(72 + 40 * place, 720 - 12 * line, word)
            else:
                drawing.drawString(72, 720 - 12 * line, filler)
        drawing.showPage()
    drawing.save()
    return out.getvalue()


def encrypted_pdf(password: str = "s3cret") -> bytes:
    """A PDF that needs a password to open (pypdf's writer)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(pdf(2))).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx(paragraphs: list[str] | None = None, table: list[list[str]] | None = None) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    for text in paragraphs or ["Quarterly report", "Revenue grew in the north region."]:
        document.add_paragraph(text)
    rows = table or [["Region", "Revenue"], ["North", "1200"], ["South", "800"]]
    grid = document.add_table(rows=len(rows), cols=len(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx(sheets: dict[str, list[list[Any]]] | None = None) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in (sheets or {"Sales": [["Item", "Count"], ["apples", 3], ["pears", 5]]}).items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(rows: list[list[str]] | None = None, encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows or [["name", "city"], ["Zoë", "Zürich"], ["Łukasz", "Kraków"]])
    return out.getvalue().encode(encoding)


def utf8_text() -> bytes:
    return "Notes: naïve café, 東京, emoji 🙂\n".encode()


def latin1_text() -> bytes:
    """French in ISO-8859-1 (not valid UTF-8): long enough for charset detection."""
    return (
        "Le garçon a mangé une crème brûlée à côté de la fenêtre. "
        "Où est la bibliothèque? Très bien, merci. "
        "L'été dernier, nous sommes allés à la mer avec nos élèves.\n"
    ).encode("latin-1")


# --- images ---------------------------------------------------------------------------------


def _image(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new(mode, size, "white" if mode != "RGBA" else (255, 255, 255, 0))
    ImageDraw.Draw(image).rectangle([4, 4, size[0] // 2, size[1] // 2], fill="red")
    return image


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-png-comment")
    out = io.BytesIO()
    _image("RGBA", size).save(out, "PNG", pnginfo=info)
    return out.getvalue()


GPS_LATITUDE = ((52, 1), (31, 1), (0, 1))


def jpeg(size: tuple[int, int] = (80, 40), orientation: int = 6) -> bytes:
    """A JPEG with EXIF: a camera, GPS coordinates, and an orientation (6: rotate 90°
    to show it upright, so its upright shape is size reversed)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0112] = orientation  # Orientation
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 0.0)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 0.0)
    out = io.BytesIO()
    _image("RGB", size).save(out, "JPEG", exif=exif.tobytes(), quality=90)
    return out.getvalue()


def webp(size: tuple[int, int] = (50, 50)) -> bytes:
    out = io.BytesIO()
    _image("RGB", size).save(out, "WEBP", quality=80)
    return out.getvalue()


def gif(frames: int = 3) -> bytes:
    from PIL import Image

    images = [Image.new("P", (30, 20), color) for color in range(1, frames + 1)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=100)
    return out.getvalue()


def noisy_png(size: tuple[int, int]) -> bytes:
    """A PNG of random pixels (incompressible: big bytes for its size)."""
    import os

    from PIL import Image

    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def svg() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<title>A red square</title><rect width="10" height="10" fill="red"/></svg>\n'
    )


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int = 100_000) -> bytes:
    """A decompression bomb: a valid PNG header claiming side x side pixels (10 gigapixels
    by default), a few hundred bytes in all (its pixel data is a sliver that never got
    decompressed this far)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


# --- audio and video (PyAV's encoders) -------------------------------------------------------

# Name -> (container format, codec, sample rate).
AUDIO = {
    "wav": ("wav", "pcm_s16le", 16000),
    "mp3": ("mp3", "libmp3lame", 44100),
    "ogg": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", 16000),
    "webm": ("webm", "libopus", 48000),
    "m4a": ("ipod", "aac", 44100),
}
VIDEO = {
    "mp4": ("mp4", "libx264"),
    "webm": ("webm", "libvpx"),
    "mov": ("mov", "libx264"),
    "avi": ("avi", "mpeg4"),
}


def _tone(seconds: float, rate: int) -> bytes:
    import math

    count = int(seconds * rate)
    return struct.pack(
        f"<{count}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(count))
    )


def audio(kind: str = "wav", seconds: float = 0.3) -> bytes:
    """A 440 Hz tone encoded by PyAV (FFmpeg): ``kind`` one of AUDIO."""
    import av

    fmt, codec, rate = AUDIO[kind]
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        pcm = _tone(seconds, rate)
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, len(pcm) // 2, frame_size):
            chunk = pcm[start * 2 : (start + frame_size) * 2]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk) // 2)
            frame.planes[0].update(chunk + b"\0" * (frame.planes[0].buffer_size - len(chunk)))
            frame.sample_rate, frame.pts = rate, start
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def video(kind: str = "mp4", seconds: float = 0.4, size: tuple[int, int] = (64, 48)) -> bytes:
    """A few frames of changing grey encoded by PyAV: ``kind`` one of VIDEO."""
    import av

    fmt, codec = VIDEO[kind]
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(int(seconds * 10)):
            frame = av.VideoFrame(size[0], size[1], "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([index * 20 % 255]) * plane.buffer_size)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def without_id3(mp3: bytes) -> bytes:
    """An MP3 stripped of its ID3v2 tag: it starts with a bare MPEG audio frame."""
    assert mp3[:3] == b"ID3"
    size = (mp3[6] << 21) | (mp3[7] << 14) | (mp3[8] << 7) | mp3[9]
    return mp3[10 + size :]


# --- hostile documents ----------------------------------------------------------------------


def zip_bomb_docx(member_mb: int = 2048) -> bytes:
    """A "DOCX" whose word/document.xml unpacks to ``member_mb`` MB of zeros (a few MB on
    disk; written by streaming, so making it costs no memory)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        chunk = b"\x00" * (1024 * 1024)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            for _ in range(member_mb):
                member.write(chunk)
    return out.getvalue()


def broken_pdf() -> bytes:
    return b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nthis is not a pdf at all\n%%EOF\n"


def plain_zip() -> bytes:
    """A zip archive that is no Office document."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return out.getvalue()


def html() -> bytes:
    return b"<!DOCTYPE html>\n<html><body><script>alert(document.cookie)</script></body></html>\n"
