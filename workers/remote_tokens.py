"""Token counts from a vLLM server's `POST /tokenize`, for roles without a local file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import httpx

from ingestion.types import TokenCount
from service.config import Settings

# One /tokenize call returns every token id; past this many characters the text is
# sent in pieces cut after a newline, and the sum is no longer guaranteed exact.
_MAX_CHARS_PER_CALL = 4_000_000


class RemoteTokenizeError(Exception):
    pass


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
    return TokenCount(
        count=total,
        exact=calls <= 1,
        tokenizer=f"vLLM /tokenize of {model}",  # no URL: tenants read it
        method="server",
    )


class ServerCounter:
    """A `TokenCounter` that asks a vLLM server's `POST /tokenize`: exact chunk counts
    for a role whose tokenizer file Longdoc does not have. One call per text, so it is
    for chunk-sized texts (the chunker's), not for whole documents."""

    def __init__(self, base_url: str, model: str, timeout_s: float) -> None:
        self.base = base_url.rstrip("/")
        self.model = model
        self.name = f"vLLM /tokenize of {model}"
        self._client = httpx.Client(timeout=timeout_s)

    def count(self, text: str) -> int:
        if not text:
            return 0
        try:
            resp = self._client.post(
                f"{self.base}/tokenize",
                json={"model": self.model, "prompt": text, "add_special_tokens": False},
            )
            return int(resp.raise_for_status().json()["count"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise RemoteTokenizeError(f"{self.base}: {exc}") from exc

    def safe_cut(self, text: str, limit: int) -> int:
        # Nothing is known about the server's merges: no cut is proven safe, so
        # count_stream counts each text whole (exact).
        return 0

    def close(self) -> None:
        self._client.close()
