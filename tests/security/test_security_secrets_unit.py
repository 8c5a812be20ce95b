"""Secrets the rendered workloads use (docs/security.md), pure: which references exist, what is
missing, the checksum that rolls a workload when a Secret it reads only at start changes, and
the token Secret the operator generates when a pipeline names none."""

from __future__ import annotations

from typing import Any

import pytest
from test_security_render_unit import kvc, tp

from kvtrace_operator.k8s.permissions import describe_denial
from kvtrace_operator.render import render_kvcluster, render_pipeline
from kvtrace_operator.render.consumer_tokens import TOKEN_SET_ANNOTATION
from kvtrace_operator.render.labels import CHECKSUM_ANNOTATION
from kvtrace_operator.render.secret_refs import (
    Found,
    SecretRef,
    made_by_pipeline,
    missing_secrets,
    pipeline_secret_names,
    pod_secret_refs,
    referenced_secrets,
    roll_on_secret_changes,
    secrets_condition,
    with_conditions,
)
from kvtrace_operator.render.security import GENERATED_ANNOTATION

pytestmark = pytest.mark.unit

OWN_TOKEN = {"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}}


def annotation(objects: list[dict[str, Any]], kind: str, name: str) -> str:
    obj = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    return str(obj["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION])


def test_every_way_a_pod_uses_a_secret_is_found() -> None:
    pod = {
        "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "bulk"}}]}],
        "containers": [
            {
                "name": "main",
                "env": [
                    {"name": "A", "value": "plain"},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "one", "key": "k"}}},
                    {
                        "name": "C",
                        "valueFrom": {
                            "secretKeyRef": {"name": "maybe", "key": "k", "optional": True}
                        },
                    },
                    {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                ],
            }
        ],
        "volumes": [
            {
                "name": "auth-token",
                "secret": {"secretName": "tok", "items": [{"key": "token", "path": "t"}]},
            },
            {"name": "whole", "secret": {"secretName": "all"}},
            {
                "name": "mixed",
                "projected": {
                    "sources": [
                        {
                            "secret": {
                                "name": "proj",
                                "items": [{"key": "a", "path": "a"}, {"key": "b", "path": "b"}],
                            }
                        },
                        {"configMap": {"name": "cm"}},
                    ]
                },
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    assert sorted(pod_secret_refs(pod)) == sorted(
        [
            SecretRef("bulk", None, True),
            SecretRef("one", "k", True),
            SecretRef("maybe", "k", True, True),
            # the collector re-reads its token file: a change of that Secret needs no restart
            SecretRef("tok", "token", False),
            SecretRef("all", None, True),
            SecretRef("proj", "a", True),
            SecretRef("proj", "b", True),
        ]
    )


def test_missing_secrets_and_keys_are_named_and_optional_ones_ignored() -> None:
    refs = [
        SecretRef("gone", "token", True),
        SecretRef("here", "token", True),
        SecretRef("here", "other", True),
        SecretRef("whole", None, True),
        SecretRef("maybe", "k", True, True),
    ]
    found = {
        "gone": None,
        "here": Found("7", frozenset({"token"})),
        "whole": Found("8", frozenset()),
        "maybe": None,
    }
    assert missing_secrets(refs, found, "store") == [
        "Secret store/gone (key token) does not exist",
        "Secret store/here has no key other",
    ]
    cond = secrets_condition(
        refs, missing_secrets(refs, found, "store"), generation=3, now="2026-01-01T00:00:00Z"
    )
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "SecretsReady",
        "False",
        "SecretNotFound",
    )
    assert (
        "store/gone (key token)" in cond["message"]
        and "CreateContainerConfigError" in cond["message"]
    )
    ok = secrets_condition(refs[1:2], [], generation=3, now="t")
    assert (ok["status"], ok["reason"]) == ("True", "SecretsFound") and "here" in ok["message"]


def test_a_changed_secret_rolls_the_members_but_not_the_collector_that_rereads_it() -> None:
    # TLS off: the token is then the only Secret these workloads read at start.
    pipe = tp(security={"auth": OWN_TOKEN, "tls": {"enabled": False}})
    objects = render_kvcluster(kvc(), pipe) + render_pipeline(pipe)
    # The members read their own token at start; the collector re-reads the token set.
    member, tokens = "orders-otlp-client-token", "traces-otlp-tokens"
    before = roll_on_secret_changes(
        objects,
        {member: Found("100", frozenset({"token"})), tokens: Found("7", frozenset({"tokens"}))},
    )
    after = roll_on_secret_changes(
        objects,
        {member: Found("101", frozenset({"token"})), tokens: Found("8", frozenset({"tokens"}))},
    )
    same = roll_on_secret_changes(
        objects,
        {member: Found("100", frozenset({"token"})), tokens: Found("7", frozenset({"tokens"}))},
    )
    assert annotation(before, "StatefulSet", "orders") != annotation(after, "StatefulSet", "orders")
    assert annotation(before, "StatefulSet", "orders") == annotation(same, "StatefulSet", "orders")
    # The member's configuration checksum is still part of it; the collector's is untouched.
    assert annotation(before, "StatefulSet", "orders") != annotation(
        objects, "StatefulSet", "orders"
    )
    assert annotation(after, "Deployment", "traces-collector") == annotation(
        objects, "Deployment", "traces-collector"
    )
    # Nothing else changes, and the input is not modified.
    assert [o for o in before if o["kind"] != "StatefulSet"] == [
        o for o in objects if o["kind"] != "StatefulSet"
    ]
    assert annotation(objects, "StatefulSet", "orders") == annotation(
        render_kvcluster(kvc(), pipe), "StatefulSet", "orders"
    )


def test_untraced_and_unauthenticated_workloads_keep_their_checksums() -> None:
    # auth and TLS are on by default
    off = {"auth": {"enabled": False}, "tls": {"enabled": False}}
    unauthenticated = tp(security=off)
    objects = render_kvcluster(kvc(security=off), unauthenticated) + render_pipeline(
        unauthenticated
    )
    assert roll_on_secret_changes(objects, {}) == objects
    assert referenced_secrets(objects) == []


def test_a_pipeline_without_token_secret_gets_a_generated_one() -> None:
    pipe = tp(security={"auth": {"enabled": True}})
    objects = render_pipeline(pipe)
    token_set, secret = objects[:2]
    assert token_set["metadata"]["name"] == "traces-otlp-tokens" and "data" not in token_set
    assert token_set["metadata"]["annotations"] == {
        GENERATED_ANNOTATION: "tokens",
        TOKEN_SET_ANNOTATION: "tokens",
    }
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "traces-otlp-token"
    assert secret["metadata"]["annotations"] == {GENERATED_ANNOTATION: "token"}
    assert "data" not in secret and "stringData" not in secret  # generated once, by the k8s layer
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-tp"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kvtrace-operator"
    assert secret["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kvtrace"
    # The members use their cluster's own token, generated in the same apply: neither side's
    # Secrets are "missing" before their first apply.
    members = render_kvcluster(kvc(), pipe)
    env = next(o for o in members if o["kind"] == "StatefulSet")["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert {
        "name": "KVTRACE_OTLP_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "orders-otlp-client-token", "key": "token"}},
    } in env
    assert [m["metadata"]["name"] for m in members[:2]] == [
        "orders-otlp-client-token",
        "orders-kv-client-token",
    ]
    assert members[0]["metadata"]["annotations"] == {GENERATED_ANNOTATION: "token"}
    assert members[0]["metadata"]["ownerReferences"][0]["uid"] == "u-kv"
    # Only the TLS Secrets (on by default; the operator makes them before the workloads).
    tls_secrets = {"traces-tls-trust", "traces-collector-tls", "traces-jaeger-tls"}
    assert {r.name for r in referenced_secrets(objects)} == tls_secrets
    # ... and the cluster's own TLS Secrets (KV TLS on by default, made before the members too).
    assert [r.name for r in referenced_secrets(members)] == [
        "orders-kv-tls",
        "orders-kv-tls",
        "orders-kv-tls-trust",
        "traces-tls-trust",
    ]
    assert pipeline_secret_names(pipe) == {"traces-otlp-token", "traces-otlp-tokens", *tls_secrets}
    # A Secret of the user's: no generated token, still the token set; the watch covers it.
    own = tp(security={"auth": OWN_TOKEN})
    assert [o["metadata"]["name"] for o in render_pipeline(own) if o["kind"] == "Secret"] == [
        "traces-otlp-tokens"
    ]
    assert pipeline_secret_names(own) == {"otlp-token", "traces-otlp-tokens", *tls_secrets}


def test_secret_names_of_a_pipeline_cover_tls_and_exporter_headers() -> None:
    pipe = tp(
        security={"tls": {"enabled": True, "secretName": "collector-tls"}},
        exporters={
            "otlp": [
                {
                    "name": "vendor",
                    "endpoint": "vendor.example:4317",
                    "secretHeaders": [
                        {"name": "api-key", "secretKeyRef": {"name": "vendor-key", "key": "k"}}
                    ],
                }
            ]
        },
    )
    assert pipeline_secret_names(pipe) >= {"collector-tls", "vendor-key"}
    assert pipeline_secret_names(tp(sampling={"mode": "nonsense"})) == set()  # invalid: nothing


def test_extra_conditions_replace_their_type_and_keep_transition_times() -> None:
    previous = {
        "conditions": [
            {
                "type": "SecretsReady",
                "status": "True",
                "reason": "SecretsFound",
                "message": "m",
                "lastTransitionTime": "then",
            }
        ]
    }
    status = {
        "phase": "Running",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "r",
                "message": "m",
                "lastTransitionTime": "now",
            }
        ],
    }
    same = secrets_condition([], [], generation=1, now="now")
    merged = with_conditions(status, previous, [same])
    assert [c["type"] for c in merged["conditions"]] == ["Ready", "SecretsReady"]
    assert merged["conditions"][1]["lastTransitionTime"] == "then" and merged["phase"] == "Running"
    flipped = with_conditions(
        merged, previous, [secrets_condition([], ["x"], generation=1, now="now")]
    )
    assert [c["type"] for c in flipped["conditions"]] == ["Ready", "SecretsReady"]
    assert flipped["conditions"][1]["lastTransitionTime"] == "now"


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (
            'networkpolicies.networking.k8s.io "traces" is forbidden: User "system:serviceaccount:ops:kvo" cannot '
            'patch resource "networkpolicies" in API group "networking.k8s.io" in the namespace "store"',
            "may not patch networkpolicies.networking.k8s.io in namespace store",
        ),
        (
            'secrets "t" is forbidden: User "system:serviceaccount:ops:kvo" cannot get resource "secrets" in API group '
            '"" in the namespace "store"',
            "may not get secrets in namespace store",
        ),
        ("something else entirely", "something else entirely"),
    ],
)
def test_a_denial_names_the_verb_and_the_resource(message: str, words: str) -> None:
    assert describe_denial(message) == words


def test_consumers_wait_for_the_secrets_their_pipeline_makes() -> None:
    # A member's token is its cluster's own child: only the managed trust bundle (TLS is on by
    # default) is awaited.
    assert made_by_pipeline(tp(security={"auth": {"enabled": True}})) == {"traces-tls-trust"}
    assert made_by_pipeline(tp(security={"auth": OWN_TOKEN})) == {"traces-tls-trust"}
    assert made_by_pipeline(tp(security={"tls": {"enabled": False}})) == set()
    assert made_by_pipeline(tp(security={"tls": {"enabled": True, "mode": "managed"}})) == {
        "traces-tls-trust"
    }
    waiting = secrets_condition(
        [SecretRef("traces-otlp-token", "token", True)],
        [],
        generation=1,
        now="t",
        waiting=["Secret store/traces-otlp-token (key token) is not created"],
    )
    assert (waiting["status"], waiting["reason"]) == ("False", "SecretPending")
    assert "is not created yet" in waiting["message"]
