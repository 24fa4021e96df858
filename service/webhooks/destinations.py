"""Where a webhook may be delivered: a callback URL checked, resolved and pinned.

A callback URL is chosen by a client but fetched by our workers, inside our
network: without checks it reaches the metadata service, the database or the
vLLM servers (SSRF). So only http(s) without credentials, and every address the
host resolves to must be public: not private, loopback, link-local, multicast,
reserved or unspecified, also when wrapped in IPv6 (IPv4-mapped, 6to4, Teredo,
NAT64). Odd spellings of an address (``2130706433``, ``0x7f.1``) are caught
because the check is on what the resolver returns, not on the text. The address
returned is the one to connect to: a delivery that resolved the name again
could be sent elsewhere by a DNS answer that changed in between (rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from service.errors import Invalid

MAX_URL_LENGTH = 2048
_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked callback: connect to `address`:`port`, and send `host` (Host, SNI)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    target: str  # path and query, the request line's


def _bad(reason: str, field: str) -> Invalid:
    return Invalid("bad_callback_url", reason, field=field)


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address, the one a packet reaches
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` is no place for a webhook, or None for a public address."""
    inner = _embedded_v4(ip)
    if inner is not None:
        why = refusal(inner)
        return None if why is None else f"{why} (inside the IPv6 address {ip})"
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "not globally routable"),
    )
    for hit, what in checks:
        if hit:
            return f"{ip} is a {what} address"
    return None


def _split(url: str, field: str) -> tuple[str, str, int, str]:
    if len(url) > MAX_URL_LENGTH:
        raise _bad(f"the URL is over {MAX_URL_LENGTH} characters", field)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise _bad("the URL contains whitespace or control characters", field)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _PORTS:
        raise _bad("a callback URL is http or https", field)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _bad("a callback URL carries no credentials (they would end up in logs)", field)
    if not parts.hostname:
        raise _bad("the URL names no host", field)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise _bad("the URL's port is not a number from 1 to 65535", field)
    port = port or _PORTS[scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port, target


def _addresses(host: str, port: int, resolve: Resolver, field: str) -> list[IPAddress]:
    try:
        host.encode("idna")
        answers = resolve(host, port, type=socket.SOCK_STREAM)
    except (UnicodeError, socket.gaierror, OSError) as exc:
        raise Invalid(
            "callback_unresolvable",
            f"the callback host {host!r} does not resolve: {exc}",
            field=field,
        ) from None
    found: list[IPAddress] = []
    for answer in answers:
        ip = ipaddress.ip_address(str(answer[4][0]).split("%", 1)[0])  # drop an IPv6 scope
        if ip not in found:
            found.append(ip)
    if not found:
        raise Invalid(
            "callback_unresolvable", f"the callback host {host!r} has no address", field=field
        )
    return found


def check_destination(
    url: str,
    *,
    allow_private: bool = False,
    resolve: Resolver = socket.getaddrinfo,
    field: str = "callback_url",
) -> Destination:
    """The checked `url` and the address to deliver to; `Invalid` when it may not be used.

    `allow_private` (Settings.webhook_private_allowed) lets private, loopback and
    link-local addresses through, for receivers on the same host or network.
    """
    scheme, host, port, target = _split(url, field)
    addresses = _addresses(host, port, resolve, field)
    if not allow_private:
        for ip in addresses:
            why = refusal(ip)
            if why is not None:
                # Every answer must pass: a name that also resolves to a private address
                # could be delivered there by the next lookup of any other client.
                raise Invalid(
                    "callback_private_address",
                    f"the callback host {host!r} resolves to {why}; webhooks go to public "
                    "addresses unless the operator allows private ones",
                    field=field,
                )
    return Destination(url, scheme, host, port, str(addresses[0]), target)
