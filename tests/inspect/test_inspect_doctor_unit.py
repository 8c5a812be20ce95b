"""`kvtrace doctor`: each check is a pure function of gathered evidence. The evidence here is
what the operator renders (the same render functions), then broken one way at a time."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kvtrace.inspect import doctor
from kvtrace.inspect.doctor import FAIL, PASS, SKIP, WARN
from kvtrace.inspect.errors import InspectError
from kvtrace_operator.render.kvcluster import render_kvcluster
from kvtrace_operator.render.pipeline import render_pipeline
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

NS = "store"


def pipeline(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": NS},
        "spec": spec,
    }


def cluster(pipeline_name: str | None = "traces") -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": 3}
    if pipeline_name:
        spec["tracing"] = {"pipelineRef": {"name": pipeline_name}}
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv", "namespace": NS},
        "spec": spec,
    }


def objects(kind: str, rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered if o["kind"] == kind}


def configs(tp: dict[str, Any]) -> dict[str, Any]:
    maps = objects("ConfigMap", render_pipeline(tp))
    deps = objects("Deployment", render_pipeline(tp))
    return {
        name: yaml.safe_load(cm["data"]["config.yaml"])
        for name, cm in maps.items()
        if name in deps and "collector" in name
    }


def collector_deployments(tp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: d
        for name, d in objects("Deployment", render_pipeline(tp)).items()
        if "collector" in name
    }


def pods(tp: dict[str, Any] | None, count: int = 3) -> list[dict[str, Any]]:
    sts = objects("StatefulSet", render_kvcluster(cluster(), tp))["kv"]
    template = sts["spec"]["template"]
    return [
        {
            "metadata": {
                "name": f"kv-{i}",
                **{k: v for k, v in template["metadata"].items() if k != "name"},
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        for i in range(count)
    ]


def set_env(pod: dict[str, Any], name: str, value: str | None) -> None:
    container = pod["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != name]
    if value is not None:
        container["env"].append({"name": name, "value": value})


def test_pipeline_reference() -> None:
    assert doctor.check_pipeline(cluster(), pipeline()).status == PASS
    missing = doctor.check_pipeline(cluster(), None)
    assert (
        missing.status == FAIL
        and "TracingPipeline traces (spec.tracing.pipelineRef.name) does not exist"
        in missing.summary
    )
    untraced = doctor.check_pipeline(cluster(None), None)
    assert (
        untraced.status == FAIL
        and "no spec.tracing.pipelineRef" in untraced.summary
        and "kubectl patch" in untraced.fix
    )


def test_pipeline_evidence_includes_the_operators_trace_delivery() -> None:
    shown = pipeline()
    shown["status"] = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "PipelineReady", "message": "ok"},
            {
                "type": "TraceDelivery",
                "status": "False",
                "reason": "NotFoundInJaeger",
                "message": "canary trace ab...",
            },
        ]
    }
    check = doctor.check_pipeline(cluster(), shown)
    assert check.status == PASS  # the doctor's own canary decides; this is evidence
    assert (
        check.evidence[1]
        == "TracingPipeline traces: TraceDelivery=False NotFoundInJaeger: canary trace ab..."
    )


def endpoint_slice(*ready: bool) -> dict[str, Any]:
    return {
        "endpoints": [
            {
                "addresses": [f"10.244.0.{i}"],
                "conditions": {"ready": r},
                "targetRef": {"kind": "Pod", "name": f"traces-collector-{i}"},
            }
            for i, r in enumerate(ready)
        ]
    }


def test_collector_endpoints_pass_and_fail_when_scaled_to_zero() -> None:
    tp = pipeline()
    deps = list(collector_deployments(tp).values())
    service = {"traces-collector": {"metadata": {"name": "traces-collector"}}}
    ok = doctor.check_collector_endpoints(
        service, {"traces-collector": [endpoint_slice(True, False)]}, deps
    )
    assert ok.status == PASS and ok.summary == "ready endpoints: traces-collector (1)"
    assert (
        "1 ready endpoint(s) ['traces-collector-0'], 1 not ready ['traces-collector-1']"
        in ok.evidence[0]
    )
    zero = copy.deepcopy(deps)
    zero[0]["spec"]["replicas"] = 0
    failed = doctor.check_collector_endpoints(service, {}, zero)
    assert (
        failed.status == FAIL
        and failed.summary
        == "Service traces-collector has no ready endpoint: spans sent to it are lost"
    )
    assert "Deployment traces-collector: 0/0 replicas ready" in failed.evidence
    assert failed.fix.startswith("kubectl scale deployment traces-collector --replicas=1")
    unready = doctor.check_collector_endpoints(
        service, {"traces-collector": [endpoint_slice(False)]}, deps
    )
    assert unready.status == FAIL and "kubectl logs deployment/traces-collector" in unready.fix
    missing = doctor.check_collector_endpoints({"traces-collector": None}, {}, deps)
    assert missing.status == FAIL and missing.summary == "Service traces-collector does not exist"


def test_collector_endpoints_of_both_tiers() -> None:
    tp = pipeline(collector={"replicas": 2})
    deps = list(collector_deployments(tp).values())
    services = {
        name: {"metadata": {"name": name}}
        for name in ("traces-collector", "traces-collector-sampling")
    }
    both = {
        "traces-collector": [endpoint_slice(True, True)],
        "traces-collector-sampling": [endpoint_slice(True)],
    }
    ok = doctor.check_collector_endpoints(services, both, deps)
    assert (
        ok.status == PASS
        and ok.summary == "ready endpoints: traces-collector (2), traces-collector-sampling (1)"
    )
    no_sampler = doctor.check_collector_endpoints(
        services, {"traces-collector": both["traces-collector"]}, deps
    )
    assert no_sampler.status == FAIL and no_sampler.summary == (
        "Service traces-collector-sampling has no ready endpoint: the load-balancing tier has nowhere to send spans"
    )


def test_otlp_probe() -> None:
    assert doctor.check_otlp({"url": "http://c:4318", "status": 200, "body": "{}"}).status == PASS
    refused = doctor.check_otlp(
        {"url": "http://c:4318", "error": "Connection refused (--collector)"}
    )
    assert refused.status == FAIL and "error: Connection refused (--collector)" in refused.evidence
    assert (
        doctor.check_otlp({"url": "http://c:4318", "status": 503, "body": "limiter"}).status == FAIL
    )
    skipped = doctor.check_otlp({"skipped": "c.svc does not resolve from here"})
    assert skipped.status == SKIP and "--collector" in skipped.fix
    unauthorized = doctor.check_otlp(
        {
            "url": "http://c:4318",
            "status": 401,
            "body": "Unauthorized",
            "token_error": "Secret store/traces-otlp-token (key token) not found",
        }
    )
    assert unauthorized.status == FAIL and "bearer token" in unauthorized.summary
    assert "spec.security.auth" in unauthorized.fix
    assert (
        "bearer token (spec.security.auth): Secret store/traces-otlp-token (key token) not found"
        in (unauthorized.evidence)
    )


class Secrets:
    """``kube.get`` for Secrets only: ``{name: data}`` (base64 values, as the API returns them)."""

    def __init__(self, data: dict[str, dict[str, str]], refuse: bool = False) -> None:
        self.data, self.refuse = data, refuse

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        assert (kind, namespace) == ("Secret", NS)
        if self.refuse:
            raise InspectError(
                "the API server refused to get Secret store/traces-otlp-token (403 Forbidden)"
            )
        return {"data": self.data[name]} if name in self.data else None


def test_collector_token_comes_from_the_pipelines_token_secret() -> None:
    spec = parse_pipeline({})  # auth on by default: the generated Secret
    generated = Secrets({"traces-otlp-token": {"token": "c2VjcmV0LXRva2Vu"}})
    assert doctor.collector_token(generated, NS, pipeline(), spec) == ("secret-token", "")
    own = parse_pipeline({"security": {"auth": {"tokenSecretRef": {"name": "mine", "key": "t"}}}})
    own_secret = Secrets({"mine": {"t": "b3duCg=="}})  # "own\n": the trailing newline is dropped
    assert doctor.collector_token(own_secret, NS, pipeline(), own) == ("own", "")
    assert doctor.collector_token(Secrets({}), NS, pipeline(), spec) == (
        None,
        "Secret store/traces-otlp-token (key token) not found",
    )
    token, why = doctor.collector_token(Secrets({}, refuse=True), NS, pipeline(), spec)
    assert token is None and "403 Forbidden" in why
    off = parse_pipeline({"security": {"auth": {"enabled": False}}})
    assert doctor.collector_token(Secrets({}, refuse=True), NS, pipeline(), off) == (None, "")


def test_collector_trust_is_the_bundle_the_pipelines_clients_trust() -> None:
    """TLS (on by default): doctor verifies the collector with the bundle the members mount."""
    spec = parse_pipeline({})  # mode managed: NAME-tls-trust
    managed = Secrets({"traces-tls-trust": {"ca.crt": "LS0tLS1CRUdJTg=="}})
    assert doctor.collector_trust(managed, NS, pipeline(), spec) == ("-----BEGIN", "")
    own = parse_pipeline({"security": {"tls": {"secretName": "collector-tls"}}})  # mode secret
    assert doctor.collector_trust(
        Secrets({"collector-tls": {"ca.crt": "TUlORQ=="}}), NS, pipeline(), own
    ) == ("MINE", "")
    assert doctor.collector_trust(Secrets({}), NS, pipeline(), spec) == (
        None,
        "Secret store/traces-tls-trust (key ca.crt) not found",
    )
    ca, why = doctor.collector_trust(Secrets({}, refuse=True), NS, pipeline(), spec)
    assert ca is None and "403 Forbidden" in why
    off = parse_pipeline({"security": {"tls": {"enabled": False}}})
    assert doctor.collector_trust(Secrets({}, refuse=True), NS, pipeline(), off) == (None, "")


def test_pod_env_names_the_pods_that_lack_it() -> None:
    tp = pipeline()
    members = pods(tp)
    assert doctor.check_pod_env(cluster(), tp, members).status == PASS
    set_env(members[1], "OTEL_EXPORTER_OTLP_ENDPOINT", None)
    set_env(members[2], "OTEL_SERVICE_NAME", "wrong")
    check = doctor.check_pod_env(cluster(), tp, members)
    assert check.status == FAIL and check.summary.endswith(
        "2 of 3 member pods lack the pipeline's OTel environment: kv-1, kv-2"
    )
    assert check.evidence[0] == "kv-1: missing OTEL_EXPORTER_OTLP_ENDPOINT"
    assert check.evidence[1] == "kv-2: OTEL_SERVICE_NAME='wrong', expected 'kv'"
    assert "kubectl delete pod kv-1 kv-2" in check.fix
    # Members rendered untraced (the pipeline appeared later and they were never rolled).
    untraced = doctor.check_pod_env(cluster(), tp, pods(None))
    assert untraced.status == FAIL and "missing OTEL_EXPORTER_OTLP_ENDPOINT" in untraced.evidence[0]
    assert doctor.check_pod_env(cluster(), tp, []).status == FAIL


def test_sampling_production_is_coherent_and_head_sampling_under_production_fails() -> None:
    tp = pipeline()
    good = doctor.check_sampling(tp, configs(tp), pods(tp))
    assert good.status == PASS and good.summary.startswith("production")
    assert "pods kv-0, kv-1, kv-2: OTEL_TRACES_SAMPLER=parentbased_always_on" in good.evidence
    # A head-sampled production configuration rendered by hand: the members sample a ratio...
    head = pods(pipeline(sampling={"mode": "head", "ratio": 0.1}))
    check = doctor.check_sampling(tp, configs(tp), head)
    assert (
        check.status == FAIL
        and "head sampling under production mode on kv-0, kv-1, kv-2" in check.summary
    )
    assert any("parentbased_traceidratio ratio 0.1" in line for line in check.evidence)
    # ... or the collector has no tail sampling.
    no_tail = configs(tp)
    for config in no_tail.values():
        config["service"]["pipelines"]["traces"]["processors"].remove("tail_sampling")
    check = doctor.check_sampling(tp, no_tail, pods(tp))
    assert check.status == FAIL and "no collector config tail-samples" in check.summary
    # ... or tail sampling without the errors policy.
    no_errors = configs(tp)
    for config in no_errors.values():
        policies = config["processors"]["tail_sampling"]["policies"]
        policies[:] = [p for p in policies if p["type"] != "status_code"]
    assert "no status_code ERROR policy" in doctor.check_sampling(tp, no_errors, pods(tp)).summary


def test_sampling_head_mode_warns_development_passes_two_tier_is_read() -> None:
    head = pipeline(sampling={"mode": "head", "ratio": 0.2})
    check = doctor.check_sampling(head, configs(head), pods(head))
    assert check.status == WARN and "errors" in check.summary and "production" in check.fix
    dev = pipeline(sampling={"mode": "development"})
    assert doctor.check_sampling(dev, configs(dev), pods(dev)).status == PASS
    two = pipeline(collector={"replicas": 2})
    assert set(configs(two)) == {"traces-collector", "traces-collector-sampling"}
    check = doctor.check_sampling(two, configs(two), pods(two))
    assert check.status == PASS
    assert any(
        line.startswith("ConfigMap traces-collector-sampling: traces pipeline")
        and "errors(status_code)" in line
        for line in check.evidence
    )


def test_resources_default_limit_fits_and_no_memory_limit_warns() -> None:
    for tp in (
        pipeline(),
        pipeline(sampling={"mode": "development"}),
        pipeline(collector={"replicas": 2}),
    ):
        check = doctor.check_resources(configs(tp), collector_deployments(tp), 3)
        assert check.status == PASS, check  # the operator's default memory limit (render.sizing)
    # a memory request of the user's own and no limit: the limiter measures the node
    tp = pipeline(collector={"resources": {"requests": {"memory": "1Gi"}}})
    assert (
        "limits"
        not in collector_deployments(tp)["traces-collector"]["spec"]["template"]["spec"][
            "containers"
        ][0]["resources"]
    )
    check = doctor.check_resources(configs(tp), collector_deployments(tp), 3)
    assert check.status == WARN and "no memory limit" in check.summary
    sized = pipeline(collector={"resources": {"limits": {"memory": "2Gi"}}})
    check = doctor.check_resources(configs(sized), collector_deployments(sized), 3)
    assert check.status == PASS, check
    assert any("memory limit 2048MiB: spike allowance 512MiB" in line for line in check.evidence)


def test_resources_fail_when_a_batch_exceeds_the_spike_allowance_or_order_is_wrong() -> None:
    small = pipeline(collector={"resources": {"limits": {"memory": "16Mi"}}})
    check = doctor.check_resources(configs(small), collector_deployments(small), 3)
    assert check.status == FAIL
    assert (
        "one batch (~8MiB) is larger than the memory limiter's spike allowance (4MiB of 16MiB)"
        in check.summary
    )
    assert "spec.collector.resources.limits.memory" in check.fix
    tp = pipeline(collector={"resources": {"limits": {"memory": "2Gi"}}})
    broken = configs(tp)
    procs = broken["traces-collector"]["service"]["pipelines"]["traces"]["processors"]
    procs.remove("memory_limiter")
    procs.insert(0, procs.pop())  # batch first
    check = doctor.check_resources(broken, collector_deployments(tp), 3)
    assert check.status == FAIL and "no memory_limiter" in check.summary
    assert any("batch is not the last processor" in line for line in check.evidence)
    spiky = configs(tp)
    spiky["traces-collector"]["processors"]["memory_limiter"].update(
        limit_percentage=95, spike_limit_percentage=96
    )
    check = doctor.check_resources(spiky, collector_deployments(tp), 3)
    assert "limit_percentage 95 leaves the Go runtime no room" in check.summary
    assert any("spike_limit_percentage 96 is not below" in line for line in check.evidence)


def test_spans_per_trace_is_the_coordinator_and_one_per_replica_call() -> None:
    assert [doctor.spans_per_trace(n) for n in (1, 3, 5)] == [2, 4, 6]


def test_resources_warn_when_the_tail_buffer_cannot_fit() -> None:
    tp = pipeline(collector={"resources": {"limits": {"memory": "256Mi"}}})
    check = doctor.check_resources(configs(tp), collector_deployments(tp), 3)
    assert (
        check.status == WARN
        and "a full tail-sampling buffer (~195MiB) exceeds the soft limit (141MiB)" in check.summary
    )
    assert any(
        "num_traces 50000 x 4 spans (replication factor 3): up to ~195MiB" in line
        for line in check.evidence
    )
    # the buffer is sized by the cluster's replication factor: at 1, a trace is 2 spans and fits
    check = doctor.check_resources(configs(tp), collector_deployments(tp), 1)
    assert check.status == PASS, check
    assert any(
        "num_traces 50000 x 2 spans (replication factor 1): up to ~98MiB" in line
        for line in check.evidence
    )


def test_canary() -> None:
    base = {
        "trace_id": "ab" * 16,
        "service": "kvtrace-doctor",
        "collector": "http://c:4318",
        "jaeger": "http://j:16686",
        "timeout": 21.0,
    }
    assert (
        doctor.check_canary({**base, "found": True, "waited": 1.5}).summary
        == "found in Jaeger after 1.5s"
    )
    lost = doctor.check_canary({**base, "found": False, "waited": 21.0})
    assert lost.status == FAIL and "not in Jaeger after 21s" in lost.summary
    down = doctor.check_canary(
        {
            **base,
            "found": False,
            "waited": 21.0,
            "jaeger_error": "Connection refused",
            "jaeger_not_ready": "Deployment traces-jaeger: no ready replica",
        }
    )
    assert down.status == FAIL and "cannot query Jaeger" in down.summary
    assert "Deployment traces-jaeger: no ready replica" in down.evidence
    assert doctor.check_canary({**base, "send_error": "HTTP 503"}).status == FAIL
    assert doctor.check_canary({"skipped": "--no-canary"}).status == SKIP


def test_render_and_exit_status() -> None:
    checks = [
        doctor.Check("a", PASS, "fine", ["e1"]),
        doctor.Check("b", FAIL, "broken", ["e2"], "do this"),
        doctor.Check("c", SKIP, "not verified", [], "pass --jaeger"),
    ]
    text = doctor.render(checks)
    assert text.splitlines() == [
        "[PASS] a: fine",
        "       e1",
        "[FAIL] b: broken",
        "       e2",
        "       fix: do this",
        "[SKIP] c: not verified",
        "       fix: pass --jaeger",
        "1 passed, 1 failed, 0 warnings, 1 skipped (not verified)",
    ]
    assert doctor.failed(checks) and not doctor.failed(checks[:1] + checks[2:])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("1e9", 10**9),
        ("100", 100),
        ("1.5Gi", 3 * 2**29),
        ("x", None),
    ],
)
def test_quantity(text: str, value: int | None) -> None:
    assert doctor.quantity_bytes(text) == value


def test_canary_timing_follows_the_pipeline() -> None:
    assert doctor.canary_timeout_s(pipeline(), None) == 30.0  # decisionWait 10s + 20s
    assert doctor.canary_timeout_s(pipeline(sampling={"mode": "head"}), None) == 20.0
    assert doctor.canary_timeout_s(pipeline(), "5s") == 5.0
    assert doctor.canary_duration_ns(pipeline(sampling={"latencyThreshold": "1s"})) == 1_100_000_000
    with pytest.raises(InspectError, match="--canary-timeout: expected a duration"):
        doctor.canary_timeout_s(pipeline(), "soon")


def test_json_output() -> None:
    import json

    checks = [doctor.Check("a", PASS, "fine"), doctor.Check("b", FAIL, "broken", ["e"], "fix it")]
    data = json.loads(doctor.render_json(checks))
    assert data["failed"] is True
    assert data["checks"][1] == {
        "name": "b",
        "status": FAIL,
        "summary": "broken",
        "evidence": ["e"],
        "fix": "fix it",
    }
