"""Every example on the real local cluster: server-side dry run, real apply, then the
operator, running with exactly the chart's ServiceAccount permissions, drives it to Ready
with every child in place and no request refused (403) anywhere; and each example shows the
feature it exists for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from example_assertions import apply_example, assert_children, get_json, wait_ready
from examples_lib import folders

pytestmark = pytest.mark.controlplane

FOLDERS = folders()


def status(kubectl: Any, namespace: str, ref: str) -> dict[str, Any]:
    return get_json(kubectl, namespace, ref)[0].get("status") or {}


def secure_defaults(kubectl: Any, namespace: str) -> None:
    """No spec.security: TLS from the operator's own CA on every hop (chart RBAC: Secrets)."""
    pipeline = status(kubectl, namespace, "tracingpipeline/dev-traces")
    assert pipeline["endpoints"]["otlpHttp"].startswith("https://")
    assert pipeline["tls"]["mode"] == "managed"
    assert [c["secret"] for c in pipeline["tls"]["certificates"]] == [
        "dev-traces-collector-tls",
        "dev-traces-jaeger-tls",
    ]
    trust = get_json(kubectl, namespace, "secret/dev-traces-tls-trust")[0]
    assert set(trust["data"]) == {"ca.crt"}  # the bundle only: no key reaches a client


def production_sampling(kubectl: Any, namespace: str) -> None:
    sampling = status(kubectl, namespace, "tracingpipeline/prod-traces")["sampling"]
    assert sampling["sdkSampler"] == "parentbased_always_on" and sampling["tailSampling"] is True
    # security.auth without a Secret of its own: the operator generated one (chart RBAC: create).
    secret = get_json(kubectl, namespace, "secret/prod-traces-otlp-token")[0]
    assert (
        secret["metadata"]["ownerReferences"][0]["name"] == "prod-traces"
        and "token" in secret["data"]
    )
    conditions = {
        c["type"]: c["status"]
        for c in status(kubectl, namespace, "tracingpipeline/prod-traces")["conditions"]
    }
    assert conditions["SecretsReady"] == "True" and conditions["Authorized"] == "True"


def two_tiers(kubectl: Any, namespace: str) -> None:
    assert status(kubectl, namespace, "tracingpipeline/scaled-traces")["collector"]["tiers"] == 2
    tiers = get_json(
        kubectl,
        namespace,
        "deployment.apps/scaled-traces-collector",
        "deployment.apps/scaled-traces-collector-sampling",
    )
    assert [d["spec"]["replicas"] for d in tiers] == [2, 2]


def badger_claim_and_archive(kubectl: Any, namespace: str) -> None:
    claim = get_json(kubectl, namespace, "persistentvolumeclaim/durable-traces-jaeger-data")[0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    config = yaml.safe_load(
        get_json(kubectl, namespace, "configmap/durable-traces-jaeger")[0]["data"]["config.yaml"]
    )
    archive = config["extensions"]["jaeger_storage"]["backends"]["archive"]["badger"]
    assert archive["ttl"]["spans"] == "720h"
    assert config["extensions"]["jaeger_query"]["storage"]["traces_archive"] == "archive"


def shared_pipeline(kubectl: Any, namespace: str) -> None:
    consumers = status(kubectl, namespace, "tracingpipeline/shared-traces").get("consumers")
    assert [(c["kind"], c["name"]) for c in consumers] == [
        ("KVCluster", "team-a-kv"),
        ("KVCluster", "team-b-kv"),
    ]


FEATURE: dict[str, Callable[[Any, str], None]] = {
    "01-basic": secure_defaults,
    "02-production-sampling": production_sampling,
    "03-scaled-collector": two_tiers,
    "04-badger-storage": badger_claim_and_archive,
    "05-multi-tenant-jaeger": shared_pipeline,
}


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_example_is_driven_ready_by_the_operator_with_the_charts_permissions(
    folder: Path, chart_operator: Any, kubectl: Any, namespace: str, poll: Any
) -> None:
    apply_example(kubectl, namespace, folder)
    wait_ready(kubectl, namespace, folder, timeout=180)
    assert_children(kubectl, namespace, folder)
    if folder.name in FEATURE:
        check = FEATURE[folder.name]

        def holds() -> bool:
            check(kubectl, namespace)
            return True

        poll(holds, timeout=60, message=f"{folder.name}: {check.__name__}")
    assert chart_operator.healthy(), "kopf's /healthz (the chart's probes) stopped answering"
    assert chart_operator.forbidden() == [], "the chart's RBAC refused the operator something"
