"""Which sampling parameters a request to a backend gets, and the second try's after a
loop (issue 9, C1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from service.backends.probe import normalize_url
from service.config import Settings


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters sent with every request. None: the server's default.
    `repetition_penalty` is vLLM's (1 = none, above 1 discourages any repeated token);
    `frequency_penalty` is OpenAI's (grows with how often a token appeared). `top_p`,
    `stop` and `seed` come only from a client's chat request."""

    temperature: float = 0.0
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def body(self) -> dict[str, Any]:
        values = {
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
            "frequency_penalty": self.frequency_penalty,
            "top_p": self.top_p,
            "stop": list(self.stop) or None,
            "seed": self.seed,
        }
        return {k: v for k, v in values.items() if v is not None}

    def asked(self, params: Mapping[str, Any]) -> Sampling:
        """This (the backend's), with what a chat request's `params` set over it."""
        return replace(
            self,
            temperature=params.get("temperature", self.temperature),
            top_p=params.get("top_p", self.top_p),
            stop=tuple(params.get("stop", self.stop)),
            seed=params.get("seed", self.seed),
        )


def sampling_for(settings: Settings, backend_url: str) -> Sampling:
    """The configured sampling of the backend at `backend_url` (greedy if none is set)."""
    url = normalize_url(backend_url)
    for cfg in settings.backends:
        if normalize_url(cfg.url) == url:
            return Sampling(cfg.temperature, cfg.repetition_penalty, cfg.frequency_penalty)
    return Sampling()


def after_loop(sampling: Sampling, settings: Settings) -> Sampling:
    """The same, with at least the loop-retry repetition penalty."""
    floor = settings.loop_retry_repetition_penalty
    return replace(sampling, repetition_penalty=max(sampling.repetition_penalty or 1.0, floor))
