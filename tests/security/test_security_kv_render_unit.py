"""A KVCluster's own transport security as rendered (render/kvsecurity.py, render/tls.py):
TLS modes, client tokens, the explicit opt-out and the errors naming their field."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from test_security_render_unit import kvc

from kvtrace_operator import rotation
from kvtrace_operator.k8s.certificates import leaf_specs, managed_secrets, policy
from kvtrace_operator.render import SpecError, render_kvcluster, tls
from kvtrace_operator.render.certificates import certificate_objects
from kvtrace_operator.render.secret_refs import made_for_members, referenced_secrets
from kvtrace_operator.spec import parse_kvcluster

pytestmark = pytest.mark.unit

MEMBER_NAMES = [
    "orders",
    "orders.store",
    "orders.store.svc",
    "orders.store.svc.cluster.local",
    "orders-peers",
    "orders-peers.store",
    "orders-peers.store.svc",
    "orders-peers.store.svc.cluster.local",
    "*.orders-peers.store.svc",
    "*.orders-peers.store.svc.cluster.local",
]


def untraced(**spec: Any) -> dict[str, Any]:
    cluster = kvc(**spec)
    del cluster["spec"]["tracing"]
    return cluster


def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "StatefulSet")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def volumes(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {v["name"]: v for v in pod(objects)["volumes"]}


def test_managed_by_default_one_leaf_for_every_member_and_the_generated_token() -> None:
    cluster = untraced()
    spec = parse_kvcluster(cluster["spec"])
    assert spec.security.tls.active_mode == tls.MANAGED
    [leaf] = tls.leaves(cluster, spec)
    assert leaf == {
        "secret": "orders-kv-tls",
        "component": "kvnode",
        "commonName": "orders",
        "dnsNames": MEMBER_NAMES,
    }
    assert tls.written_secrets(cluster, spec) == [
        "orders-kv-tls-ca",
        "orders-kv-tls-trust",
        "orders-kv-tls",
    ]
    assert made_for_members(cluster) == {"orders-kv-tls", "orders-kv-tls-trust"}
    objects = render_kvcluster(cluster, None)
    assert objects[0]["metadata"]["name"] == "orders-kv-client-token" and "data" not in objects[0]
    found = volumes(objects)
    assert found["serving-cert"]["secret"]["secretName"] == "orders-kv-tls"
    assert found["kv-trust"]["secret"] == {
        "secretName": "orders-kv-tls-trust",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert found["client-tokens"]["projected"]["sources"] == [
        {
            "secret": {
                "name": "orders-kv-client-token",
                "items": [{"key": "token", "path": "default"}],
            }
        }
    ]
    # The members re-read all three: a renewed certificate or a new token rolls nothing.
    assert {ref.rolls for ref in referenced_secrets(objects)} == {False}


def test_the_managed_ca_signs_the_members_leaf_under_the_kv_prefix() -> None:
    cluster = untraced()
    spec = parse_kvcluster(cluster["spec"])
    now = datetime.datetime.now(datetime.UTC)
    state, actions = rotation.rotate(
        rotation.State(), leaf_specs(cluster, spec), now, policy(spec), "kv CA"
    )
    assert actions == ["CA kv CA: missing", "certificate orders-kv-tls: missing"]
    secrets = {o["metadata"]["name"]: o for o in managed_secrets(cluster, spec, state, now)}
    assert list(secrets) == ["orders-kv-tls-ca", "orders-kv-tls-trust", "orders-kv-tls"]
    assert all(o["metadata"]["ownerReferences"][0]["kind"] == "KVCluster" for o in secrets.values())
    assert secrets["orders-kv-tls"]["type"] == "kubernetes.io/tls"


def test_cert_manager_and_user_secret_modes() -> None:
    issuer = {"name": "ca-issuer", "kind": "ClusterIssuer"}
    cluster = untraced(security={"tls": {"mode": "certManager", "issuerRef": issuer}})
    spec = parse_kvcluster(cluster["spec"])
    [cert] = certificate_objects(cluster, spec)
    assert (
        cert["spec"]["secretName"] == "orders-kv-tls" and cert["spec"]["dnsNames"] == MEMBER_NAMES
    )
    assert cert["spec"]["issuerRef"] == {**issuer, "group": "cert-manager.io"}
    mine = untraced(security={"tls": {"secretName": "my-kv-cert"}})
    found = volumes(render_kvcluster(mine, None))
    assert found["serving-cert"]["secret"]["secretName"] == "my-kv-cert"
    assert found["kv-trust"]["secret"]["secretName"] == "my-kv-cert"
    assert not tls.leaves(mine, parse_kvcluster(mine["spec"])) and not made_for_members(mine)


def test_declared_clients_get_their_own_tokens() -> None:
    cluster = untraced(
        security={
            "auth": {
                "clients": [
                    {"name": "billing"},
                    {"name": "app", "tokenSecretRef": {"name": "app-secret", "key": "kv"}},
                ]
            }
        }
    )
    objects = render_kvcluster(cluster, None)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == [
        "orders-kv-client-token",
        "orders-billing-kv-client-token",
    ]
    sources = volumes(objects)["client-tokens"]["projected"]["sources"]
    assert [(s["secret"]["name"], s["secret"]["items"]) for s in sources] == [
        ("orders-kv-client-token", [{"key": "token", "path": "default"}]),
        ("orders-billing-kv-client-token", [{"key": "token", "path": "billing"}]),
        ("app-secret", [{"key": "kv", "path": "app"}]),
    ]
    # the user's Secret must exist before the members start (the Secret gate waits for it)
    assert "app-secret" in {ref.name for ref in referenced_secrets(objects)}


def test_explicit_opt_out_is_plaintext_without_tokens() -> None:
    cluster = untraced(security={"tls": {"enabled": False}, "auth": {"enabled": False}})
    objects = render_kvcluster(cluster, None)
    node = pod(objects)["containers"][0]
    assert not [a for a in node["args"] if a.startswith(("--tls", "--auth"))]
    assert "scheme" not in node["readinessProbe"]["httpGet"]
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert not {"serving-cert", "kv-trust", "client-tokens"} & set(volumes(objects))


@pytest.mark.parametrize(
    ("security", "field", "words"),
    [
        (
            {"tls": {"mode": "certManager"}},
            "spec.security.tls.issuerRef",
            "required with mode certManager",
        ),
        ({"tls": {"mode": "secret"}}, "spec.security.tls.secretName", "required with mode secret"),
        ({"tls": {"mode": "bogus"}}, "spec.security.tls.mode", "expected one of"),
        (
            {"auth": {"clients": [{"name": "default"}]}},
            "spec.security.auth.clients[0].name",
            "generated token",
        ),
        (
            {"auth": {"clients": [{"name": "a"}, {"name": "a"}]}},
            "spec.security.auth.clients[1].name",
            "duplicate client",
        ),
        (
            {"auth": {"clients": [{"name": "Bad"}]}},
            "spec.security.auth.clients[0].name",
            "DNS label",
        ),
    ],
)
def test_bad_security_names_its_field(security: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        render_kvcluster(untraced(security=security), None)
    assert err.value.field == field and words in str(err.value)
