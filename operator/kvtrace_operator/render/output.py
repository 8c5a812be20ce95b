"""Deterministic output of rendered objects: multi-document YAML (multi-line strings as
literal blocks, for review) or one JSON List."""

from __future__ import annotations

import json
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _string)


def dump_all(objects: list[dict[str, Any]]) -> str:
    """Objects as ``---``-separated YAML; same objects, same bytes."""
    return yaml.dump_all(
        objects,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        explicit_start=True,
        allow_unicode=True,
        width=100,
    )


def dump_json_list(objects: list[dict[str, Any]]) -> str:
    """Objects as one ``v1`` List in JSON (what ``kubectl get -o json`` prints for many)."""
    return (
        json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": objects}, indent=4, ensure_ascii=False
        )
        + "\n"
    )
