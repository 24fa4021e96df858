"""Token counts from a vLLM server's `POST /tokenize`, for roles without a local file."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import httpx

from ingestion.types import TokenCount
from service.config import Settings

# One /tokenize call returns every token id; past this many characters the text is
# sent in pieces cut after a newline, and the sum is no longer guaranteed exact.
_MAX_CHARS_PER_CALL = 4_000_000


class RemoteTokenizeError(Exception):
    """`public`: what went wrong, without the server's address (for job reasons)."""

    def __init__(self, message: str, public: str = "") -> None:
        super().__init__(message)
        self.public = public or message


def _pieces(text: Iterable[str], limit: int) -> Iterator[str]:
    buf = ""
    for part in text:
        buf += part
        while len(buf) > limit:
            cut = buf.rfind("\n", 0, limit) + 1 or limit
            yield buf[:cut]
            buf = buf[cut:]
    if buf:
        yield buf


def count_with_server(base_url: str, text: Iterable[str], settings: Settings) -> TokenCount:
    base = base_url.rstrip("/")
    total, calls = 0, 0
    try:
        with httpx.Client(timeout=settings.tokenize_timeout_s) as client:
            models = client.get(f"{base}/v1/models").raise_for_status().json()
            model = models["data"][0]["id"]
            for piece in _pieces(text, _MAX_CHARS_PER_CALL):
                resp = client.post(
                    f"{base}/tokenize",
                    json={"model": model, "prompt": piece, "add_special_tokens": False},
                )
                total += int(resp.raise_for_status().json()["count"])
                calls += 1
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise RemoteTokenizeError(f"{base}: {exc}") from exc
    # No URL in the label: tenants see it, and backends' addresses are the operator's.
    return TokenCount(
        count=total,
        exact=calls <= 1,
        tokenizer=f"vLLM /tokenize of {model}",
        method="server",
        model=model,
    )


class ServerCounter:
    """A `TokenCounter` that asks a vLLM server's `POST /tokenize`: exact chunk counts
    for a role whose tokenizer file Longdoc does not have. One call per text, so it is
    for chunk-sized texts (the chunker's), not for whole documents. A connection error
    or a 5xx is tried again, `attempts` times in all with doubling `backoff_s` between;
    a 4xx is not (the same text fails the same way)."""

    method = "server"  # what a count of it is, as `TokenCount.method` names it

    def __init__(
        self, base_url: str, model: str, timeout_s: float, attempts: int = 1, backoff_s: float = 0
    ) -> None:
        self.base = base_url.rstrip("/")
        self.model = model
        self.name = f"vLLM /tokenize of {model}"
        self.attempts, self.backoff_s = max(1, attempts), backoff_s
        self._client = httpx.Client(timeout=timeout_s)

    def count(self, text: str) -> int:
        if not text:
            return 0
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self._client.post(
                    f"{self.base}/tokenize",
                    json={"model": self.model, "prompt": text, "add_special_tokens": False},
                )
                return int(resp.raise_for_status().json()["count"])
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 0
                if 0 < status < 500 or attempt == self.attempts:
                    why = f"HTTP {status}" if status else type(exc).__name__
                    raise self._error(exc, why, attempt) from exc
            except (KeyError, TypeError, ValueError) as exc:
                raise self._error(exc, "an unreadable answer", attempt) from exc
            time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("not reached: the last attempt returns or raises")

    def _error(self, exc: Exception, why: str, attempt: int) -> RemoteTokenizeError:
        public = f"{self.model}'s /tokenize failed ({why}) after {attempt} attempt(s)"
        return RemoteTokenizeError(f"{self.base}: {exc}", public)

    def safe_cut(self, text: str, limit: int) -> int:
        # Nothing is known about the server's merges: no cut is proven safe, so
        # count_stream counts each text whole (exact).
        return 0

    def close(self) -> None:
        self._client.close()
