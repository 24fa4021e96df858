"""JSON Schema for extract: a client's schema checked before any job runs on it, and a
validator for the model's output that never fetches anything."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry

SCHEMA_BYTES = 64 * 1024
SCHEMA_DEPTH = 64


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


def schema_validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A validator for a checked schema that never fetches anything: with an empty
    registry, a reference outside the schema is an error, not a download."""
    return Draft202012Validator(schema, registry=Registry())


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


def _dicts(node: object) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
# A quantified group that ends in a quantifier, as in "(a+)+": the classic shape of a
# pattern that backtracks for ages on a short string. Output is checked with Python's
# backtracking `re`, in a worker, so such a pattern could stall it. A heuristic: it
# misses overlapping alternatives like "(a|aa)+".
_NESTED_QUANTIFIER = re.compile(r"[*+?}]\)[*+?{]")


def _resolve(schema: dict[str, Any], ref: str, anchors: dict[str, object]) -> object | None:
    """What a "#..." reference points at in `schema`, or None."""
    fragment = unquote(ref[1:])
    if not fragment:
        return schema
    if not fragment.startswith("/"):
        return anchors.get(fragment)
    node: object = schema
    for token in fragment[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and _INDEX.fullmatch(token) and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _in_place(node: dict[str, Any], targets: dict[str, object]) -> Iterator[dict[str, Any]]:
    """Subschemas applied to the same value as `node`."""
    for key in ("$ref", "$dynamicRef"):
        target = targets.get(node[key]) if isinstance(node.get(key), str) else None
        if isinstance(target, dict):
            yield target
    for key in ("not", "if", "then", "else"):
        if isinstance(node.get(key), dict):
            yield node[key]
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            yield from (s for s in node[key] if isinstance(s, dict))
    if isinstance(node.get("dependentSchemas"), dict):
        yield from (s for s in node["dependentSchemas"].values() if isinstance(s, dict))


def _has_loop(nodes: list[dict[str, Any]], targets: dict[str, object]) -> bool:
    """Whether references loop back without descending into the value: validation
    would recurse until RecursionError, and a grammar could not be built from it."""
    state: dict[int, bool] = {}  # id -> finished
    for start in nodes:
        if id(start) in state:
            continue
        state[id(start)] = False
        path = [(start, _in_place(start, targets))]
        while path:
            node, children = path[-1]
            child = next(children, None)
            if child is None:
                state[id(node)] = True
                path.pop()
            elif id(child) not in state:
                state[id(child)] = False
                path.append((child, _in_place(child, targets)))
            elif not state[id(child)]:
                return True
    return False


def _check_keywords(schema: dict[str, Any]) -> None:
    nodes = list(_dicts(schema))
    anchors: dict[str, object] = {}
    refs: list[tuple[str, str]] = []
    for node in nodes:
        if node is not schema and isinstance(node.get("$id"), str):
            raise ValueError('a nested "$id" is not supported (it moves where references resolve)')
        for key in ("$anchor", "$dynamicAnchor"):
            if isinstance(node.get(key), str):
                anchors[node[key]] = node
        refs += [(k, node[k]) for k in ("$ref", "$dynamicRef") if isinstance(node.get(k), str)]
        patterns = node.get("patternProperties")
        for pattern in [node.get("pattern"), *(patterns if isinstance(patterns, dict) else ())]:
            if isinstance(pattern, str) and _NESTED_QUANTIFIER.search(pattern):
                raise ValueError(
                    f"pattern {short(pattern)!r} nests quantifiers, which can take "
                    "exponential time to match; rewrite it without a repeated group that "
                    "itself repeats"
                )
    targets: dict[str, object] = {}
    for key, ref in refs:
        if not ref.startswith("#"):
            raise ValueError(
                f'"{key}" {short(ref)!r} points outside the schema; only references within '
                'it, like "#/$defs/name", are allowed'
            )
        target = _resolve(schema, ref, anchors)
        if not isinstance(target, dict | bool):
            raise ValueError(f'"{key}" {short(ref)!r} does not point at a schema within it')
        targets[ref] = target
    if _has_loop(nodes, targets):
        raise ValueError("its references loop back to themselves without descending")


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
