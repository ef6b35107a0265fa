"""web_fetch and web_search against real local HTTP servers (http.server in threads), and
the SSRF guard (chat/agents/ssrf.py) refusing every private target: directly, through
redirects, through a name that resolves privately, through odd address forms, and
through a name that would answer differently the second time (DNS rebinding).

The test site is let through by WEB_FETCH_PRIVATE_EXEMPT for its own ip:port only; a
second server on another loopback port stands for the internal service an attacker
wants, and each refusal test checks that it was never reached."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chat.agents import ssrf
from chat.agents.builtin.web import MAX_REDIRECTS, WebFetch, WebSearch
from chat.agents.tools import ToolContext, ToolError, ToolOutput

CTX = ToolContext(
    channel_id=1, channel_name="lobby", session_id=None, turn_id=1, requester_id=None, author_id=None
)

ARTICLE = """<!doctype html>
<html><head><title>The Lighthouse Keepers of Skerryvore</title></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a> | <a href="/shop">Shop our mugs</a></nav>
<article>
<h1>The Lighthouse Keepers of Skerryvore</h1>
<p>Skerryvore lighthouse stands on a reef twelve miles south-west of Tiree. Its keepers served
in rotations of a month on the rock and two weeks ashore, tending the lamp through every night.</p>
<p>The tower, finished in 1844 by Alan Stevenson, is the tallest lighthouse in Scotland. Its
granite was dressed on the island of Hynish and carried to the reef by boat in calm weather.</p>
<p>Life on the rock was measured by the lamp: trimming wicks at dusk, winding the clockwork of
the lens every few hours, and logging the weather at dawn before the relief boat came.</p>
</article>
<footer>Copyright Example Heritage Trust. Subscribe to our newsletter.</footer>
</body></html>"""

PLAIN = "Tide table for Tiree, week 49.\nHigh water 04:12 and 16:40; low water 10:26 and 22:51.\n"


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.gone = threading.Event()  # a client hung up on an endless or slow body
        super().__init__(address, handler)


class IPv6Recorder(Recorder):
    address_family = socket.AF_INET6


class SiteHandler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"moved", "text/plain", Location=location)

    def _drip(self, chunk: bytes, pause: float) -> None:
        """A body that never ends (no length, no end of stream) until the client leaves."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                self.wfile.write(chunk)
                self.wfile.flush()
                if pause:
                    time.sleep(pause)  # the server's pace, not the test's synchronisation
        except OSError:
            self.server.gone.set()

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/article":
            self._send(200, ARTICLE.encode(), "text/html; charset=utf-8")
        elif url.path == "/plain":
            self._send(200, PLAIN.encode(), "text/plain; charset=utf-8")
        elif url.path == "/image":
            self._send(200, b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png")
        elif url.path == "/missing":
            self._send(404, b"no such page", "text/plain")
        elif url.path == "/echo-host":
            self._send(200, f"Host: {self.headers['Host']}".encode(), "text/plain")
        elif url.path == "/endless":
            self._drip(b"x" * 65536, 0)
        elif url.path == "/slow":
            self._drip(b"y", 0.2)
        elif url.path.startswith("/chain/"):
            left = int(url.path.rsplit("/", 1)[1])
            self._redirect(f"/chain/{left - 1}" if left > 0 else "/article")
        elif url.path == "/to":
            self._redirect(query["url"][0])
        elif url.path == "/search":  # a SearXNG's JSON API
            results = [
                {"title": f"Result {n}", "url": f"https://example.org/{n}", "content": f"snippet {n}"}
                for n in range(1, 8)
            ]
            self._send(
                200, json.dumps({"query": query["q"][0], "results": results}).encode(), "application/json"
            )
        elif url.path == "/search-huge":
            self._send(200, b'{"results": [' + b" " * 300_000 + b"]}", "application/json")
        else:
            self._send(200, b"internal service: the secret is 42", "text/plain")


def serve(server: Recorder) -> Recorder:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def site() -> Iterator[Recorder]:
    server = serve(Recorder(("127.0.0.1", 0), SiteHandler))
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def internal() -> Iterator[Recorder]:
    """The service an attacker wants: on loopback, not exempt."""
    server = serve(Recorder(("127.0.0.1", 0), SiteHandler))
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def internal_v6() -> Iterator[Recorder]:
    server = serve(IPv6Recorder(("::1", 0), SiteHandler))
    yield server
    server.shutdown()


@pytest.fixture(autouse=True)
def exempt_the_site(settings: Any, site: Recorder, internal: Recorder, internal_v6: Recorder) -> None:
    settings.WEB_FETCH_PRIVATE_EXEMPT = [f"127.0.0.1:{port(site)}"]
    settings.WEB_FETCH_ALLOWED_HOSTS = []
    for server in (site, internal, internal_v6):
        server.requests.clear()
        server.gone.clear()


def port(server: Recorder) -> int:
    return int(server.server_address[1])


def page(server: Recorder, path: str) -> str:
    return f"http://127.0.0.1:{port(server)}{path}"


async def fetch(url: str) -> ToolOutput:
    return await WebFetch().run({"url": url}, CTX)


async def refused(url: str) -> str:
    with pytest.raises(ToolError) as caught:
        await fetch(url)
    return str(caught.value)


# --- reading pages -------------------------------------------------------------------------------


async def test_an_article_comes_back_as_its_readable_text(site: Recorder) -> None:
    output = await fetch(page(site, "/article"))

    assert output.ok
    assert "Title: The Lighthouse Keepers of Skerryvore" in output.content
    assert "twelve miles south-west of Tiree" in output.content
    assert "winding the clockwork of the lens" in output.content
    assert "Shop our mugs" not in output.content  # the navigation is boilerplate
    # The request went to the checked address, named as asked.
    assert site.requests[0][1]["Host"] == f"127.0.0.1:{port(site)}"


async def test_plain_text_comes_back_as_it_is_and_binary_is_refused(site: Recorder) -> None:
    output = await fetch(page(site, "/plain"))
    assert output.ok and PLAIN.strip() in output.content

    message = await refused(page(site, "/image"))
    assert "image/png" in message and "not a web page or text" in message

    message = await refused(page(site, "/missing"))
    assert "HTTP 404" in message

    for url in ("", 5, "x" * 5000):
        with pytest.raises(ToolError, match="url: "):
            await WebFetch().run({"url": url}, CTX)


async def test_an_endless_body_is_read_up_to_the_cap_then_dropped(site: Recorder, settings: Any) -> None:
    settings.WEB_FETCH_MAX_BYTES = 100_000
    output = await fetch(page(site, "/endless"))

    assert output.ok
    assert "only the first 100,000 bytes of the page were read" in output.content
    assert "x" * 1000 in output.content
    assert len(output.content) <= settings.TOOL_OUTPUT_CHARS
    assert site.gone.wait(10)  # the connection was closed: nothing more is read


async def test_a_slow_body_is_given_up_at_the_time_limit(site: Recorder, settings: Any) -> None:
    settings.WEB_FETCH_TIMEOUT = 1.0
    started = time.monotonic()
    message = await refused(page(site, "/slow"))

    assert "did not answer within 1 s" in message
    assert time.monotonic() - started < 3
    assert site.gone.wait(10)


async def test_redirects_are_followed_up_to_the_limit(site: Recorder) -> None:
    # /chain/N redirects N + 1 times.
    output = await fetch(page(site, f"/chain/{MAX_REDIRECTS - 1}"))
    assert "twelve miles south-west of Tiree" in output.content
    assert output.content.startswith(f"URL: {page(site, '/article')}")

    message = await refused(page(site, f"/chain/{MAX_REDIRECTS}"))
    assert message == f"refused: more than {MAX_REDIRECTS} redirects"


# --- the guard -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://127.0.0.1:{internal}/", "refused: 127.0.0.1 is a loopback address"),
        ("http://localhost:{internal}/", "refused: localhost resolves to 127.0.0.1, a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "refused: 169.254.169.254 is the cloud metadata address",
        ),
        ("http://[::1]:{internal_v6}/", "refused: ::1 is a loopback address"),
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(
    site: Recorder, internal: Recorder, internal_v6: Recorder, target: str, expected: str
) -> None:
    location = target.format(internal=port(internal), internal_v6=port(internal_v6))
    message = await refused(page(site, "/to?url=" + location))

    assert message == expected
    assert [path for path, _ in site.requests] == ["/to?url=" + location]  # the first hop only
    assert internal.requests == [] and internal_v6.requests == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:{internal}/", "refused: 127.0.0.1 is a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/iam/",
            "refused: 169.254.169.254 is the cloud metadata address",
        ),
        ("http://10.0.0.1/", "refused: 10.0.0.1 is a private address"),
        (
            "http://[::ffff:127.0.0.1]:{internal}/",
            "refused: ::ffff:7f00:1 is a loopback address (127.0.0.1 inside an IPv6 address)",
        ),
        ("http://localhost:{internal}/", "refused: localhost resolves to 127.0.0.1, a loopback address"),
        # Forms inet_aton reads as 127.0.0.1.
        ("http://2130706433:{internal}/", "refused: 2130706433 resolves to 127.0.0.1, a loopback address"),
        ("http://127.1:{internal}/", "refused: 127.1 resolves to 127.0.0.1, a loopback address"),
        ("http://0.0.0.0:{internal}/", "refused: 0.0.0.0 is the unspecified address"),
        ("http://[::]:{internal}/", "refused: :: is the unspecified address"),
        # What a person reads as example.org and a client sends to 127.0.0.1.
        ("http://example.org@127.0.0.1:{internal}/", "refused: URLs with a user name or password"),
        ("ftp://127.0.0.1:{internal}/", "refused: only http and https URLs can be fetched, not ftp:"),
        ("file:///etc/passwd", "refused: only http and https URLs can be fetched, not file:"),
        ("gopher://127.0.0.1:{internal}/", "refused: only http and https URLs can be fetched, not gopher:"),
    ],
)
async def test_private_targets_are_refused_before_anything_is_sent(
    internal: Recorder, url: str, expected: str
) -> None:
    message = await refused(url.format(internal=port(internal)))

    assert message.startswith(expected)
    assert internal.requests == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("100.64.1.2", "a shared (CGNAT) address"),
        ("192.168.1.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("169.254.10.10", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("fd00:ec2::254", "the cloud metadata address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a private address"),
        ("192.0.2.1", "a private address"),
        ("2001:db8::1", "a private address"),
        ("64:ff9b::a00:1", "a private address (10.0.0.1 inside an IPv6 address)"),
        ("2002:a9fe:a9fe::", "the cloud metadata address (169.254.169.254 inside an IPv6 address)"),
        ("93.184.215.14", None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
        ("::ffff:93.184.215.14", None),
    ],
)
def test_address_classes(address: str, reason: str | None) -> None:
    assert ssrf.why_refused(ipaddress.ip_address(address)) == reason


async def test_the_exemption_is_exactly_its_ip_and_port(
    site: Recorder, internal: Recorder, settings: Any
) -> None:
    settings.WEB_FETCH_PRIVATE_EXEMPT = []
    message = await refused(page(site, "/article"))
    assert message == "refused: 127.0.0.1 is a loopback address"
    assert site.requests == []

    settings.WEB_FETCH_PRIVATE_EXEMPT = [f"127.0.0.1:{port(internal)}"]
    assert (await fetch(page(internal, "/"))).content.endswith("the secret is 42")
    assert await refused(page(site, "/article")) == "refused: 127.0.0.1 is a loopback address"


async def test_the_allowlist_limits_hosts_on_every_hop(site: Recorder, settings: Any) -> None:
    settings.WEB_FETCH_ALLOWED_HOSTS = ["example.org", ".example.net"]
    assert await refused(page(site, "/article")) == "refused: 127.0.0.1 is not in WEB_FETCH_ALLOWED_HOSTS"
    assert site.requests == []

    settings.WEB_FETCH_ALLOWED_HOSTS = ["127.0.0.1"]
    assert (await fetch(page(site, "/article"))).ok
    # localhost is the same address and exempt port, but not an allowed host.
    message = await refused(page(site, f"/to?url=http://localhost:{port(site)}/article"))
    assert message == "refused: localhost is not in WEB_FETCH_ALLOWED_HOSTS"
    assert [path for path, _ in site.requests][-1].startswith("/to?")


class Resolver:
    """The event loop's getaddrinfo with some names answered by the test: the standard
    library's resolver, not Colloquy's code, is what stands in here."""

    def __init__(self, loop: asyncio.AbstractEventLoop, answers: dict[str, list[str]]) -> None:
        self.real = loop.getaddrinfo
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        if name in self.answers:
            # The first answer to the first question, the last to every later one.
            choices = self.answers[name]
            address = choices[0] if self.asked.count(name) == 1 else choices[-1]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]
        return await self.real(host, port, *args, **kwargs)


@pytest.fixture
async def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    loop = asyncio.get_running_loop()
    answers: dict[str, list[str]] = {}
    fake = Resolver(loop, answers)
    monkeypatch.setattr(loop, "getaddrinfo", fake)
    return fake


@pytest.fixture
def rebound(site: Recorder) -> Iterator[Recorder]:
    """Another server on the site's port at 127.0.0.2: where a second lookup would go."""
    server = serve(Recorder(("127.0.0.2", port(site)), SiteHandler))
    yield server
    server.shutdown()


async def test_dns_rebinding_the_checked_address_is_the_one_connected_to(
    site: Recorder, rebound: Recorder, resolver: Resolver
) -> None:
    # rebind.test answers the exempt site first, then 127.0.0.2 to anyone asking again.
    resolver.answers["rebind.test"] = ["127.0.0.1", "127.0.0.2"]
    output = await fetch(f"http://rebind.test:{port(site)}/echo-host")

    assert output.content.endswith(f"Host: rebind.test:{port(site)}")  # the site, named as asked
    assert resolver.asked.count("rebind.test") == 1
    assert rebound.requests == []


async def test_a_name_with_any_private_address_is_refused(
    site: Recorder, internal: Recorder, resolver: Resolver
) -> None:
    resolver.answers["mixed.test"] = ["10.1.2.3"]
    assert await refused(f"http://mixed.test:{port(internal)}/") == (
        "refused: mixed.test resolves to 10.1.2.3, a private address"
    )
    assert internal.requests == []


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Recorder, list[str]]]:
    """An HTTPS server with a self-signed certificate, recording the SNI names it is sent."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rebind.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("rebind.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    context.sni_callback = lambda _sock, server_name, _ctx: names.append(server_name or "")
    server = Recorder(("127.0.0.1", 0), SiteHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    serve(server)
    yield server, names
    server.shutdown()


async def test_https_sends_and_verifies_the_name_asked_for_not_the_address(
    tls_site: tuple[Recorder, list[str]], resolver: Resolver, settings: Any
) -> None:
    server, names = tls_site
    settings.WEB_FETCH_PRIVATE_EXEMPT = [f"127.0.0.1:{port(server)}"]
    resolver.answers["rebind.test"] = ["127.0.0.1"]
    message = await refused(f"https://rebind.test:{port(server)}/article")

    # The certificate is self-signed, so verification fails: it was attempted for rebind.test.
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert names == ["rebind.test"]
    assert server.requests == []


# --- web_search ----------------------------------------------------------------------------------


async def test_web_search_numbers_the_top_five_results(site: Recorder, settings: Any) -> None:
    # The admin's endpoint: not subject to the guard (no exemption needed for it).
    settings.WEB_FETCH_PRIVATE_EXEMPT = []
    settings.WEB_SEARCH_URL = page(site, "/search")
    output = await WebSearch().run({"query": "skerryvore lighthouse"}, CTX)

    assert output.ok
    assert "1. Result 1\n   https://example.org/1\n   snippet 1" in output.content
    assert "5. Result 5" in output.content and "Result 6" not in output.content
    path, _ = site.requests[-1]
    assert parse_qs(urlsplit(path).query) == {"q": ["skerryvore lighthouse"], "format": ["json"]}


async def test_web_search_unset_oversized_or_broken(site: Recorder, settings: Any) -> None:
    settings.WEB_SEARCH_URL = ""
    with pytest.raises(ToolError, match="web search is not configured"):
        await WebSearch().run({"query": "x"}, CTX)

    settings.WEB_SEARCH_URL = page(site, "/search-huge")
    settings.WEB_FETCH_MAX_BYTES = 100_000
    with pytest.raises(ToolError, match="answer was too large"):
        await WebSearch().run({"query": "x"}, CTX)

    settings.WEB_SEARCH_URL = page(site, "/plain")
    with pytest.raises(ToolError, match="did not answer a JSON object with results"):
        await WebSearch().run({"query": "x"}, CTX)

    with pytest.raises(ToolError, match="query: a non-empty string is required"):
        await WebSearch().run({"query": " "}, CTX)
