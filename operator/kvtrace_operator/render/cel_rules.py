"""The CRDs' ``x-kubernetes-validations`` CEL rules, evaluated as the API server evaluates
them on create: at every schema node whose value is present (after defaulting), with ``self``
bound to that value, numbers typed by the schema, transition rules (``oldSelf``) skipped.
The evaluator is cel-expr-python (Google's cel-cpp runtime) with the strings extension that
Kubernetes also enables; a rule it cannot compile (a Kubernetes-only library such as
``quantity()``) is returned as unchecked, never silently passed.

Pure: never imports kopf, a Kubernetes client, or anything doing I/O.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_strings

from kvtrace_operator.render.errors import FieldError

_TRANSITION = re.compile(r"\boldSelf\b")
# How the API server names the object itself (a rule at the root of the schema).
ROOT = "<nil>"
# reason -> the API server's prefix for the message (FieldValueInvalid is the default).
_REASONS = {
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
}


class RuleUnsupported(Exception):
    """The evaluator cannot compile a rule (the API server can)."""


@functools.cache
def _environment() -> cel.Env:
    # oldSelf is declared so transition rules compile (they are skipped on create).
    return cel.NewEnv(
        variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN},
        extensions=[ext_strings.ExtStrings()],
    )


@functools.cache
def compiled(rule: str) -> cel.Expression:
    """The compiled rule (cached: every document of a run shares the CRDs' rules)."""
    try:
        return _environment().compile(rule)
    except RuntimeError as exc:  # what the binding raises for a rule it cannot compile
        raise RuleUnsupported(f"{rule!r}: {exc}") from exc


def is_transition_rule(rule: dict[str, Any]) -> bool:
    """A rule comparing with the stored object: not evaluated on create."""
    return bool(_TRANSITION.search(str(rule.get("rule", "")))) or bool(rule.get("optionalOldSelf"))


def cel_value(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with the schema's types: an integer where the schema says number is a
    double (so ``self.ratio <= 1.0`` compares as the API server's typed CEL does)."""
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {
            key: cel_value(item, properties.get(key, extra if isinstance(extra, dict) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list):
        items = schema.get("items")
        return [cel_value(item, items if isinstance(items, dict) else {}) for item in value]
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _invalid(value: Any) -> str:
    """The API server's prefix of a failed rule: the value when it is a scalar."""
    if isinstance(value, (dict, list)):
        return "Invalid value: "
    return f"Invalid value: {json.dumps(value)}: "


def _field(path: str, field_path: str) -> str:
    if not field_path:
        return path or ROOT
    joined = f"{path}{field_path}" if field_path[0] in ".[" else f"{path}.{field_path}"
    return joined.lstrip(".")


def _evaluated(expression: cel.Expression, value: Any) -> tuple[Any, str | None]:
    """(result, None), or (None, the evaluation error): the binding returns errors as values."""
    result = expression.eval(data={"self": value})
    if result.type() == cel.Type.ERROR:
        return None, str(result.value())
    return result.plain_value(), None


def _message(rule: dict[str, Any], value: Any) -> str:
    expression = rule.get("messageExpression")
    if expression:
        try:
            result, _ = _evaluated(compiled(expression), value)
        except RuleUnsupported:  # the API server also falls back to message
            result = None
        if isinstance(result, str) and result.strip():
            return result
    return str(rule.get("message") or f"failed rule: {rule['rule']}")


def check_rule(rule: dict[str, Any], value: Any, path: str) -> FieldError | None:
    """The error of one rule at ``path`` (None when it holds). Raises RuleUnsupported."""
    expression = compiled(str(rule["rule"]))
    where = _field(path, str(rule.get("fieldPath", "")))
    result, failure = _evaluated(expression, value)
    if failure is not None:
        return FieldError(where, f"{_invalid(value)}rule evaluation error: {failure}")
    if result is True:
        return None
    if result is not False:
        return FieldError(where, f"rule {rule['rule']!r} returned {result!r}, not a boolean")
    message = _message(rule, value)
    prefix = _REASONS.get(str(rule.get("reason", "")))
    if prefix:
        return FieldError(where, f"{prefix}: {message}")
    return FieldError(where, f"{_invalid(value)}{message}")


def _children(
    value: Any, schema: dict[str, Any], path: str
) -> Iterator[tuple[Any, dict[str, Any], str]]:
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra)
            if isinstance(sub, dict):
                yield item, sub, f"{path}.{key}" if path else str(key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield item, schema["items"], f"{path}[{index}]"


def evaluate(
    value: Any, schema: dict[str, Any], path: str = ""
) -> tuple[list[FieldError], list[str]]:
    """(errors, unchecked rules) of every rule at and below ``value`` (already defaulted)."""
    errors: list[FieldError] = []
    unchecked: list[str] = []
    rules = [
        rule for rule in schema.get("x-kubernetes-validations", []) if not is_transition_rule(rule)
    ]
    typed = cel_value(value, schema) if rules else value
    for rule in rules:
        try:
            error = check_rule(rule, typed, path)
        except RuleUnsupported as exc:
            unchecked.append(f"{path or ROOT}: {exc}")
            continue
        if error is not None:
            errors.append(error)
    for item, sub, where in _children(value, schema, path):
        more, skipped = evaluate(item, sub, where)
        errors += more
        unchecked += skipped
    return errors, unchecked
