"""The security fields of the CRDs on the real API server (docs/security.md): defaults applied, bad
input rejected with a message naming the field (server-side dry run: nothing is stored)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.controlplane


def kvc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "sec"},
        "spec": spec,
    }


def tp(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "sec"},
        "spec": spec,
    }


def dry_run(kubectl: Any, obj: dict[str, Any]) -> Any:
    return kubectl(
        "-n",
        "default",
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump(obj),
        check=False,
    )


MALFORMED = [
    (
        "client-access",
        kvc(networkPolicy={"clientAccess": "some"}),
        "spec.networkPolicy.clientAccess",
        "Unsupported value",
    ),
    (
        "query-access",
        tp(networkPolicy={"queryAccess": "world"}),
        "spec.networkPolicy.queryAccess",
        "Unsupported value",
    ),
    (
        "policy-enabled-type",
        tp(networkPolicy={"enabled": "yes"}),
        "spec.networkPolicy.enabled",
        "boolean",
    ),
    (
        "auth-secret-without-key",
        tp(security={"auth": {"enabled": True, "tokenSecretRef": {"name": "t"}}}),
        "spec.security.auth.tokenSecretRef.key",
        "Required value",
    ),
    (
        "auth-consumer-name",
        tp(security={"auth": {"consumers": [{"name": "Billing"}]}}),
        "spec.security.auth.consumers[0].name",
        "should match",
    ),
    (
        "auth-consumer-duplicate",
        tp(security={"auth": {"consumers": [{"name": "a"}, {"name": "a"}]}}),
        "spec.security.auth.consumers[1]",
        "Duplicate value",
    ),
    (
        "auth-consumer-secret-without-key",
        tp(security={"auth": {"consumers": [{"name": "a", "tokenSecretRef": {"name": "t"}}]}}),
        "spec.security.auth.consumers[0].tokenSecretRef.key",
        "Required value",
    ),
    (
        "tls-secret-mode-without-secret",
        tp(security={"tls": {"enabled": True, "mode": "secret"}}),
        "spec.security.tls.secretName",
        "secretName is required with mode secret",
    ),
]


@pytest.mark.parametrize(
    ("case", "obj", "field", "phrase"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_bad_security_input_is_rejected_naming_the_field(
    crds: None, kubectl: Any, case: str, obj: dict[str, Any], field: str, phrase: str
) -> None:
    proc = dry_run(kubectl, obj)
    assert proc.returncode != 0, f"{case}: accepted"
    assert f"{field}:" in proc.stderr and phrase in proc.stderr, proc.stderr


def test_defaults_are_secure_where_they_can_be(crds: None, kubectl: Any) -> None:
    cluster = json.loads(dry_run(kubectl, kvc()).stdout)
    assert cluster["spec"]["networkPolicy"] == {"enabled": True, "clientAccess": "all"}
    pipeline = json.loads(dry_run(kubectl, tp()).stdout)
    assert pipeline["spec"]["networkPolicy"] == {"enabled": True, "queryAccess": "namespace"}
    # auth on by default (the generated token), and TLS (mode managed: the operator's own CA)
    assert pipeline["spec"]["security"] == {
        "auth": {"enabled": True},
        "tls": {
            "enabled": True,
            "duration": "2160h",
            "renewBefore": "720h",
            "caDuration": "26280h",
            "caRenewBefore": "4320h",
        },
    }
    # Plaintext only when asked for: enabled: false is kept as given.
    plaintext = json.loads(dry_run(kubectl, tp(security={"tls": {"enabled": False}})).stdout)
    assert plaintext["spec"]["security"]["tls"]["enabled"] is False
    secured = tp(
        security={
            "auth": {"enabled": True, "tokenSecretRef": {"name": "t", "key": "token"}},
            "tls": {"enabled": True, "secretName": "collector-tls"},
        }
    )
    assert dry_run(kubectl, secured).returncode == 0
    # Without tokenSecretRef the operator generates the token Secret.
    assert dry_run(kubectl, tp(security={"auth": {"enabled": True}})).returncode == 0
    assert (
        dry_run(kubectl, tp(security={"auth": {"enabled": False}})).returncode == 0
    )  # the opt-out
