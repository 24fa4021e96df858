"""A model's answer checked against a client's schema in bounded time.

Submission bounds what a schema expands to (`task_schema.SCHEMA_EXPANSION`), but the
work of a check is that times the size of the answer, and recursion through the
answer is sized for one level only; this runs under a KV lease, so it must end
whatever the two hold. Three things make the check bounded by construction:

- a step budget: every keyword jsonschema applies costs a step, plus one per entry of
  its value (names, branches, members) or per item or KiB of the value it checks, and
  the check stops at VALIDATION_STEPS with `ValidationBudgetExceeded`;
- "pattern" and "patternProperties" match with RE2 (linear in the text), not with
  Python's backtracking `re`;
- "uniqueItems" hashes a canonical form of each item, where jsonschema compares
  unsortable items (objects) pairwise.

"format" is an annotation here (no format checker is passed), so it runs no code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from referencing import Registry

from ingestion.linear_regex import LinearPattern
from ingestion.tasks.schema import short

# types-jsonschema leaves `extend` unannotated.
_extend: Any = validators.extend

# Measured on a loaded core: a valid answer of 5,000 records of four fields (about
# 60,000 tokens) takes 130,000 steps, 3.8 s; the worst answers (failing anyOf branches
# under recursion, an error built per step) run 15,000 steps a second, so the budget
# caps a check at about 20 s there (less on an idle core), with room for twice that
# valid answer.
VALIDATION_STEPS = 300_000
# RE2 scans hundreds of MB/s, a keyword step costs microseconds: a step per KiB of text.
_TEXT_PER_STEP = 1024

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError] | None]


class ValidationBudgetExceeded(Exception):
    """The check of an answer would take more than VALIDATION_STEPS steps."""


def _item_key(value: object) -> str:
    """A string equal for two values exactly when jsonschema holds them equal: 1 and 1.0
    are, True and 1 are not, key order does not matter. Each kind has its own prefix and
    strings are JSON-quoted, so no two kinds can meet."""
    if value is None or isinstance(value, bool):
        return repr(value)[0]  # N, T, F
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | float):
        return f"{'i' if isinstance(value, int) else 'f'}{value!r}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(_item_key(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = sorted(f"{json.dumps(k)}:{_item_key(v)}" for k, v in value.items())
        return "{" + ",".join(pairs) + "}"
    return f"?{value!r}"


class _Check:
    """One check: its budget and the patterns it has compiled."""

    def __init__(self, steps: int) -> None:
        self.left = steps
        self._patterns: dict[str, LinearPattern[str]] = {}

    def charge(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise ValidationBudgetExceeded

    def found(self, pattern: str, text: str) -> bool:
        compiled = self._patterns.get(pattern)
        if compiled is None:
            # A schema that passed submission compiles; one that did not is an error
            # of the schema, reported like any other (ValueError -> OutputError).
            compiled = self._patterns[pattern] = LinearPattern(pattern)
        self.charge(len(text) // _TEXT_PER_STEP)
        return compiled.matches(text)

    # Keywords in jsonschema's shape: (validator, keyword value, instance, schema).

    def pattern(
        self, v: Any, pattern: str, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if v.is_type(instance, "string") and not self.found(pattern, instance):
            yield ValidationError(f"{short(repr(instance))} does not match {pattern!r}")

    def pattern_properties(
        self, v: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if not v.is_type(instance, "object"):
            return
        for pattern, subschema in patterns.items():
            for key, value in instance.items():
                if self.found(pattern, key):
                    yield from v.descend(value, subschema, path=key, schema_path=pattern)

    def additional_properties(
        self, v: Any, extra: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if not v.is_type(instance, "object"):
            return
        named = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = [
            key
            for key in instance
            if key not in named and not any(self.found(p, key) for p in patterns)
        ]
        if v.is_type(extra, "object"):
            for key in extras:
                yield from v.descend(instance[key], extra, path=key)
        elif extra is False and extras:
            shown = ", ".join(repr(key) for key in sorted(extras)[:20])
            yield ValidationError(f"Additional properties are not allowed ({shown} unexpected)")

    def unique_items(
        self, v: Any, unique: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if not unique or not v.is_type(instance, "array"):
            return
        self.charge(len(instance))
        seen: set[str] = set()
        for item in instance:
            key = _item_key(item)
            if key in seen:
                yield ValidationError(f"{short(repr(item))} is repeated: items must be unique")
                return
            seen.add(key)

    def unsupported(
        self, v: Any, value: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        # Refused at submission (task_schema._UNSUPPORTED); a schema stored before that
        # is reported, not checked with jsonschema's quadratic code.
        yield ValidationError("the schema uses a keyword that is not supported")

    def counted(self, keyword: Keyword, cost: Callable[[Any], int]) -> Keyword:
        def apply(v: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
            self.charge(cost(value))
            return keyword(v, value, instance, schema)

        return apply


def _cost(value: object) -> int:
    # A keyword's own work grows with its value: "enum" compares with each member,
    # "required" and "properties" look up each name, "anyOf" tries each branch.
    return 1 + len(value) if isinstance(value, list | dict) else 1


def _validator(schema: Mapping[str, Any], check: _Check) -> Validator:
    own: dict[str, Keyword] = {
        "pattern": check.pattern,
        "patternProperties": check.pattern_properties,
        "additionalProperties": check.additional_properties,
        "uniqueItems": check.unique_items,
        "unevaluatedProperties": check.unsupported,
        "unevaluatedItems": check.unsupported,
    }
    keywords = {**Draft202012Validator.VALIDATORS, **own}
    counted = {name: check.counted(fn, _cost) for name, fn in keywords.items()}
    cls = _extend(Draft202012Validator, validators=counted)
    # An empty registry: a reference outside the schema is an error, not a download.
    validator: Validator = cls(schema, registry=Registry())
    return validator


def first_error(
    schema: Mapping[str, Any], value: Any, steps: int = VALIDATION_STEPS
) -> ValidationError | None:
    """The most relevant way `value` fails `schema`, or None if it matches. Raises
    ValidationBudgetExceeded past `steps` steps, ValueError for a pattern RE2 refuses."""
    error: ValidationError | None = best_match(_validator(schema, _Check(steps)).iter_errors(value))
    return error
