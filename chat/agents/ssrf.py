"""The SSRF guard of web_fetch (docs/architecture.md, "Built-in tools and the SSRF guard").

A URL a model asks for is checked before anything is sent: http or https only, no
user name or password in it, its host in WEB_FETCH_ALLOWED_HOSTS when that list is
set, and EVERY address its name resolves to public. The caller then connects to one
of those checked addresses itself (``Target.request_url``) with the original name in
the Host header and TLS SNI: resolving the name a second time when connecting would
let a name that answered a public address to the check answer 127.0.0.1 to the
connection (DNS rebinding). Redirects are followed by the caller, each hop checked
here again.

``WEB_FETCH_PRIVATE_EXEMPT`` lists "ip:port" pairs let through although private:
for tests and local development only (a test's own site on 127.0.0.1), never in
production. Only those exact pairs; any other private address stays refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx
from django.conf import settings

from chat.agents.tools import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services (AWS, GCP, Azure, …; AWS's IPv6 one): named in the refusal.
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# Not global, but is_private does not cover it on Python 3.11.
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64).
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and what to tell the server it is."""

    url: httpx.URL  # as asked (redirects are resolved against it)
    host: str  # the name as sent on the wire (IDNA), without brackets
    port: int
    addresses: tuple[IPAddress, ...]  # all checked; connect to these, in order

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.url.scheme] else f"{name}:{self.port}"

    def request_url(self, address: IPAddress) -> httpx.URL:
        """The URL with the checked address in place of the name: nothing resolves it again."""
        return httpx.URL(
            scheme=self.url.scheme, host=str(address), port=self.port, raw_path=self.url.raw_path
        )

    def extensions(self) -> dict[str, str]:
        """TLS must name (and verify the certificate of) the host asked for, not the address."""
        return {"sni_hostname": self.host} if self.url.scheme == "https" else {}


def why_refused(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one, as the end of "refused: <address> is …";
    None when it is public."""
    if address in METADATA:
        return "the cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = why_refused(embedded)
            return f"{reason} ({embedded} inside an IPv6 address)" if reason else None
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return "a shared (CGNAT) address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64), if any:
    ``::ffff:127.0.0.1`` reaches 127.0.0.1."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _exempt() -> set[tuple[IPAddress, int]]:
    pairs: set[tuple[IPAddress, int]] = set()
    for entry in settings.WEB_FETCH_PRIVATE_EXEMPT:
        host, _, port = str(entry).strip().rpartition(":")
        try:
            pairs.add((ipaddress.ip_address(host.strip("[]")), int(port)))
        except ValueError as exc:
            raise ToolError(f'WEB_FETCH_PRIVATE_EXEMPT: "{entry}" is not "ip:port"') from exc
    return pairs


def _allowed_host(host: str) -> bool:
    """WEB_FETCH_ALLOWED_HOSTS: exact names, or ".example.org" for it and its subdomains."""
    allowed = [str(name).strip().lower() for name in settings.WEB_FETCH_ALLOWED_HOSTS if str(name).strip()]
    if not allowed:
        return True
    for name in allowed:
        if name.startswith("."):
            if host == name[1:] or host.endswith(name):
                return True
        elif host == name.strip("[]"):
            return True
    return False


def parse(url: str | httpx.URL) -> httpx.URL:
    """The URL if its form is acceptable (scheme, host, no user info); else ToolError."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ToolError(f"refused: not a valid URL ({exc})") from exc
    if parsed.scheme not in DEFAULT_PORTS:
        scheme = parsed.scheme or "none"
        raise ToolError(f"refused: only http and https URLs can be fetched, not {scheme}:")
    if parsed.userinfo:
        # "http://example.com@10.0.0.1/" reads as example.com to a person and goes to 10.0.0.1.
        raise ToolError("refused: URLs with a user name or password (…@host) are not fetched")
    if not parsed.raw_host:
        raise ToolError("refused: the URL has no host")
    return parsed


async def check(url: str | httpx.URL) -> Target:
    """Check ``url`` and resolve its host once; ToolError("refused: …") when any rule or
    any of its addresses says no."""
    parsed = parse(url)
    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeDecodeError as exc:
        raise ToolError("refused: the host name is not valid") from exc
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    if not _allowed_host(host):
        raise ToolError(f"refused: {host} is not in WEB_FETCH_ALLOWED_HOSTS")
    addresses = await resolve(host, port)
    exempt = _exempt()
    for address in addresses:
        reason = why_refused(address)
        if reason is not None and (address, port) not in exempt:
            if _literal(host) == address:
                raise ToolError(f"refused: {address} is {reason}")
            raise ToolError(f"refused: {host} resolves to {address}, {reason}")
    return Target(url=parsed, host=host, port=port, addresses=addresses)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address ``host`` has (an address literal is its own); ToolError when none.
    Odd forms ("2130706433", "127.1") come back as the addresses they mean."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"{host} could not be resolved ({exc})") from exc
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in found:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # An IPv6 scope ("fe80::1%eth0") is not part of the address checked.
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ToolError(f"{host} has no address")
    return tuple(addresses)
