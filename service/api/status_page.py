"""The status page's HTML: `service.overview` rendered through one Jinja2 template.

Autoescaping is on for everything: filenames, failure reasons and backend errors are
other people's text. The page has no script, so its Content-Security-Policy allows
none; the styles are inline in the template.
"""

from __future__ import annotations

from datetime import datetime

from jinja2 import Environment, PackageLoader, StrictUndefined

from service.overview import Overview

_env = Environment(
    loader=PackageLoader("service.api", "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a misspelt field fails the render, not blanks a cell
    trim_blocks=True,
    lstrip_blocks=True,
)

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def size(n: int | None) -> str:
    """Bytes as people read them (binary units, as vLLM's logs give KV pools)."""
    if n is None:
        return "unknown"
    value, sign = float(abs(n)), "-" if n < 0 else ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _age(then: datetime, now: datetime) -> str:
    return duration(max((now - then).total_seconds(), 0.0)) + " ago"


_env.filters["size"] = size
_env.filters["duration"] = duration
_env.filters["percent"] = lambda share: "-" if share is None else f"{share * 100:.0f}%"


def render_status(view: Overview, *, refresh_s: int, broker: dict[str, int] | None) -> str:
    return _env.get_template("status.html").render(
        view=view,
        refresh_s=refresh_s,
        broker=broker,
        age=lambda then: _age(then, view.now),
    )


def render_login(*, message: str | None) -> str:
    return _env.get_template("login.html").render(message=message)
