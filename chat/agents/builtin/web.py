"""web_fetch (a page's readable text) and web_search (an admin-configured SearXNG-style
JSON endpoint). Every URL web_fetch reaches, redirects included, passes the SSRF guard
(chat/agents/ssrf.py) and is connected to at the address the guard checked."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from django.conf import settings

from chat.agents import ssrf
from chat.agents.tools import ToolContext, ToolError, ToolOutput, ToolSpec

MAX_REDIRECTS = 5
MAX_URL_CHARS = 4096
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Read as they are, besides text/*.
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/ld+json"})
SEARCH_RESULTS = 5
USER_AGENT = "Colloquy-web_fetch/1.0"


def _string_argument(arguments: dict[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"{name}: a non-empty string is required")
    return value.strip()


def _client(timeout: float) -> httpx.AsyncClient:
    # trust_env=False: an HTTP(S)_PROXY from the environment would resolve the name
    # itself and route around the checked address.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body (decoded from any content encoding); True
    when more was left unread. Stops reading there: an endless body costs nothing more."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"\n[… cut at {limit:,} of {len(text):,} characters]"
    return text[: max(0, limit - len(note))] + note


def _media_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";")[0].strip().lower()


def _decode(body: bytes, response: httpx.Response) -> str:
    try:
        return body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


def _extract_html(html: str, url: str) -> tuple[str, str]:
    """(title, readable text) of a page; CPU work, run in a thread."""
    import trafilatura  # lxml and friends only when a page is fetched

    text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True)
    if not text:  # no main content found (a link list, an app shell): all of its text
        text = trafilatura.html2txt(html)
    metadata = trafilatura.extract_metadata(html, default_url=url)
    title = (metadata.title or "") if metadata is not None else ""
    return title.strip(), (text or "").strip()


class WebFetch:
    spec = ToolSpec(
        name="web_fetch",
        description=(
            "Fetch a web page (http or https) and return its readable text: the main content of an "
            "HTML page, or a plain-text file as it is. Private and internal addresses are refused."
        ),
        parameters={
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The absolute http(s) URL to fetch."}},
            "required": ["url"],
            "additionalProperties": False,
        },
    )
    status = "reading a web page…"

    def __init__(self) -> None:
        # Its own deadline gives a clear message; the loop's is a backstop just after it.
        self.timeout = float(settings.WEB_FETCH_TIMEOUT) + 1.0

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        url = _string_argument(arguments, "url")
        if len(url) > MAX_URL_CHARS:
            raise ToolError(f"url: longer than {MAX_URL_CHARS} characters")
        limit = float(settings.WEB_FETCH_TIMEOUT)
        try:
            async with asyncio.timeout(limit):
                return await self._fetch(url)
        except TimeoutError as exc:
            raise ToolError(f"{url} did not answer within {limit:g} s") from exc
        except httpx.HTTPError as exc:  # the connection failed while the page was read
            raise ToolError(f"{url} could not be fetched: {_describe(exc)}") from exc

    async def _fetch(self, url: str) -> ToolOutput:
        max_bytes = int(settings.WEB_FETCH_MAX_BYTES)
        target = await ssrf.check(url)
        async with _client(float(settings.WEB_FETCH_TIMEOUT)) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                async with _open(client, target) as response:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_STATUSES and location:
                        try:
                            following = target.url.join(location)
                        except (httpx.InvalidURL, ValueError) as exc:
                            raise ToolError(f"refused: a redirect to an invalid URL ({exc})") from exc
                        target = await ssrf.check(following)
                        continue
                    if response.status_code >= 400:
                        raise ToolError(
                            f"{target.url} answered HTTP {response.status_code} {response.reason_phrase}"
                        )
                    return await self._read(response, target, max_bytes)
        raise ToolError(f"refused: more than {MAX_REDIRECTS} redirects")

    async def _read(self, response: httpx.Response, target: ssrf.Target, max_bytes: int) -> ToolOutput:
        media = _media_type(response)
        is_html = media in HTML_TYPES
        if not (is_html or media.startswith("text/") or media in TEXT_TYPES or media == ""):
            raise ToolError(
                f"refused: {target.url} is {media}, not a web page or text (web_fetch reads HTML and text)"
            )
        body, cut = await _read_capped(response, max_bytes)
        if media == "" and b"\0" in body[:4096]:
            raise ToolError(f"refused: {target.url} is binary data, not a web page or text")
        text = _decode(body, response)
        url = str(target.url)
        if is_html or (media == "" and text.lstrip()[:1] == "<"):
            title, text = await asyncio.to_thread(_extract_html, text, url)
        else:
            title = ""
        lines = [f"URL: {url}"]
        if title:
            lines.append(f"Title: {title}")
        if cut:
            lines.append(f"[only the first {max_bytes:,} bytes of the page were read]")
        content = "\n".join(lines) + "\n\n" + (text or "[the page has no readable text]")
        return ToolOutput(ok=True, content=_cap(content, int(settings.TOOL_OUTPUT_CHARS)))


@contextlib.asynccontextmanager
async def _open(client: httpx.AsyncClient, target: ssrf.Target) -> AsyncIterator[httpx.Response]:
    """The response of a GET to the checked addresses of ``target`` in turn (the next on
    a refused connection), streamed: the body is read only as far as wanted."""
    failure: Exception | None = None
    for address in target.addresses:
        request = client.build_request(
            "GET",
            target.request_url(address),
            headers={"Host": target.host_header, "Accept-Encoding": "identity"},
            extensions=target.extensions(),
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc
            continue
        except httpx.HTTPError as exc:
            raise ToolError(f"{target.url} could not be fetched: {_describe(exc)}") from exc
        try:
            yield response
        finally:
            await response.aclose()
        return
    raise ToolError(f"{target.url} could not be reached: {_describe(failure)}")


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no address"
    return str(exc) or type(exc).__name__


class WebSearch:
    spec = ToolSpec(
        name="web_search",
        description=(
            "Search the web. Returns the top results, numbered, each with its title, URL and a "
            "snippet; fetch a result with web_fetch to read it."
        ),
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to search for."}},
            "required": ["query"],
            "additionalProperties": False,
        },
    )
    status = "searching the web…"

    def __init__(self) -> None:
        self.timeout = float(settings.WEB_FETCH_TIMEOUT) + 1.0

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        query = _string_argument(arguments, "query")
        endpoint = str(settings.WEB_SEARCH_URL)
        if not endpoint:
            raise ToolError("web search is not configured on this instance (WEB_SEARCH_URL)")
        limit = float(settings.WEB_FETCH_TIMEOUT)
        # The endpoint is the admin's, so the SSRF guard does not apply (a SearXNG often
        # runs beside the site); its answer is still capped in size and time.
        try:
            async with (
                asyncio.timeout(limit),
                _client(limit) as client,
                client.stream("GET", endpoint, params={"q": query, "format": "json"}) as response,
            ):
                if response.status_code >= 400:
                    raise ToolError(f"the search service answered HTTP {response.status_code}")
                body, cut = await _read_capped(response, int(settings.WEB_FETCH_MAX_BYTES))
        except TimeoutError as exc:
            raise ToolError(f"the search service did not answer within {limit:g} s") from exc
        except httpx.HTTPError as exc:
            raise ToolError(f"the search service could not be reached: {_describe(exc)}") from exc
        if cut:
            raise ToolError("the search service's answer was too large")
        try:
            answer = json.loads(body)
            results = answer["results"]
            if not isinstance(results, list):
                raise TypeError
        except (ValueError, KeyError, TypeError) as exc:
            raise ToolError("the search service did not answer a JSON object with results") from exc
        lines: list[str] = []
        for result in results:
            if not isinstance(result, dict) or not isinstance(result.get("url"), str):
                continue
            n = len(lines) + 1
            title = " ".join(str(result.get("title") or result["url"]).split())
            snippet = " ".join(str(result.get("content") or "").split())
            lines.append(f"{n}. {title}\n   {result['url']}" + (f"\n   {snippet}" if snippet else ""))
            if n >= SEARCH_RESULTS:
                break
        if not lines:
            return ToolOutput(ok=True, content=f'No results for "{query}".')
        content = f'Top results for "{query}":\n\n' + "\n\n".join(lines)
        return ToolOutput(ok=True, content=_cap(content, int(settings.TOOL_OUTPUT_CHARS)))
