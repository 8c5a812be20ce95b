"""The CRDs on a real API server: they install, accept good resources, and reject malformed
ones with a message naming the offending field (server-side dry run: nothing is stored);
``kvtrace render``'s strict check (render.strict) says the same words for the same documents."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from kvtrace_operator.crds import schemas
from kvtrace_operator.render import strict

pytestmark = pytest.mark.controlplane


def kvc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "bad"},
        "spec": spec,
    }


def tp(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "bad"},
        "spec": spec,
    }


MALFORMED = [
    ("replicas-zero", kvc(replicas=0), "spec.replicas", "greater than or equal to 1"),
    ("replicas-too-many", kvc(replicas=101), "spec.replicas", "less than or equal to 100"),
    ("replicas-not-int", kvc(replicas="three"), "spec.replicas", "integer"),
    (
        "rf-above-replicas",
        kvc(replicas=3, replicationFactor=5),
        "spec.replicationFactor",
        "at most replicas",
    ),
    (
        "consistency-level",
        kvc(consistency={"read": "most"}),
        "spec.consistency.read",
        "Unsupported value",
    ),
    ("storage-size", kvc(storage={"size": "lots"}), "spec.storage.size", "should match"),
    (
        "anti-entropy-too-short",
        kvc(antiEntropy={"interval": "500ms"}),
        "spec.antiEntropy.interval",
        "at least 1s",
    ),
    (
        "anti-entropy-not-duration",
        kvc(antiEntropy={"interval": "ten minutes"}),
        "spec.antiEntropy.interval",
        "should match",
    ),
    (
        "pipeline-ref-without-name",
        kvc(tracing={"pipelineRef": {}}),
        "spec.tracing.pipelineRef.name",
        "Required value",
    ),
    (
        "anti-affinity-mode",
        kvc(scheduling={"podAntiAffinity": "always"}),
        "spec.scheduling.podAntiAffinity",
        "Unsupported value",
    ),
    ("pull-policy", kvc(imagePullPolicy="Sometimes"), "spec.imagePullPolicy", "Unsupported value"),
    (
        "unknown-sampling-mode",
        tp(sampling={"mode": "tail"}),
        "spec.sampling.mode",
        "Unsupported value",
    ),
    (
        "ratio-above-one",
        tp(sampling={"ratio": 1.5}),
        "spec.sampling.ratio",
        "less than or equal to 1",
    ),
    (
        "head-keeps-errors",
        tp(sampling={"mode": "head", "keepErrors": True}),
        "spec.sampling.keepErrors",
        "head sampling",
    ),
    (
        "retroactive-drops-errors",
        tp(sampling={"mode": "retroactive", "keepErrors": False}),
        "spec.sampling.keepErrors",
        "retroactive mode always keeps",
    ),
    (
        "retroactive-buffer-age-too-long",
        tp(sampling={"mode": "retroactive", "retroactive": {"bufferAge": "61s"}}),
        "spec.sampling.retroactive.bufferAge",
        "bufferAge must be at most 60s",
    ),
    (
        "retroactive-buffer-too-small",
        tp(sampling={"retroactive": {"bufferBytes": 1000}}),
        "spec.sampling.retroactive.bufferBytes",
        "greater than or equal to 1048576",
    ),
    (
        "latency-threshold",
        tp(sampling={"latencyThreshold": "fast"}),
        "spec.sampling.latencyThreshold",
        "should match",
    ),
    (
        "collector-replicas",
        tp(collector={"replicas": 0}),
        "spec.collector.replicas",
        "greater than or equal to 1",
    ),
    (
        "spike-above-limit",
        tp(collector={"memoryLimiter": {"limitPercentage": 80, "spikeLimitPercentage": 90}}),
        "spec.collector.memoryLimiter.spikeLimitPercentage",
        "must be below limitPercentage",
    ),
    (
        "jaeger-storage-type",
        tp(jaeger={"storage": {"type": "cassandra"}}),
        "spec.jaeger.storage.type",
        "Unsupported value",
    ),
    (
        "retention-too-short",
        tp(jaeger={"storage": {"retention": "30s"}}),
        "spec.jaeger.storage.retention",
        "at least 1m",
    ),
    (
        "archive-max-traces-zero",
        tp(jaeger={"archive": {"maxTraces": 0}}),
        "spec.jaeger.archive.maxTraces",
        "greater than or equal to 1",
    ),
    (
        "archive-enabled-not-a-boolean",
        tp(jaeger={"archive": {"enabled": "yes"}}),
        "spec.jaeger.archive.enabled",
        "boolean",
    ),
    (
        "archive-retention-malformed",
        tp(jaeger={"archive": {"retention": "1 month"}}),
        "spec.jaeger.archive.retention",
        "should match",
    ),
    (
        "archive-retention-too-short",
        tp(jaeger={"archive": {"retention": "30s"}}),
        "spec.jaeger.archive.retention",
        "at least 1m",
    ),
    (
        "archive-not-longer-than-badger-retention",
        tp(
            jaeger={
                "storage": {"type": "badger", "retention": "72h"},
                "archive": {"enabled": True, "retention": "48h"},
            }
        ),
        "spec.jaeger.archive.retention",
        "must be longer than storage.retention with badger storage",
    ),
    (
        "tenancy-without-tenants",
        tp(jaeger={"tenancy": {"enabled": True}}),
        "spec.jaeger.tenancy.tenants",
        "at least one tenant",
    ),
    (
        "raw-keys-in-production",
        tp(redaction={"hashAttributes": []}),
        "spec.redaction.hashAttributes",
        "kvstore.key",
    ),
    (
        "exporter-name",
        tp(exporters={"otlp": [{"name": "Bad_Name", "endpoint": "https://x:4317"}]}),
        "spec.exporters.otlp[0].name",
        "should match",
    ),
    (
        "exporter-without-endpoint",
        tp(exporters={"otlp": [{"name": "vendor"}]}),
        "spec.exporters.otlp[0].endpoint",
        "Required value",
    ),
    ("traces-go-nowhere", tp(jaeger={"enabled": False}), "spec.exporters", "nowhere to go"),
]


def render_errors(obj: dict[str, Any]) -> list[str]:
    """What `kvtrace render` says about ``obj``: the CRD check, offline."""
    return [
        str(error)
        for error in strict.check(obj, schemas()[(obj["apiVersion"], obj["kind"])]).errors
    ]


def dry_run_create(kubectl: Any, namespace: str, obj: dict[str, Any]) -> Any:
    return kubectl(
        "-n",
        namespace,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(obj),
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "obj", "field", "phrase"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_resource_is_rejected_naming_the_field(
    crds: list[str], kubectl: Any, case: str, obj: dict[str, Any], field: str, phrase: str
) -> None:
    proc = dry_run_create(kubectl, "default", obj)
    assert proc.returncode != 0, f"{case}: accepted, but should have been rejected"
    assert "is invalid" in proc.stderr, proc.stderr
    assert f"{field}:" in proc.stderr, f"{case}: the message does not name {field}: {proc.stderr}"
    assert phrase in proc.stderr, f"{case}: expected {phrase!r} in: {proc.stderr}"
    ours = render_errors(obj)
    assert ours, f"{case}: the API server rejects it, kvtrace render accepts it"
    for error in ours:  # kvtrace render's words are the API server's
        assert error in proc.stderr, f"{case}: render says {error!r}, the API server: {proc.stderr}"


@pytest.mark.parametrize(
    "obj",
    [
        kvc(),
        kvc(
            replicas=5,
            replicationFactor=3,
            consistency={"read": "one", "write": "all"},
            antiEntropy={"interval": "1m30s"},
            tracing={"pipelineRef": {"name": "traces"}},
        ),
        tp(),
        tp(
            sampling={"mode": "head", "ratio": 0.25},
            collector={"replicas": 3},
            jaeger={
                "storage": {"type": "badger", "retention": "24h"},
                "archive": {"enabled": True, "retention": "720h"},
                "tenancy": {"enabled": True, "tenants": ["a"]},
            },
        ),
        tp(
            sampling={"mode": "development"},
            jaeger={"enabled": False},
            redaction={"hashAttributes": []},
        ),
        tp(sampling={"mode": "retroactive", "retroactive": {"bufferAge": "2s500ms"}}),
    ],
    ids=[
        "kvcluster-minimal",
        "kvcluster-full",
        "pipeline-minimal",
        "pipeline-head-badger",
        "pipeline-dev",
        "pipeline-retroactive",
    ],
)
def test_good_resources_are_accepted_with_defaults(
    crds: list[str], kubectl: Any, obj: dict[str, Any]
) -> None:
    proc = kubectl(
        "-n",
        "default",
        "create",
        "--dry-run=server",
        "-o",
        "yaml",
        "-f",
        "-",
        input=yaml.safe_dump(obj),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stored = yaml.safe_load(proc.stdout)
    assert stored["kind"] == obj["kind"]
    if obj["kind"] == "KVCluster":  # schema defaults are filled in by the API server
        assert stored["spec"]["replicationFactor"] >= 1 and stored["spec"]["replicas"] >= 1


def test_crds_serve_the_scale_subresource_and_short_names(crds: list[str], kubectl: Any) -> None:
    resources = kubectl("api-resources", "--api-group=kvtrace.dev", "-o", "wide").stdout
    assert "kvclusters" in resources and "kvc" in resources
    assert "tracingpipelines" in resources and "tp" in resources
    categories = kubectl("get", "kvtrace", "-A").stdout + kubectl("get", "kvtrace", "-A").stderr
    assert "error" not in categories.lower()


# Documents with unknown fields (strict decoding) or several errors at once.
STRICT = [
    ("unknown-fields", kvc(replicaz=3, tracing={"pipelineref": {"name": "traces"}})),
    (
        "unknown-in-lists-and-metadata",
        {
            **tp(
                samplng={},
                exporters={"otlp": [{"name": "a", "endpoint": "x:4317", "protocl": "grpc"}]},
            ),
            "metadata": {"name": "bad", "labelz": {"a": "b"}},
        },
    ),
    (
        "several-errors",
        kvc(
            replicas=0,
            consistency={"read": "most"},
            storage={"size": "lots"},
            antiEntropy={"interval": "500ms"},
        ),
    ),
    (
        "quantity",
        kvc(resources={"requests": {"cpu": "lots", "memory": "1Gi"}, "limits": {"memory": "x"}}),
    ),
    (
        "quantity-pipeline",
        tp(
            collector={"resources": {"limits": {"memory": "lots"}}},
            jaeger={"resources": {"requests": {"cpu": "much"}}},
        ),
    ),
    (
        "duplicate-list-keys",
        tp(
            exporters={
                "otlp": [{"name": "a", "endpoint": "x:4317"}, {"name": "a", "endpoint": "y:4317"}]
            }
        ),
    ),
    ("type-error-blocks-rules", kvc(replicas="three", replicationFactor=5)),
    ("name", {**kvc(), "metadata": {"name": "Not-A-Label"}}),
]


def server_errors(stderr: str) -> list[str]:
    """The API server's errors: one per `* ` line when several, else the one after "invalid: ";
    the scale subresource's `accessor error` (kvtrace render checks no subresource) left out."""
    lines = [line[2:] for line in stderr.splitlines() if line.startswith("* ")]
    if not lines and " is invalid: " in stderr:
        lines = [stderr.split(" is invalid: ", 1)[1].strip()]
    return [line for line in lines if "accessor error" not in line]


@pytest.mark.parametrize(("case", "obj"), STRICT, ids=[s[0] for s in STRICT])
def test_render_reports_what_the_api_server_reports(
    crds: list[str], kubectl: Any, case: str, obj: dict[str, Any]
) -> None:
    proc = dry_run_create(kubectl, "default", obj)
    assert proc.returncode != 0, f"{case}: accepted by the API server"
    ours = render_errors(obj)
    server_unknown = set(re.findall(r'unknown field "([^"]+)"', proc.stderr))
    our_unknown = {error.split(":")[0] for error in ours if "unknown field" in error}
    assert our_unknown == server_unknown, proc.stderr
    if server_unknown:  # strict decoding fails first: the API server says nothing more
        return
    assert ours, f"{case}: the API server rejects it, kvtrace render accepts it: {proc.stderr}"
    for error in ours:
        assert error in proc.stderr, f"{case}: render says {error!r}, the API server: {proc.stderr}"
    assert len(server_errors(proc.stderr)) == len(ours), (ours, proc.stderr)
