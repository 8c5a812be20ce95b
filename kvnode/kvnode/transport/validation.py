"""Client request validation (pure): keys, sizes, consistency levels → bytes or an error."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvnode.replication.quorum import ConsistencyError, parse_level

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_MAX_KEY = 4096
DEFAULT_MAX_VALUE = 1536 * 1024  # 1.5 MiB, the order of etcd's request limit


@dataclass(frozen=True)
class Limits:
    max_key: int = DEFAULT_MAX_KEY
    max_value: int = DEFAULT_MAX_VALUE


class InvalidRequest(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def validate_key(key: str, limits: Limits) -> bytes:
    if not key:
        raise InvalidRequest(400, "invalid_key", "the key is empty")
    if _CONTROL.search(key):
        raise InvalidRequest(400, "invalid_key", "the key contains control characters")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(400, "invalid_key", "the key is not valid UTF-8") from None
    if len(raw) > limits.max_key:
        raise InvalidRequest(
            413, "key_too_large", f"the key has {len(raw)} bytes; the limit is {limits.max_key}"
        )
    return raw


def validate_value_size(size: int | None, limits: Limits) -> None:
    if size is not None and size > limits.max_value:
        raise InvalidRequest(
            413, "value_too_large", f"the value has {size} bytes; the limit is {limits.max_value}"
        )


def validate_consistency(text: str | None, default: str) -> str:
    try:
        return parse_level(text, default)
    except ConsistencyError as exc:
        raise InvalidRequest(400, "invalid_consistency", str(exc)) from None
