"""JSON Schema for extract: a client's schema checked before any job runs on it, and a
validator for the model's output that never fetches anything. The walk over the
schema's subschemas and references is ingestion.tasks.schema_graph's; the limits it is
held to, and what is refused, are here."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ingestion.linear_regex import LinearPattern
from ingestion.tasks.schema_graph import dicts, has_loop, resolve, subschemas

SCHEMA_BYTES = 64 * 1024
SCHEMA_DEPTH = 64
# Subschemas the schema may expand to with every "$ref" replaced by what it points at,
# as a validator visits them. Written out without references, a schema within
# SCHEMA_BYTES has at most this many ("{}," is 3 bytes), so the limit refuses only what
# sharing "$defs" multiplies: 40 levels of anyOf over two references to the next level
# are 2.9 KB and expand to 2**40.
SCHEMA_EXPANSION = SCHEMA_BYTES // 3


def json_type(value: object) -> str:
    """`value`'s type as a JSON client would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain_json(value: object) -> Any:
    """A detached copy of `value` through JSON, refused if too deep or too large."""
    # Bounded before json.dumps, which recurses: a deep or self-referencing value would
    # raise RecursionError or spin. Every node costs at least one byte of JSON, so more
    # nodes than SCHEMA_BYTES is over the size limit anyway.
    stack: list[tuple[object, int]] = [(value, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > SCHEMA_DEPTH:
            raise ValueError(f"is nested more than {SCHEMA_DEPTH} levels deep")
        if nodes > SCHEMA_BYTES:
            raise ValueError(f"is larger than {SCHEMA_BYTES // 1024} KiB as JSON")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        data = encoded.encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError (a lone surrogate) included
        raise ValueError(
            "must be plain JSON: objects, arrays, strings, finite numbers, booleans, null"
        ) from None
    if len(data) > SCHEMA_BYTES:
        raise ValueError(f"is {len(data):,} bytes as JSON; the limit is {SCHEMA_BYTES // 1024} KiB")
    return json.loads(encoded)


# jsonschema checks these by walking every sibling subschema again for each value, with
# Python's backtracking `re` for patternProperties and a list scan per property (time
# quadratic in the properties); "additionalProperties": false and "items" say the same
# for what an extraction needs.
_UNSUPPORTED = ("unevaluatedProperties", "unevaluatedItems")


def expansion(schema: dict[str, Any], targets: Mapping[str, object]) -> int:
    """How many subschemas a validator visits from `schema` at most once per value, with
    references followed: the size of the schema written out without them, capped just
    over SCHEMA_EXPANSION. Linear: each subschema is sized once and reused wherever it
    is referenced. A reference back to a subschema being sized (recursion, which must
    descend into the value, `has_loop`) counts as one subschema: the schema is sized
    for one level of the recursion, and deeper output is bounded by the step budget of
    output validation (`schema_validation`)."""
    cap = SCHEMA_EXPANSION + 1
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    # Each frame: a subschema, its children still to size, the total so far.
    path: list[tuple[object, Iterator[object], list[int]]] = [
        (schema, subschemas(schema, targets), [1])
    ]
    open_.add(id(schema))
    while path:
        node, children, total = path[-1]
        child = next(children, None)
        if child is None:
            path.pop()
            open_.discard(id(node))
            sizes[id(node)] = min(total[0], cap)
            if path:
                path[-1][2][0] += sizes[id(node)]
        elif id(child) in sizes:
            total[0] += sizes[id(child)]
        elif id(child) in open_:
            total[0] += 1
        else:
            open_.add(id(child))
            path.append((child, subschemas(child, targets), [1]))
    return sizes[id(schema)]


def _check_subschemas(schema: dict[str, Any], targets: Mapping[str, object]) -> None:
    """Keywords refused wherever a subschema, a definition or a reference's target uses
    them (not in the values of "enum", "const" or "default", which are data)."""
    stack: list[object] = [schema]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        for key in _UNSUPPORTED:
            if key in node:
                raise ValueError(
                    f'"{key}" is not supported: checking it costs time quadratic in the '
                    'answer; use "additionalProperties" or "items" instead'
                )
        patterns = node.get("patternProperties")
        for pattern in [node.get("pattern"), *(patterns if isinstance(patterns, dict) else ())]:
            if isinstance(pattern, str):
                check_pattern(pattern)
        stack.extend(subschemas(node, targets))
        if isinstance(node.get("$defs"), dict):
            stack.extend(node["$defs"].values())


def check_pattern(pattern: str) -> LinearPattern[str]:
    """`pattern` compiled by RE2, the engine output is checked with, or ValueError."""
    try:
        return LinearPattern(pattern)
    except ValueError as exc:
        raise ValueError(
            f"pattern {short(pattern)!r} cannot be used: {exc}. Patterns are matched with "
            "RE2, in time linear in the text: no backreferences, no lookahead or lookbehind"
        ) from None


def _check_keywords(schema: dict[str, Any]) -> None:
    nodes = list(dicts(schema))
    anchors: dict[str, object] = {}
    refs: list[tuple[str, str]] = []
    for node in nodes:
        if node is not schema and isinstance(node.get("$id"), str):
            raise ValueError('a nested "$id" is not supported (it moves where references resolve)')
        for key in ("$anchor", "$dynamicAnchor"):
            if isinstance(node.get(key), str):
                anchors[node[key]] = node
        refs += [(k, node[k]) for k in ("$ref", "$dynamicRef") if isinstance(node.get(k), str)]
    targets: dict[str, object] = {}
    for key, ref in refs:
        if not ref.startswith("#"):
            raise ValueError(
                f'"{key}" {short(ref)!r} points outside the schema; only references within '
                'it, like "#/$defs/name", are allowed'
            )
        target = resolve(schema, ref, anchors)
        if not isinstance(target, dict | bool):
            raise ValueError(f'"{key}" {short(ref)!r} does not point at a schema within it')
        targets[ref] = target
    if has_loop(nodes, targets):
        raise ValueError("its references loop back to themselves without descending")
    if (size := expansion(schema, targets)) > SCHEMA_EXPANSION:
        raise ValueError(
            f"expands to {size:,} subschemas or more once each reference is replaced by what "
            f"it points at; the limit is {SCHEMA_EXPANSION:,} (shared definitions under "
            "nested anyOf/oneOf/allOf multiply: each level doubles a two-way choice)"
        )
    _check_subschemas(schema, targets)


def check_schema(value: object) -> dict[str, Any]:
    """A client's JSON Schema for extract, checked: a detached JSON-ready copy, or
    ValueError with the reason."""
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a JSON Schema object, not {json_type(value)}")
    schema = _plain_json(value)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at {short(where, 120)!r}" if where else ""
        raise ValueError(
            f"is not a valid JSON Schema (draft 2020-12){at}: {short(exc.message, 300)}"
        ) from None
    if schema.get("type") != "object":
        raise ValueError(
            'must have "type": "object" at the top, so the objects extracted from the parts '
            "of a long document can be merged"
        )
    _check_keywords(schema)
    return dict(schema)
