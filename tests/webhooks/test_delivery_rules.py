"""The delivery's pure rules: Retry-After in both forms, the backoff and its cap, and
the request aimed at the pinned address with the host's name kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from service.config import Settings
from service.webhooks.delivery import _request_target, backoff_s, retry_after
from service.webhooks.destinations import Destination

NOW = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert retry_after("7", NOW) == 7.0
    assert retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90.0
    assert retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0.0
    assert retry_after("soon", NOW) is None
    assert retry_after(None, NOW) is None
    assert retry_after("-5", NOW) is None


def test_backoff_doubles_yields_to_retry_after_and_is_capped() -> None:
    s = Settings(webhook_backoff_s=5, webhook_max_backoff_s=60)
    assert [backoff_s(s, n, None) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]
    assert backoff_s(s, 1, 30) == 30  # the receiver asked for longer
    assert backoff_s(s, 3, 1) == 20  # never sooner than the backoff
    assert backoff_s(s, 1, 10_000) == 60


def test_the_request_goes_to_the_pinned_address_under_the_hosts_name() -> None:
    host = "hooks.example"
    v4 = Destination(f"https://{host}/x?a=1", "https", host, 443, "93.184.216.34", "/x?a=1")
    assert _request_target(v4) == ("https://93.184.216.34:443/x?a=1", "hooks.example")
    v6 = Destination(f"http://{host}:8080/", "http", host, 8080, "2001:db8::1", "/")
    assert _request_target(v6) == ("http://[2001:db8::1]:8080/", "hooks.example:8080")
