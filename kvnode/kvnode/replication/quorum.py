"""Consistency levels and how many replicas each needs (pure)."""

from __future__ import annotations

LEVELS = ("one", "quorum", "all")


class ConsistencyError(ValueError):
    pass


def parse_level(text: str | None, default: str) -> str:
    level = (text or default).strip().lower()
    if level not in LEVELS:
        raise ConsistencyError(
            f"unknown consistency level {text!r}; expected one of {', '.join(LEVELS)}"
        )
    return level


def required(level: str, replicas: int) -> int:
    if level == "one":
        return min(1, replicas)
    if level == "quorum":
        return replicas // 2 + 1
    return replicas
