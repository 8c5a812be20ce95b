"""The default redaction patterns (``spec.redaction.defaultPatterns``, docs/security.md): they catch
tokens, e-mail addresses and card numbers, and leave alone everything kvtrace itself puts on
spans (hashed keys, addresses, ids, versions). Checked with Python's ``re``, whose reading of
these patterns is the same as RE2's (the collector's); the real processor is exercised in
``test_security_redaction_dataplane.py``."""

from __future__ import annotations

import hashlib
import random
import re
import uuid

import pytest

from kvtrace_operator.render import render_collector_config
from kvtrace_operator.render.redaction import DEFAULT_KEY_PATTERNS, DEFAULT_VALUE_PATTERNS

pytestmark = pytest.mark.unit

MASKED_VALUES = [
    "Bearer abcdefgh12345678",
    "authorization failed: bearer 0123456789abcdef.ghij",
    "Basic dXNlcjpwYXNzd29yZA==",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "alice@example.com",
    "write failed for bob.smith+kv@mail.example.org today",
    "4111111111111111",
    "card 5500000000000004 declined",
    "340000000000009",
    "6011000000000004",
    "2221000000000009",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4222222222222",
]

# What kvtrace nodes and the collector put on spans: never masked.
KEPT_VALUES = [
    "kv-0.kv-peers.store.svc.cluster.local:7071",
    "10.244.0.3",
    "127.0.0.1:7070",
    "quorum",
    "write",
    "read_repair",
    "2026-11-27T05:40:45Z",
    "1732675200123456789",
    "17326752001234567",
    str(uuid.UUID(int=0x123E4567E89B12D3A456426614174000)),
    "orders-2",
    "kvstore",
    "PUT /v1/kv/{key}",
    "not enough replicas answered: 1 of 2 (kv-1: timeout)",
    "user at example dot com",
]

MASKED_KEYS = [
    "password",
    "db.password",
    "http.request.header.authorization",
    "x-api-key",
    "api_key",
    "user.token",
    "session.cookie",
    "aws.secret_access_key",
    "tls.private_key",
    "Credentials",
]
KEPT_KEYS = [
    "kvstore.key",
    "kvstore.key.hash",
    "server.address",
    "network.peer.address",
    "db.operation.name",
    "kvstore.replicas.acked",
    "k8s.pod.name",
    "service.name",
    "kvstore.member.id",
    "http.response.status_code",
]


def masked(value: str) -> bool:
    return any(re.search(pattern, value) for pattern in DEFAULT_VALUE_PATTERNS)


@pytest.mark.parametrize("value", MASKED_VALUES)
def test_sensitive_values_are_caught(value: str) -> None:
    assert masked(value)


@pytest.mark.parametrize("value", KEPT_VALUES)
def test_kvtrace_values_are_left_alone(value: str) -> None:
    assert not masked(value)


def test_hashed_keys_and_trace_ids_never_match() -> None:
    """Digests of attributes/hash and trace ids are hex: digits beside letters are no word
    boundary, so even long digit runs inside them are never taken for card numbers. (A bare
    13-to-16-digit number with a card prefix is masked, whatever it is: the patterns cannot
    check the Luhn digit.) Seeded, so the samples are the same on every run."""
    rng = random.Random(8)
    samples = [hashlib.sha256(rng.randbytes(16)).hexdigest() for _ in range(3000)]
    samples += [hashlib.sha1(rng.randbytes(16)).hexdigest() for _ in range(1000)]
    samples += [rng.randbytes(16).hex() for _ in range(1000)]
    samples += ["a4111111111111111b", "4111111111111111" * 2, "x" + "5" * 40]
    assert [s for s in samples if masked(s)] == []


@pytest.mark.parametrize("key", MASKED_KEYS)
def test_sensitive_keys_are_caught(key: str) -> None:
    assert any(re.fullmatch(pattern, key) for pattern in DEFAULT_KEY_PATTERNS)


@pytest.mark.parametrize("key", KEPT_KEYS)
def test_kvtrace_keys_are_left_alone(key: str) -> None:
    assert not any(re.search(pattern, key) for pattern in DEFAULT_KEY_PATTERNS)


def test_defaults_are_on_at_the_edge_and_can_be_turned_off() -> None:
    def tp(**redaction: object) -> dict[str, object]:
        return {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "TracingPipeline",
            "metadata": {"name": "traces", "namespace": "store"},
            "spec": {"sampling": {"mode": "head"}, "redaction": redaction},
        }

    config = render_collector_config(tp())
    assert config["processors"]["redaction"]["blocked_values"] == DEFAULT_VALUE_PATTERNS
    processors = config["service"]["pipelines"]["traces"]["processors"]
    # After hashing (so a raw key is hashed before value patterns look at it), before export.
    assert (
        processors.index("attributes/hash")
        < processors.index("redaction")
        < processors.index("batch")
    )
    assert "redaction" not in render_collector_config(tp(defaultPatterns=False))["processors"]


def test_docs_list_exactly_the_default_patterns() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = text.split("## Redaction defaults", 1)[1].split("\n## ", 1)[0]
    documented = [
        row.rsplit("| `", 1)[1].rsplit("` |", 1)[0].replace("\\|", "|")
        for row in section.splitlines()
        if row.startswith("| ") and row.endswith("` |")
    ]
    assert documented == DEFAULT_KEY_PATTERNS + DEFAULT_VALUE_PATTERNS
