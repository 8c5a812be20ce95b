"""Strict validation of a custom resource against its CRD's own openAPIV3Schema, as the API
server does it with strict field validation: unknown fields (what pruning would drop) are
errors naming their path, schema defaults are applied, the structural schema is checked
(jsonschema), list-type map/set keys are unique, and the ``x-kubernetes-validations`` CEL
rules are evaluated (``render.cel_rules``). Every error of a document is returned, not the
first; messages follow the API server's wording, so a user sees the same words either way.

Pure: the schema comes in as a plain dict (``kvtrace_operator.crds`` reads the CRD files);
never imports kopf, a Kubernetes client, or anything doing I/O.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from kvtrace_operator.render import cel_rules
from kvtrace_operator.render.errors import FieldError

# ObjectMeta (Kubernetes' own type): the fields a manifest may carry under metadata. The CRD
# schema says only `metadata: {type: object}`; the API server checks it as ObjectMeta.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRINGS,
        "annotations": _STRINGS,
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": "string"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "managedFields": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "selfLink": {"type": "string"},
    },
}
# With a status subresource the API server drops status on create: never checked here.
STATUS = "status"
# ObjectMeta's name rule for custom resources (a DNS subdomain), in the API server's words.
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{_SUBDOMAIN}')"
)
BLOCKED_NOTE = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


@dataclass
class Report:
    """What strict validation found: ``errors`` (the API server would reject the document)
    and ``unchecked`` (CEL rules this evaluator cannot compile, left to the API server);
    ``resource``, the document as the API server would store it (schema defaults applied,
    a null with a default replaced by it): what ``kvtrace render`` renders."""

    errors: list[FieldError] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)


def document_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's openAPIV3Schema with ObjectMeta under metadata."""
    properties = dict(schema.get("properties", {}))
    properties["metadata"] = OBJECT_META
    return {**schema, "properties": properties}


def metadata_errors(resource: dict[str, Any]) -> list[FieldError]:
    """The name the API server requires of a custom resource (blocking when missing: the
    rules read it)."""
    metadata = resource.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        return [
            FieldError(
                "metadata.name", "Required value: name or generateName is required", blocking=True
            )
        ]
    if len(name) > 253:
        return [
            FieldError(
                "metadata.name",
                f"Invalid value: {json.dumps(name)}: must be no more than 253 characters",
            )
        ]
    if not re.fullmatch(_SUBDOMAIN, name):
        return [
            FieldError("metadata.name", f"Invalid value: {json.dumps(name)}: {SUBDOMAIN_MESSAGE}")
        ]
    return []


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        close = [name for name in known if name.lower() == key.lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[FieldError]:
    """Fields that pruning would drop, i.e. strict field validation's ``unknown field``."""
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for key, item in value.items():
            where = _join(path, str(key))
            if key in properties:
                yield from unknown_fields(item, properties[key], where)
            elif isinstance(extra, dict):
                yield from unknown_fields(item, extra, where)
            elif not preserve:
                yield FieldError(
                    where, f'unknown field "{where}"' + _did_you_mean(str(key), sorted(properties))
                )
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], f"{path}[{index}]")


def with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """A copy of ``value`` with the schema's defaults applied, as the API server defaults:
    a missing (or null, unless nullable) property with a default gets it, then defaulting
    continues inside, so ``default: {}`` objects fill up."""
    if isinstance(value, dict):
        result = dict(value)
        for key, sub in schema.get("properties", {}).items():
            missing = key not in result or (result[key] is None and not sub.get("nullable"))
            if missing and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = with_defaults(result[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(result) - set(schema.get("properties", {})):
                result[key] = with_defaults(result[key], extra)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(item, schema["items"]) for item in value]
    return value


def path_of(parts: deque[str | int] | list[str | int]) -> str:
    """``spec.exporters.otlp[0].name`` from a jsonschema path."""
    text = ""
    for part in parts:
        text = f"{text}[{part}]" if isinstance(part, int) else _join(text, str(part))
    return text


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _kind(value: Any) -> str:
    """A value's JSON type, quoted, as the API server names it in a type error."""
    for kind, name in (
        (bool, "boolean"),
        (dict, "object"),
        (list, "array"),
        (str, "string"),
        (int, "integer"),
        (float, "number"),
    ):
        if isinstance(value, kind):
            return f'"{name}"'
    return "null"


def _message(error: jsonschema.ValidationError, where: str) -> tuple[str, str]:
    """(field, message) in the API server's words for one jsonschema error."""
    kind, expected, value = error.validator, error.validator_value, error.instance
    invalid = f"Invalid value: {_shown(value)}: {where} in body"
    if kind == "required":
        missing = next((name for name in expected if name not in value), expected[0])
        return _join(where, missing), "Required value"
    if kind == "enum":
        return where, (
            f"Unsupported value: {_shown(value)}: supported values: "
            + ", ".join(json.dumps(item) for item in expected)
        )
    words = {
        "type": f"Invalid value: {_kind(value)}: {where} in body must be of type {expected}: {_kind(value)}",
        "anyOf": f"Invalid value: {_kind(value)}: {where} in body must be of type integer or string: "
        f"{_kind(value)}",
        "minimum": f"{invalid} should be greater than or equal to {expected}",
        "maximum": f"{invalid} should be less than or equal to {expected}",
        "pattern": f"{invalid} should match '{expected}'",
        "minLength": f"{invalid} should be at least {expected} chars long",
        "maxLength": f"Too long: may not be more than {expected} bytes",
        "minItems": f"Invalid value: {len(value) if isinstance(value, list) else value}: "
        f"{where} in body should have at least {expected} items",
        "maxItems": f"Too many: {len(value) if isinstance(value, list) else value}: "
        f"must have at most {expected} items",
        "maxProperties": f"Too many: {len(value) if isinstance(value, dict) else value}: "
        f"must have at most {expected} items",
    }
    return where, words.get(str(kind), f"Invalid value: {_shown(value)}: {error.message}")


def schema_errors(value: Any, schema: dict[str, Any]) -> list[FieldError]:
    """The structural schema's errors (types, enums, bounds, patterns, required), each once."""
    validator = jsonschema.Draft4Validator(schema)
    found: list[FieldError] = []
    for error in sorted(
        validator.iter_errors(value), key=lambda e: (path_of(e.absolute_path), str(e.validator))
    ):
        where, message = _message(error, path_of(error.absolute_path))
        # A wrong type or an unsupported enum value leaves the API server's rules unchecked.
        found.append(
            FieldError(where, message, blocking=error.validator in ("type", "anyOf", "enum"))
        )
    return found


def _list_key(item: Any, keys: list[str]) -> str:
    return json.dumps(
        {key: item.get(key) for key in keys} if isinstance(item, dict) else item,
        sort_keys=True,
        separators=(",", ":"),
    )


def list_errors(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[FieldError]:
    """``x-kubernetes-list-type: map|set``: no two items with the same key(s)."""
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                yield from list_errors(item, sub, _join(path, str(key)))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: set[str] = set()
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if list_type in ("map", "set"):
                identity = _list_key(item, keys) if list_type == "map" else _list_key(item, [])
                if identity in seen:
                    yield FieldError(where, f"Duplicate value: {identity}")
                seen.add(identity)
            yield from list_errors(item, schema["items"], where)


def check(resource: dict[str, Any], schema: dict[str, Any]) -> Report:
    """Every error the API server's strict validation would report for ``resource`` against
    the CRD version's ``schema`` (its openAPIV3Schema), plus the rules left unchecked."""
    full = document_schema(schema)
    resource = {key: value for key, value in resource.items() if key != STATUS}
    report = Report(errors=list(unknown_fields(resource, full)))
    defaulted = with_defaults(resource, full)
    report.resource = defaulted
    found = metadata_errors(resource) + schema_errors(defaulted, full)
    report.errors += found + list(list_errors(defaulted, full))
    if any(error.blocking for error in found):
        report.errors.append(FieldError(cel_rules.ROOT, f"Invalid value: null: {BLOCKED_NOTE}"))
        return report
    errors, report.unchecked = cel_rules.evaluate(defaulted, full)
    report.errors += errors
    return report
