"""Query access on the local cluster (issue 8, "Access to trace data"): the CRD's
``spec.jaeger.query.auth`` rules on the real API server (server-side dry run), and a
pipeline with ``mode: basic`` end to end: the operator generates the credentials Secret,
the real Jaeger behind its pod (the pod runner) refuses queries without them, and the
operator's TraceDelivery canary, which sends them, reports Delivered."""

from __future__ import annotations

import base64
import json
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.devstack.endpoints import resolve_url
from kvtrace.devstack.jaeger_client import JaegerClient, JaegerError

pytestmark = pytest.mark.controlplane

_delivery = runpy.run_path(str(Path(__file__).resolve().parents[1] / "operator" / "controlplane"
                               / "test_operator_trace_delivery.py"), run_name="query_access_delivery_helpers")
start_backends, delivery, pipeline = _delivery["start_backends"], _delivery["delivery"], _delivery["pipeline"]
TIMEOUT: float = _delivery["TIMEOUT"]
FAST_CANARY: tuple[str, ...] = _delivery["FAST_CANARY"]
FIELD = "spec.jaeger.query.auth"


def tp(auth: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kvtrace.dev/v1alpha1", "kind": "TracingPipeline", "metadata": {"name": "qa"},
            "spec": {"jaeger": {"query": {"auth": auth}}}}


def dry_run(kubectl: Any, obj: dict[str, Any]) -> Any:
    return kubectl("-n", "default", "create", "--dry-run=server", "-o", "json", "-f", "-",
                   input=yaml.safe_dump(obj), check=False)


MALFORMED = [
    ("oidc-mode", {"mode": "oidc"}, f"{FIELD}.mode", "Unsupported value"),
    ("ref-without-basic", {"credentialsSecretRef": {"name": "u", "key": "htpasswd"}},
     f"{FIELD}.credentialsSecretRef", "credentialsSecretRef is only used with mode basic"),
    ("ref-without-key", {"mode": "basic", "credentialsSecretRef": {"name": "u"}},
     f"{FIELD}.credentialsSecretRef.key", "Required value"),
]


@pytest.mark.parametrize(("case", "auth", "field", "phrase"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_bad_query_auth_is_rejected_by_the_crd_naming_the_field(crds: Any, kubectl: Any, case: str,
                                                                 auth: dict[str, Any], field: str, phrase: str) -> None:
    proc = dry_run(kubectl, tp(auth))
    assert proc.returncode != 0, f"{case}: accepted"
    assert f"{field}:" in proc.stderr and phrase in proc.stderr, proc.stderr


def test_query_auth_defaults_to_none_and_accepts_basic(crds: Any, kubectl: Any) -> None:
    default = json.loads(dry_run(kubectl, {**tp({}), "spec": {}}).stdout)
    assert default["spec"]["jaeger"]["query"] == {"auth": {"mode": "none"}}
    for auth in ({"mode": "basic"}, {"mode": "basic", "credentialsSecretRef": {"name": "u", "key": "htpasswd"}}):
        proc = dry_run(kubectl, tp(auth))
        assert proc.returncode == 0, proc.stderr


@pytest.mark.operator_args(*FAST_CANARY)
def test_basic_query_auth_end_to_end_with_the_canary(operator: Any, kube_ns: Any, pod_runner: Any,
                                                      endpoint_map: Any, poll: Any) -> None:
    kube_ns.apply(pipeline(jaeger={"query": {"auth": {"mode": "basic"}}}))
    poll(lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"), timeout=TIMEOUT,
         message="pipeline Ready")
    secret = poll(lambda: kube_ns.get("secret", "traces-jaeger-query-credentials"), timeout=TIMEOUT,
                  message="the generated query credentials Secret")
    credentials = base64.b64decode(secret["data"]["credentials"]).decode()
    user, password = credentials.split(":", 1)
    assert user == "kvtrace" and len(password) >= 43
    assert secret["metadata"]["ownerReferences"][0]["name"] == "traces"
    config_map = kube_ns.get("configmap", "traces-jaeger")
    assert password not in json.dumps(config_map)
    service = kube_ns.get("service", "traces-jaeger-query")
    assert service["spec"]["type"] == "ClusterIP"

    start_backends(pod_runner, endpoint_map, poll)
    delivered = poll(lambda: delivery(kube_ns, "True", "Delivered"), timeout=TIMEOUT,
                     message="TraceDelivery True/Delivered: the canary sends the query credentials")
    assert "found in Jaeger at http://traces-jaeger-query." in delivered["message"]
    assert password not in json.dumps(kube_ns.get("tracingpipeline", "traces"))
    trace_id = kube_ns.get("tracingpipeline", "traces")["status"]["traceDelivery"]["traceID"]
    query = resolve_url(kube_ns.get("tracingpipeline", "traces")["status"]["endpoints"]["jaegerQuery"],
                        endpoint_map.path)
    with pytest.raises(JaegerError, match="401"):
        JaegerClient(query, timeout=5, credentials="").trace(trace_id)
    with pytest.raises(JaegerError, match="401: .*credentials were refused"):
        JaegerClient(query, timeout=5, credentials=f"kvtrace:{password}x").trace(trace_id)
    found = JaegerClient(query, timeout=5, credentials=credentials).trace(trace_id)
    assert found is not None and found.services == {"kvtrace-operator-canary"}
