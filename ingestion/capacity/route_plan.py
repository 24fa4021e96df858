"""What the router decides, as plain values that round-trip through JSON.

A `Plan` is stored on its job (`jobs.plan`) and shown by the API and by
`longdoc route`, so everything a reader needs to trust it is in it: the counts
it used, each model request with the KV it reserves, why this choice, and the
alternatives it rejected with their reasons. A `Step` is one request of a
map-reduce plan, stored on the child job that runs it (`jobs.step`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

__all__ = [
    "PLAN_VERSION",
    "Chunk",
    "DocTokens",
    "MapStep",
    "Plan",
    "PlanKind",
    "ReduceGroup",
    "ReduceLevel",
    "ReduceStep",
    "Rejection",
    "Request",
    "RouteRefused",
    "Step",
    "step_from_json",
]

PLAN_VERSION = 1
PlanKind = Literal["single", "map_reduce"]


class RouteRefused(Exception):
    """The job cannot run on this deployment; `reason` says why, for people.

    Not a ValueError on purpose: the request was well formed (that would be a
    422); it is the job that fails, with `code` ``no_backend``, ``unsplittable``,
    ``reduce_too_large``, ``no_tokenizer`` (exact chunk counts need the file) or
    ``too_long`` (a chat request, which is never split, fits no backend).
    """

    def __init__(self, code: str, reason: str, rejected: tuple[Rejection, ...] = ()) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.rejected = rejected


@dataclass(frozen=True)
class Request:
    """One call to one model, and the KV vLLM reserves for it on any of `replicas`."""

    role: str
    model: str
    input_tokens: int
    output_tokens: int
    kv_bytes: int
    kv_blocks: int
    replicas: tuple[str, ...]

    @property
    def total_tokens(self) -> int:
        """L: what vLLM checks against max_model_len and reserves KV for."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Chunk:
    """A run of whole pages, or one part of a page split at paragraph/line breaks.

    `char_*` index the document text as `ingestion.documents.textfile.write_pages` writes it
    and `byte_*` that file, so the worker reads exactly the counted text.
    `part`/`parts` are 0 for whole pages, else 1..n for the pieces of one page.
    """

    index: int
    first_page: int
    last_page: int
    char_start: int
    char_end: int
    byte_start: int
    byte_end: int
    tokens: int
    exact: bool
    part: int = 0
    parts: int = 0


@dataclass(frozen=True)
class MapStep:
    chunk: Chunk
    request: Request

    stage: ClassVar[Literal["map"]] = "map"

    @property
    def key(self) -> tuple[int, int]:
        """(level, index): level 0 holds the map requests, in chunk order."""
        return 0, self.chunk.index

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, **asdict(self)}


@dataclass(frozen=True)
class ReduceGroup:
    """Inputs `first`..`last` (chunk indexes at level 1, else the previous
    level's group indexes), combined by one request."""

    first: int
    last: int
    request: Request


@dataclass(frozen=True)
class ReduceLevel:
    level: int
    groups: tuple[ReduceGroup, ...]


@dataclass(frozen=True)
class ReduceStep:
    """Group `group` of reduce level `level` (from 1): it combines the answers of
    inputs `first`..`last` of the level below (`ReduceGroup`)."""

    level: int
    group: int
    first: int
    last: int
    request: Request

    stage: ClassVar[Literal["reduce"]] = "reduce"

    @property
    def key(self) -> tuple[int, int]:
        return self.level, self.group

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, **asdict(self)}


Step = MapStep | ReduceStep


def step_from_json(data: Mapping[str, Any]) -> Step:
    """Inverse of `MapStep.to_json` and `ReduceStep.to_json`; ValueError on anything
    malformed."""
    try:
        if data["stage"] == "map":
            return MapStep(_chunk(data["chunk"]), _request(data["request"]))
        if data["stage"] == "reduce":
            level, group, first, last = (_int(data[k]) for k in ("level", "group", "first", "last"))
            return ReduceStep(level, group, first, last, _request(data["request"]))
        raise ValueError(f"bad step stage {data['stage']!r}")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed step: {exc!r}") from None


@dataclass(frozen=True)
class Rejection:
    role: str
    model: str
    replicas: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class DocTokens:
    role: str
    count: int
    exact: bool
    model: str | None = None  # whose tokenizer counted (TokenCount.model)


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    max_output_tokens: int
    document: tuple[DocTokens, ...]
    prompt_tokens: tuple[tuple[str, int], ...]
    request: Request | None = None
    map: tuple[MapStep, ...] = ()
    reduce: tuple[ReduceLevel, ...] = ()
    reasons: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()

    def requests(self) -> Iterator[Request]:
        """Every model call, in the order they can run."""
        if self.request is not None:
            yield self.request
        for step in self.map:
            yield step.request
        for level in self.reduce:
            for group in level.groups:
                yield group.request

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what the `jobs.plan` column holds)."""
        return {"version": PLAN_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """Inverse of `to_json`; ValueError on anything malformed."""
        try:
            if data["version"] != PLAN_VERSION:
                raise ValueError(f"unsupported plan version {data['version']!r}")
            if data["kind"] not in ("single", "map_reduce"):
                raise ValueError(f"bad plan kind {data['kind']!r}")
            req = data["request"]
            return cls(
                kind=data["kind"],
                max_output_tokens=_int(data["max_output_tokens"]),
                document=tuple(
                    DocTokens(
                        str(d["role"]), _int(d["count"]), _bool(d["exact"]), _opt_str(d, "model")
                    )
                    for d in data["document"]
                ),
                prompt_tokens=tuple((str(r), _int(n)) for r, n in data["prompt_tokens"]),
                request=None if req is None else _request(req),
                map=tuple(MapStep(_chunk(s["chunk"]), _request(s["request"])) for s in data["map"]),
                reduce=tuple(
                    ReduceLevel(
                        _int(lv["level"]),
                        tuple(
                            ReduceGroup(_int(g["first"]), _int(g["last"]), _request(g["request"]))
                            for g in lv["groups"]
                        ),
                    )
                    for lv in data["reduce"]
                ),
                reasons=tuple(str(r) for r in data["reasons"]),
                rejected=tuple(
                    Rejection(
                        str(r["role"]), str(r["model"]), _strs(r["replicas"]), str(r["reason"])
                    )
                    for r in data["rejected"]
                ),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed plan: {exc!r}") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"malformed plan: {value!r} is not an integer")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    # Plans stored before the key existed lack it.
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"malformed plan: {key} {value!r} is not a string")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"malformed plan: {value!r} is not a boolean")
    return value


def _strs(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _request(d: Mapping[str, Any]) -> Request:
    return Request(
        role=str(d["role"]),
        model=str(d["model"]),
        input_tokens=_int(d["input_tokens"]),
        output_tokens=_int(d["output_tokens"]),
        kv_bytes=_int(d["kv_bytes"]),
        kv_blocks=_int(d["kv_blocks"]),
        replicas=_strs(d["replicas"]),
    )


def _chunk(d: Mapping[str, Any]) -> Chunk:
    fields = ("index", "first_page", "last_page", "char_start", "char_end", "byte_start")
    ints = {k: _int(d[k]) for k in (*fields, "byte_end", "tokens", "part", "parts")}
    return Chunk(**ints, exact=_bool(d["exact"]))
