"""Callback URLs: what may be delivered to, on literal addresses and real lookups.

No outside DNS is needed: literal IPs, `localhost` (from /etc/hosts) and a name
under `.invalid`, which by RFC 2606 never resolves.
"""

from __future__ import annotations

import pytest

from service.config import Settings
from service.errors import Invalid
from service.webhooks.destinations import check_destination

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost:8080/hook", "loopback"),
    ("http://2130706433/hook", "loopback"),  # 127.0.0.1 as one number
    ("http://0x7f.1/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),  # IPv4-mapped IPv6
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://[fc00::1]/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),  # the cloud metadata service
    ("http://[fe80::1]/hook", "link-local"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://100.64.0.1/hook", "not globally routable"),  # carrier-grade NAT
    ("http://[2002:a00:1::]/hook", "private"),  # 6to4 around 10.0.0.1
    ("http://[64:ff9b::7f00:1]/hook", "loopback"),  # NAT64 around 127.0.0.1
]


@pytest.mark.parametrize(("url", "what"), REFUSED)
def test_private_destinations_are_refused(url: str, what: str) -> None:
    with pytest.raises(Invalid) as info:
        check_destination(url)
    assert info.value.code == "callback_private_address"
    assert what in info.value.reason
    assert info.value.field == "callback_url"


@pytest.mark.parametrize(("url", "_what"), REFUSED)
def test_the_operator_may_allow_them(url: str, _what: str) -> None:
    destination = check_destination(url, allow_private=True)
    assert destination.address  # still resolved, and pinned


@pytest.mark.parametrize(
    ("url", "address", "port", "target"),
    [
        ("https://8.8.8.8/hook?x=1", "8.8.8.8", 443, "/hook?x=1"),
        ("http://1.1.1.1:8080", "1.1.1.1", 8080, "/"),
        ("HTTPS://[2606:4700:4700::1111]/h", "2606:4700:4700::1111", 443, "/h"),
        ("http://[::ffff:8.8.4.4]/", "::ffff:808:404", 80, "/"),
    ],
)
def test_public_destinations_resolve_to_the_address_to_pin(
    url: str, address: str, port: int, target: str
) -> None:
    destination = check_destination(url)
    assert (destination.address, destination.port, destination.target) == (address, port, target)
    assert destination.scheme in ("http", "https")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://8.8.8.8/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://8.8.8.8/", "http or https"),
        ("8.8.8.8/hook", "http or https"),
        ("https://user:pw@8.8.8.8/hook", "credentials"),
        ("https://user@8.8.8.8/hook", "credentials"),
        ("https:///hook", "no host"),
        ("https://8.8.8.8:99999/", "port"),
        ("https://8.8.8.8:0/", "port"),
        ("https://8.8.8.8/a b", "whitespace"),
        ("https://8.8.8.8/\r\nHost: evil", "whitespace"),
        ("https://8.8.8.8/" + "a" * 3000, "2048"),
    ],
)
def test_malformed_urls(url: str, words: str) -> None:
    with pytest.raises(Invalid) as info:
        check_destination(url, allow_private=True)
    assert info.value.code == "bad_callback_url"
    assert words in info.value.reason


def test_a_host_that_does_not_resolve() -> None:
    with pytest.raises(Invalid) as info:
        check_destination("https://hooks.example.invalid/x", allow_private=True)
    assert info.value.code == "callback_unresolvable"
    assert "hooks.example.invalid" in info.value.reason


def test_every_answer_must_be_public() -> None:
    """A name with one public and one private answer is refused, not half-trusted."""

    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(2, 1, 6, "", ("8.8.8.8", port)), (2, 1, 6, "", ("10.0.0.5", port))]

    with pytest.raises(Invalid) as info:
        check_destination("https://mixed.test/hook", resolve=resolve)
    assert "10.0.0.5" in info.value.reason
    pinned = check_destination("https://mixed.test/hook", resolve=resolve, allow_private=True)
    assert (pinned.host, pinned.address) == ("mixed.test", "8.8.8.8")


def test_the_setting_follows_the_stack_unless_set() -> None:
    embedded = Settings(database_url="sqlite:///x.db", webhook_allow_private=None)
    deployed = Settings(database_url="postgresql+psycopg://h/db", webhook_allow_private=None)
    assert embedded.webhook_private_allowed
    assert not deployed.webhook_private_allowed
    assert Settings(
        database_url="postgresql+psycopg://h/db", webhook_allow_private=True
    ).webhook_private_allowed
    assert not Settings(
        database_url="sqlite:///x.db", webhook_allow_private=False
    ).webhook_private_allowed
