"""Splitting a document's text into passages to embed and cite.

Structure first, then size: the text is cut into sections at its headings (Markdown
``# `` lines; a spreadsheet's sheets, from ``meta["sheets"]``), and a section into
chunks of about MIN_TOKENS..MAX_TOKENS tokens (estimated as the prompt does, about four
characters a token), cut at a paragraph break when there is one in reach, else at a
sentence end, a line break, a space — never inside a word unless a "word" is longer than
a chunk. Consecutive chunks of a section overlap by about OVERLAP of a chunk (starting
at a sentence or word), so a passage cut in two is still whole in one of them. A
section shorter than SMALL_SECTION_CHARS goes with the next one (a heading alone is not
worth a passage).

Every chunk is ``text[start:end]`` exactly (trimmed of surrounding white space), with
the page its start is on (``meta["pages"]``: each page's start offset, 1-based pages)
and its section (the nearest heading before it, or the sheet's title).
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass
from typing import Any

from chat.generation.prompt import estimate_tokens

MIN_TOKENS = 300
MAX_TOKENS = 500
CHARS_PER_TOKEN = 4  # estimate_tokens' ratio
MIN_CHARS = MIN_TOKENS * CHARS_PER_TOKEN
MAX_CHARS = MAX_TOKENS * CHARS_PER_TOKEN
OVERLAP = 0.12
SMALL_SECTION_CHARS = 300
SECTION_CHARS = 200  # KnowledgeChunk.section's length

HEADING = re.compile(r"^#{1,6}[ \t]+(\S[^\n]*?)[ \t#]*$", re.MULTILINE)
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
SENTENCE_END = re.compile(r"[.!?\u2026\u3002][\"'\u201d\u2019)\]]*\s+")
LINE_BREAK = re.compile(r"\n\s*")
SPACE = re.compile(r"\s+")


@dataclass
class Chunk:
    text: str
    start: int
    end: int
    page: int | None
    section: str


def split(text: str, meta: dict[str, Any]) -> list[Chunk]:
    """The chunks of ``text`` (see the module's doc); none for a text of white space."""
    headings = _headings(text, meta)
    pages = _pages(meta)
    chunks: list[Chunk] = []
    for start, end in _sections(text, headings):
        for chunk_start, chunk_end in _pieces(text, start, end):
            chunks.append(
                Chunk(
                    text=text[chunk_start:chunk_end],
                    start=chunk_start,
                    end=chunk_end,
                    page=_page(pages, chunk_start),
                    section=_section(text, headings, chunk_start, chunk_end),
                )
            )
    return chunks


def _headings(text: str, meta: dict[str, Any]) -> list[tuple[int, int, str]]:
    """(start, end of its line, title) of each heading, in order: Markdown headings and
    the sheets' starts (a sheet's title wins over the heading line at its offset)."""
    found: dict[int, tuple[int, int, str]] = {}
    for match in HEADING.finditer(text):
        found[match.start()] = (match.start(), match.end(), match.group(1).strip())
    for entry in meta.get("sheets") or []:
        try:
            title, offset = str(entry[0]), int(entry[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if 0 <= offset <= len(text):
            found[offset] = (offset, found[offset][1] if offset in found else offset, title)
    return [found[offset] for offset in sorted(found)]


def _pages(meta: dict[str, Any]) -> list[int]:
    pages = meta.get("pages") or []
    try:
        return sorted(int(offset) for offset in pages)
    except (TypeError, ValueError):
        return []


def _page(pages: list[int], offset: int) -> int | None:
    if not pages:
        return None
    return max(1, bisect.bisect_right(pages, offset))


def _section(text: str, headings: list[tuple[int, int, str]], start: int, end: int) -> str:
    """The heading a chunk is under: the last one at or before its start; when the chunk
    opens with heading lines, the last of those (the one its body is under)."""
    starts = [heading[0] for heading in headings]
    index = bisect.bisect_right(starts, start) - 1
    while index + 1 < len(headings):
        following = headings[index + 1]
        between = (
            text[start : following[0]] if index < 0 else text[max(headings[index][1], start) : following[0]]
        )
        if following[0] >= end or between.strip():
            break
        index += 1
    return headings[index][2][:SECTION_CHARS] if index >= 0 else ""


def _sections(text: str, headings: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """Ranges cut at the headings; a short one joined to the next."""
    bounds = sorted({0, *(heading[0] for heading in headings), len(text)})
    ranges = [(a, b) for a, b in itertools.pairwise(bounds) if text[a:b].strip()]
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and len(text[merged[-1][0] : merged[-1][1]].strip()) < SMALL_SECTION_CHARS:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of the chunks of one section."""
    pieces: list[tuple[int, int]] = []
    position, end = _trimmed(text, start, end)
    while position < end:
        if end - position <= MAX_CHARS:
            pieces.append(_trimmed(text, position, end))
            break
        cut = _cut(text, position, end)
        piece = _trimmed(text, position, cut)
        if piece[0] < piece[1]:
            pieces.append(piece)
        following = _overlap_start(text, position, cut)
        position = _trimmed(text, following, end)[0]
    return pieces


def _cut(text: str, start: int, end: int) -> int:
    """Where a chunk from ``start`` ends: the last paragraph break, else sentence end,
    line break or space, in MIN_CHARS..MAX_CHARS from ``start`` (a paragraph break or
    sentence end a little earlier beats a space); a hard cut at MAX_CHARS otherwise."""
    lowest, highest = start + MIN_CHARS // 2, min(start + MAX_CHARS, end)
    for pattern, floor in (
        (PARAGRAPH_BREAK, start + MIN_CHARS),
        (SENTENCE_END, start + MIN_CHARS),
        (LINE_BREAK, start + MIN_CHARS),
        (PARAGRAPH_BREAK, lowest),
        (SENTENCE_END, lowest),
        (LINE_BREAK, lowest),
        (SPACE, lowest),
    ):
        last = _last_boundary(pattern, text, floor, highest)
        if last is not None:
            return last
    return highest


def _last_boundary(pattern: re.Pattern[str], text: str, lowest: int, highest: int) -> int | None:
    """The end of the last match of ``pattern`` that ends in [lowest, highest] — the
    start of what follows the boundary."""
    best = None
    # Look back a little before ``lowest`` so a match straddling it is seen.
    for match in pattern.finditer(text, max(0, lowest - 8), highest):
        if lowest <= match.end() <= highest:
            best = match.end()
    return best


def _overlap_start(text: str, start: int, cut: int) -> int:
    """Where the next chunk starts: about OVERLAP of this one back from ``cut``, at a
    sentence start in that stretch when there is one, else at a word start."""
    back = max(cut - int((cut - start) * OVERLAP), start + 1)
    for pattern in (SENTENCE_END, SPACE):
        for match in pattern.finditer(text, back - 1, cut):
            if back <= match.end() < cut:
                return match.end()
    return cut


__all__ = ["Chunk", "estimate_tokens", "split"]
