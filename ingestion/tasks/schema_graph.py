"""A JSON Schema as the graph a validator walks: the objects in it, what a "#..."
reference within it points at, the subschemas applied from a node (to the same value,
or to the value's parts), and whether references loop back without descending. No
limits and no refusals here: ingestion.tasks.schema checks a client's schema on these."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
# Keywords whose value is a subschema, a list of them, or an object of them: where a
# validator goes from a schema (`subschemas`). "$defs" is not among them: a definition
# is visited only through a reference to it.
_ONE = ("not", "if", "then", "else", "items", "contains", "additionalProperties", "propertyNames")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_OBJECT = ("properties", "patternProperties", "dependentSchemas")


def dicts(node: object) -> Iterator[dict[str, Any]]:
    """Every object within `node`, `node` included: the candidates for subschemas."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def resolve(schema: dict[str, Any], ref: str, anchors: dict[str, object]) -> object | None:
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


def has_loop(nodes: list[dict[str, Any]], targets: dict[str, object]) -> bool:
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


def subschemas(node: object, targets: Mapping[str, object]) -> Iterator[object]:
    """The subschemas a validator applies from `node`, its references' targets included."""
    if not isinstance(node, dict):
        return
    for key in ("$ref", "$dynamicRef"):
        if isinstance(node.get(key), str) and node[key] in targets:
            yield targets[node[key]]
    for key in _ONE:
        if isinstance(node.get(key), dict | bool):
            yield node[key]
    for key in _LIST:
        if isinstance(node.get(key), list):
            yield from node[key]
    for key in _OBJECT:
        if isinstance(node.get(key), dict):
            yield from node[key].values()
