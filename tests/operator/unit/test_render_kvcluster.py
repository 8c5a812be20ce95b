"""render_kvcluster: every child of a KVCluster, parametrized over the spec space."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import env_map, kvcluster, one, pipeline, validate_k8s

from kvnode.process.config import resolve
from kvtrace.cli import build_parser
from kvtrace_operator.render import checksum, max_unavailable, quorum, render_kvcluster
from kvtrace_operator.render.labels import CHECKSUM_ANNOTATION

pytestmark = pytest.mark.unit

KINDS = [
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Service",
    "StatefulSet",
    "PodDisruptionBudget",
    "NetworkPolicy",
]
STANDARD = {
    "app.kubernetes.io/name": "kvcluster",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "kvnode",
    "app.kubernetes.io/part-of": "kvtrace",
    "app.kubernetes.io/managed-by": "kvtrace-operator",
}

SPECS: list[dict[str, Any]] = [
    {},
    {"replicas": 1, "replicationFactor": 1},
    {"replicas": 5, "replicationFactor": 5, "consistency": {"read": "one", "write": "all"}},
    {
        "replicas": 7,
        "replicationFactor": 3,
        "storage": {"size": "20Gi", "storageClassName": "fast"},
    },
    {
        "image": "registry.local/kvnode:dev",
        "imagePullPolicy": "Always",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
    },
    {"antiEntropy": {"interval": "30s"}, "tracing": {"serviceName": "orders-kv"}},
    {"antiEntropy": {"interval": "1h30m"}},
    {
        "scheduling": {
            "podAntiAffinity": "required",
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "kv", "effect": "NoSchedule"}
            ],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"a": "b"}},
                }
            ],
            "priorityClassName": "high",
        }
    },
    {"scheduling": {"podAntiAffinity": "none"}},
    {
        "scheduling": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "kv", "operator": "Exists"}]}
                        ]
                    }
                }
            }
        }
    },
]
PIPELINES: list[dict[str, Any] | None] = [
    None,
    pipeline(),
    pipeline(sampling={"mode": "head", "ratio": 0.25}),
    pipeline(sampling={"mode": "development"}),
    pipeline(sampling={"mode": "development"}, redaction={"hashAttributes": []}),
]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    "tp", PIPELINES, ids=["untraced", "production", "head", "development", "raw-keys"]
)
@pytest.mark.parametrize("spec", SPECS)
class TestRenderKVCluster:
    def render(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> list[dict[str, Any]]:
        return render_kvcluster(kvcluster(**spec), tp)

    def test_kinds_in_apply_order(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        # A cluster traced by a pipeline with auth (the default) gets its own OTLP token Secret
        # first, then its clients' token Secret (KV auth on by default).
        assert [obj["kind"] for obj in self.render(spec, tp)] == (["Secret"] if tp else []) + [
            "Secret"
        ] + KINDS

    def test_valid_kubernetes_objects(
        self, spec: dict[str, Any], tp: dict[str, Any] | None
    ) -> None:
        for obj in self.render(spec, tp):
            validate_k8s(obj)

    def test_metadata_labels_and_owner(
        self, spec: dict[str, Any], tp: dict[str, Any] | None
    ) -> None:
        for obj in self.render(spec, tp):
            metadata = obj["metadata"]
            assert metadata["namespace"] == "store"
            component = {
                "demo-otlp-client-token": "otlp-client-token",
                "demo-kv-client-token": "kv-client-token",
            }.get(metadata["name"], "kvnode")
            assert metadata["labels"] == {**STANDARD, "app.kubernetes.io/component": component}
            assert metadata["ownerReferences"] == [
                {
                    "apiVersion": "kvtrace.dev/v1alpha1",
                    "kind": "KVCluster",
                    "name": "demo",
                    "uid": "uid-kvc",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]

    def test_statefulset(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        sts = one(self.render(spec, tp), "StatefulSet")["spec"]
        assert sts["replicas"] == spec.get("replicas", 3)
        assert sts["serviceName"] == "demo-peers"
        assert sts["podManagementPolicy"] == "OrderedReady"
        assert sts["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain",
            "whenScaled": "Delete",
        }
        assert sts["updateStrategy"]["type"] == "RollingUpdate"
        selector = sts["selector"]["matchLabels"]
        assert selector.items() <= sts["template"]["metadata"]["labels"].items()
        [claim] = sts["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["resources"]["requests"]["storage"] == spec.get("storage", {}).get(
            "size", "1Gi"
        )
        assert claim["spec"].get("storageClassName") == spec.get("storage", {}).get(
            "storageClassName"
        )

    def test_node_container_contract(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        node = container(self.render(spec, tp))
        assert node["command"] == ["opentelemetry-instrument", "kvtrace", "node", "serve"]
        consistency = {"read": "quorum", "write": "quorum", **spec.get("consistency", {})}
        args = node["args"]
        assert args[:5] == [
            "--id=$(POD_NAME)",
            "--client-addr=0.0.0.0:7070",
            "--peer-addr=0.0.0.0:7071",
            "--peers-file=/etc/kvnode/peers",
            "--data-dir=/var/lib/kvnode",
        ]
        assert f"--replication-factor={spec.get('replicationFactor', 3)}" in args
        strongest = max(consistency.values(), key=["one", "quorum", "all"].index)
        assert f"--consistency={strongest}" in args
        interval = {"1h30m": "5400s"}.get(
            spec.get("antiEntropy", {}).get("interval", "10m"),
            spec.get("antiEntropy", {}).get("interval", "10m"),
        )
        assert f"--anti-entropy-interval={interval}" in args
        raw = tp is not None and tp["spec"].get("redaction", {}).get("hashAttributes") == []
        assert ("--trace-raw-keys=true" in args) == raw
        assert [(p["name"], p["containerPort"]) for p in node["ports"]] == [
            ("client", 7070),
            ("peer", 7071),
        ]
        # TLS and client tokens by default (docs/security.md, The KV cluster): HTTPS probes.
        assert args[-4:] == [
            "--tls-cert-file=/etc/kvnode-tls/tls.crt",
            "--tls-key-file=/etc/kvnode-tls/tls.key",
            "--tls-ca-file=/etc/kvnode-trust/ca.crt",
            "--auth-token-dir=/etc/kvnode-tokens",
        ]
        assert node["livenessProbe"]["httpGet"] == {
            "path": "/healthz",
            "port": "client",
            "scheme": "HTTPS",
        }
        assert node["readinessProbe"]["httpGet"] == {
            "path": "/readyz",
            "port": "client",
            "scheme": "HTTPS",
        }
        assert env_map(node)["POD_NAME"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
        }
        mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
        # A traced member trusts its pipeline's CA bundle (TLS on by default, docs/security.md).
        trust = {} if tp is None else {"/etc/kvtrace-telemetry": "telemetry-ca"}
        secured = {
            "/etc/kvnode-tls": "serving-cert",
            "/etc/kvnode-trust": "kv-trust",
            "/etc/kvnode-tokens": "client-tokens",
        }
        assert mounts == {
            "/var/lib/kvnode": "data",
            "/etc/kvnode": "config",
            "/tmp": "tmp",
            **trust,
            **secured,
        }
        assert all("subPath" not in m for m in node["volumeMounts"])  # subPath mounts never refresh
        assert node["image"] == spec.get("image", "ghcr.io/kvtrace/kvnode:0.1.0")
        assert node.get("resources") == spec.get("resources")

    def test_the_node_accepts_the_rendered_command(
        self, spec: dict[str, Any], tp: dict[str, Any] | None
    ) -> None:
        """Parse the rendered args with the real `kvtrace node serve` parser and resolve them
        with the node's own config code, peers file included (docs/design.md section 3)."""
        objects = self.render(spec, tp)
        node = container(objects)
        args = [arg.replace("$(POD_NAME)", "demo-0") for arg in node["args"]]
        parsed = build_parser().parse_args([*node["command"][2:], *args])
        config = resolve(
            vars(parsed), {}, one(objects, "ConfigMap", "demo-config")["data"]["peers"]
        )
        assert config.id == "demo-0"
        assert [member.id for member in config.peers] == [
            f"demo-{i}" for i in range(spec.get("replicas", 3))
        ]
        assert config.replication_factor == spec.get("replicationFactor", 3)
        assert (config.client_port, config.peer_port, config.data_dir) == (
            7070,
            7071,
            "/var/lib/kvnode",
        )

    def test_restricted_security(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        pod = one(self.render(spec, tp), "StatefulSet")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = pod["containers"][0]["securityContext"]
        assert security == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
        assert pod["serviceAccountName"] == "demo" and pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # no KVNODE_* variables from Services

    def test_scheduling(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        pod = one(self.render(spec, tp), "StatefulSet")["spec"]["template"]["spec"]
        scheduling = spec.get("scheduling", {})
        for key in (
            "nodeSelector",
            "tolerations",
            "topologySpreadConstraints",
            "priorityClassName",
        ):
            assert pod.get(key) == scheduling.get(key)
        anti = pod.get("affinity", {}).get("podAntiAffinity")
        policy = scheduling.get("podAntiAffinity", "preferred")
        if policy == "none":
            assert anti is None
        elif policy == "required":
            [term] = anti["requiredDuringSchedulingIgnoredDuringExecution"]
            assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"
        else:
            [term] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
            assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        if "affinity" in scheduling:
            assert pod["affinity"]["nodeAffinity"] == scheduling["affinity"]["nodeAffinity"]

    def test_services(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        objects = self.render(spec, tp)
        headless = one(objects, "Service", "demo-peers")["spec"]
        assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
        assert {p["name"]: p["port"] for p in headless["ports"]} == {"peer": 7071, "client": 7070}
        client = one(objects, "Service", "demo")["spec"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in client["ports"]] == [
            ("client", 7070, "client")
        ]

    def test_peers_configmap(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        configmap = one(self.render(spec, tp), "ConfigMap", "demo-config")
        lines = configmap["data"]["peers"].splitlines()
        assert len(lines) == spec.get("replicas", 3)
        assert lines[0] == "demo-0=demo-0.demo-peers.store.svc.cluster.local:7071"
        pod = one(self.render(spec, tp), "StatefulSet")["spec"]["template"]["spec"]
        assert {
            "name": "config",
            "configMap": {"name": "demo-config", "items": [{"key": "peers", "path": "peers"}]},
        } in pod["volumes"]

    def test_disruption_budget_keeps_a_quorum(
        self, spec: dict[str, Any], tp: dict[str, Any] | None
    ) -> None:
        pdb = one(self.render(spec, tp), "PodDisruptionBudget")["spec"]
        factor = spec.get("replicationFactor", 3)
        assert pdb["maxUnavailable"] == factor - (factor // 2 + 1)
        assert factor - pdb["maxUnavailable"] >= quorum(factor)
        assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"

    def test_network_policy(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        policy = one(self.render(spec, tp), "NetworkPolicy")["spec"]
        client_rule, peer_rule = policy["ingress"]
        assert client_rule == {"ports": [{"protocol": "TCP", "port": 7070}]}
        assert peer_rule["ports"] == [{"protocol": "TCP", "port": 7071}]
        assert peer_rule["from"] == [{"podSelector": policy["podSelector"]}]
        assert policy["policyTypes"] == ["Ingress"]

    def test_tracing_environment(self, spec: dict[str, Any], tp: dict[str, Any] | None) -> None:
        env = env_map(container(self.render(spec, tp)))
        if tp is None:
            assert env["OTEL_SDK_DISABLED"] == "true"
            assert not any(name.startswith("OTEL_") and name != "OTEL_SDK_DISABLED" for name in env)
            return
        assert "OTEL_SDK_DISABLED" not in env
        assert env["OTEL_SERVICE_NAME"] == spec.get("tracing", {}).get("serviceName", "demo")
        assert (
            env["OTEL_EXPORTER_OTLP_ENDPOINT"]
            == "https://traces-collector.store.svc.cluster.local:4318"
        )
        assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == "/etc/kvtrace-telemetry/ca.crt"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


class TestQuorumMath:
    @pytest.mark.parametrize(
        ("factor", "expected_quorum", "expected_unavailable"),
        [(1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (6, 4, 2), (7, 4, 3)],
    )
    def test_max_unavailable(
        self, factor: int, expected_quorum: int, expected_unavailable: int
    ) -> None:
        assert quorum(factor) == expected_quorum
        assert max_unavailable(factor) == expected_unavailable


class TestConfigChecksum:
    def annotation(self, cluster: dict[str, Any], tp: dict[str, Any] | None = None) -> str:
        objects = render_kvcluster(cluster, tp)
        return one(objects, "StatefulSet")["spec"]["template"]["metadata"]["annotations"][
            CHECKSUM_ANNOTATION
        ]

    def test_is_a_sha256(self) -> None:
        value = self.annotation(kvcluster())
        assert len(value) == 64 and int(value, 16) >= 0

    @pytest.mark.parametrize(
        "change",
        [
            {"replicationFactor": 1},
            {"consistency": {"read": "all"}},
            {"antiEntropy": {"interval": "1m"}},
            {"tracing": {"serviceName": "other"}},
        ],
    )
    def test_changes_with_config(self, change: dict[str, Any]) -> None:
        tp = pipeline()
        assert self.annotation(kvcluster(**change), tp) != self.annotation(kvcluster(), tp)

    @pytest.mark.parametrize(
        "tp",
        [
            pipeline(sampling={"mode": "head"}),
            None,
            pipeline(sampling={"mode": "development"}, redaction={"hashAttributes": []}),
        ],
    )
    def test_changes_with_pipeline(self, tp: dict[str, Any] | None) -> None:
        assert self.annotation(kvcluster(), tp) != self.annotation(kvcluster(), pipeline())

    @pytest.mark.parametrize("replicas", [4, 5, 9])
    def test_not_with_replicas_or_peers(self, replicas: int) -> None:
        before, after = (
            render_kvcluster(kvcluster(), None),
            render_kvcluster(kvcluster(replicas=replicas), None),
        )
        assert one(before, "ConfigMap")["data"]["peers"] != one(after, "ConfigMap")["data"]["peers"]
        assert self.annotation(kvcluster(replicas=replicas)) == self.annotation(kvcluster())

    def test_checksum_ignores_key_order(self) -> None:
        assert checksum({"a": 1, "b": [1, {"c": 2, "d": 3}]}) == checksum(
            {"b": [1, {"d": 3, "c": 2}], "a": 1}
        )


def test_without_uid_children_have_no_owner_reference() -> None:
    for obj in render_kvcluster(kvcluster(uid=None), None):
        assert "ownerReferences" not in obj["metadata"]
