"""Where a span comes from: the collector's ``resource_detection`` and ``k8s_attributes``
processors (``spec.collector.resourceDetection`` and ``spec.collector.kubernetesAttributes``),
parsed once into typed settings, and what the collector's pod needs for them: the node name
from the downward API, a ServiceAccount token, and the least RBAC the operator can grant (a
Role in the pipeline's namespace).

Both processors reach the API server with ``auth_type: kubeConfig``, which loads
``$KUBECONFIG`` when one is set and otherwise falls back to the pod's ServiceAccount, as
kubectl does: the operator never sets ``KUBECONFIG``, so in a cluster this is the in-cluster
ServiceAccount; the local stack's pod runner sets it to the local cluster's kubeconfig.

Pure: imports neither kopf nor a Kubernetes client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvtrace_operator.render import names
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.images import COLLECTOR_IMAGE
from kvtrace_operator.render.labels import child_metadata
from kvtrace_operator.spec import PipelineSpec
from kvtrace_operator.spec.pipeline import AttributeFrom

FIELD = "spec.collector.resourceDetection"
ATTRIBUTES_FIELD = "spec.collector.kubernetesAttributes"
NODE_NAME_ENV = "K8S_NODE_NAME"
AUTH_TYPE = "kubeConfig"  # $KUBECONFIG if set, else the pod's ServiceAccount (module docstring)
# The k8snode detector's v0.161 name is k8s_api; k8snode is its older, deprecated alias.
NODE_DETECTOR = "k8s_api"
NODE_DETECTOR_NAMES = ("k8snode", NODE_DETECTOR)
# Cloud detectors of the contrib processor that work in a Kubernetes pod, with the
# cloud.provider each reports (kvtrace doctor tells which ones found their cloud).
CLOUD_PROVIDERS = {
    "ec2": "aws",
    "ecs": "aws",
    "eks": "aws",
    "gcp": "gcp",
    "azure": "azure",
    "aks": "azure",
    "alibaba_ecs": "alibaba_cloud",
    "tencent_cvm": "tencent_cloud",
    "ibmcloud_classic": "ibm_cloud",
    "ibmcloud_vpc": "ibm_cloud",
    "nova": "openstack",
    "oraclecloud": "oracle_cloud",
    "scaleway": "scaleway",
    "upcloud": "upcloud",
    "vultr": "vultr",
    "hetzner": "hetzner",
    "digitalocean": "digitalocean",
}
# Not offered: akamai's client fetches a metadata token when the collector builds it, so off
# Akamai the collector exits (and `otelcol validate` dials 169.254.169.254).
DETECTORS = ("env", "system", *NODE_DETECTOR_NAMES, *CLOUD_PROVIDERS)
# Detectors that read the collector's node from the API server (its name from the downward
# API): k8s_api always, eks when the instance metadata service is closed to pods (the EKS
# default). eks builds an in-cluster client even to find it is not on EKS.
NODE_READERS = (NODE_DETECTOR, "eks")
# Detectors our distribution (tools/otelcol/builder-config.yaml) cannot run as upstream's, and
# why: the operator refuses them with it (the contrib image runs them). Three libraries are
# stand-ins that detect nothing (the module proxy it is built from does not serve them); the
# EC2 API client is left out to keep the image within its budget (ec2's instance metadata path
# needs no API client; the operator never asks ec2 for tags).
_STAND_IN = "is a stand-in that detects nothing in {image}"
CONTRIB_ONLY_DETECTORS = {
    "vultr": _STAND_IN,
    "hetzner": _STAND_IN,
    "ibmcloud_vpc": _STAND_IN,
    "eks": (
        "reads its instance through the EC2 API where the pod cannot reach the instance "
        "metadata service (EKS's default), and {image} leaves the EC2 API client out to stay "
        "small (ec2 reads the instance metadata service without it)"
    ),
}
DISTRIBUTION = COLLECTOR_IMAGE.rsplit("/", 1)[-1].split(":")[0]  # otelcol-kvtrace, any registry
SCOPES = ("namespace", "cluster")
# What k8s_attributes may extract here: the pod and its owners, nothing that needs a
# cluster-wide read (k8s.node.uid, k8s.cluster.uid, k8s.deployment.uid, k8s.cronjob.uid).
METADATA = (
    *("k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid", "k8s.pod.hostname"),
    *("k8s.pod.start_time", "k8s.pod.ip", "k8s.node.name", "k8s.deployment.name"),
    *("k8s.replicaset.name", "k8s.replicaset.uid", "k8s.statefulset.name"),
    *("k8s.statefulset.uid", "k8s.daemonset.name", "k8s.daemonset.uid", "k8s.job.name"),
    *("k8s.job.uid", "k8s.cronjob.name", "k8s.container.name", "container.id"),
    *("container.image.name", "container.image.tag", "service.namespace", "service.name"),
    *("service.version", "service.instance.id"),
)
RBAC_API = "rbac.authorization.k8s.io/v1"
SOURCES = ("pod", "deployment", "statefulset", "namespace")


@dataclass(frozen=True)
class FieldExtract:
    """One label or annotation that becomes a resource attribute."""

    key: str
    tag_name: str
    source: str  # pod, deployment, statefulset or namespace


@dataclass(frozen=True)
class Environment:
    """``spec.collector.resourceDetection`` and ``.kubernetesAttributes``, defaulted."""

    namespace: str
    detectors: tuple[str, ...]  # as rendered: k8snode is k8s_api
    override: bool
    timeout: str
    attributes: bool  # k8s_attributes runs
    scope: str
    metadata: tuple[str, ...]
    labels: tuple[FieldExtract, ...]
    annotations: tuple[FieldExtract, ...]

    @property
    def node(self) -> bool:
        """A detector reads the collector's node (name in K8S_NODE_NAME, get on nodes)."""
        return bool(set(NODE_READERS) & set(self.detectors))

    @property
    def uses_api(self) -> bool:
        """The collector calls the API server (so it needs its ServiceAccount token)."""
        return self.node or self.attributes


def _extracts(items: tuple[AttributeFrom, ...], field: str) -> tuple[FieldExtract, ...]:
    found = []
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        for key, value in (("key", item.key), ("tagName", item.tag_name)):
            if not value:
                raise SpecError(f"{where}.{key}", f"expected a non-empty string, got {value!r}")
        source = item.source or "pod"
        if source not in SOURCES:
            raise SpecError(
                f"{where}.from", f"expected one of {', '.join(SOURCES)}, got {source!r}"
            )
        found.append(FieldExtract(item.key, item.tag_name, source))
    return tuple(found)


def environment(
    pipeline: dict[str, Any], spec: PipelineSpec, image: str | None = None
) -> Environment:
    """The environment settings of a typed spec; SpecError names the field that is wrong.
    ``image``: the collector's image when known (the pipeline's own, else the operator's
    --collector-image, as render_pipeline resolves it), checked against the detectors."""
    collector = spec.collector
    attributes = collector.kubernetes_attributes
    listed = list(collector.detectors)
    for index, detector in enumerate(listed):
        if detector not in DETECTORS:
            raise SpecError(
                f"{FIELD}.detectors[{index}]",
                f"expected one of {', '.join(DETECTORS)}, got {detector!r}",
            )
    rendered = [NODE_DETECTOR if d in NODE_DETECTOR_NAMES else d for d in listed]
    if len(set(rendered)) != len(rendered):
        raise SpecError(
            f"{FIELD}.detectors",
            f"expected each detector once (k8snode and k8s_api are one detector), got {listed}",
        )
    for index, name in enumerate(attributes.metadata):
        if name not in METADATA:
            raise SpecError(
                f"{ATTRIBUTES_FIELD}.metadata[{index}]",
                f"expected one of {', '.join(METADATA)}, got {name!r}",
            )
    if attributes.scope not in SCOPES:
        raise SpecError(
            f"{ATTRIBUTES_FIELD}.scope",
            f"expected one of {', '.join(SCOPES)}, got {attributes.scope!r}",
        )
    env = Environment(
        namespace=names.namespace_of(pipeline),
        detectors=tuple(rendered),
        override=collector.detection_override,
        timeout=collector.detection_timeout.text,
        attributes=attributes.enabled,
        scope=attributes.scope,
        metadata=attributes.metadata,
        labels=_extracts(attributes.labels, f"{ATTRIBUTES_FIELD}.labels"),
        annotations=_extracts(attributes.annotations, f"{ATTRIBUTES_FIELD}.annotations"),
    )
    _check_scope(env)
    chosen = image or collector.image
    if chosen:  # unset: the operator's --collector-image, not known here
        _check_image(env, chosen)
    return env


def _check_scope(env: Environment) -> None:
    for kind, extracts in (("labels", env.labels), ("annotations", env.annotations)):
        for index, extract in enumerate(extracts):
            if extract.source == "namespace" and env.scope != "cluster":
                raise SpecError(
                    f"{ATTRIBUTES_FIELD}.{kind}[{index}].from",
                    "namespace reads Namespaces, which are cluster-scoped: set "
                    f"{ATTRIBUTES_FIELD}.scope to cluster (and grant the read, docs/crds.md)",
                )


def _check_image(env: Environment, image: str) -> None:
    """Our distribution cannot run the detectors whose libraries it replaces or leaves out
    (:data:`CONTRIB_ONLY_DETECTORS`): refuse them there rather than run a detector that
    silently finds nothing or only part of what it should."""
    if image.rsplit("/", 1)[-1].split("@")[0].split(":")[0] != DISTRIBUTION:
        return
    for index, detector in enumerate(env.detectors):
        if detector in CONTRIB_ONLY_DETECTORS:
            why = CONTRIB_ONLY_DETECTORS[detector].format(image=image)
            raise SpecError(
                f"{FIELD}.detectors[{index}]",
                f"{detector} {why}: set "
                "spec.collector.image to otel/opentelemetry-collector-contrib:0.161.0 "
                "(docs/install.md, Which collector image)",
            )


def resource_detection(env: Environment) -> dict[str, Any]:
    """The ``resource_detection`` processor: the host name from the OS (the pod's name); the
    node's name only: its uid would sit beside the sending pod's own ``k8s.node.name`` (set
    first by k8s_attributes) on spans from pods of other nodes, and ``k8s.cluster.uid`` would
    need reading kube-system."""
    config: dict[str, Any] = {
        "detectors": list(env.detectors),
        "timeout": env.timeout,
        "override": env.override,
    }
    if "system" in env.detectors:
        config["system"] = {"hostname_sources": ["os"]}
    if "eks" in env.detectors:
        config["eks"] = {"node_from_env_var": NODE_NAME_ENV}
    if NODE_DETECTOR in env.detectors:
        config[NODE_DETECTOR] = {
            "auth_type": AUTH_TYPE,
            "node_from_env_var": NODE_NAME_ENV,
            "resource_attributes": {
                "k8s.cluster.uid": {"enabled": False},
                "k8s.node.uid": {"enabled": False},
            },
        }
    return config


def _extract_config(extract: FieldExtract) -> dict[str, str]:
    return {"tag_name": extract.tag_name, "key": extract.key, "from": extract.source}


def k8s_attributes(env: Environment) -> dict[str, Any]:
    """The ``k8s_attributes`` processor as the upstream Helm chart's kubernetesAttributes
    preset configures it: the pod found by its k8s.pod.ip or k8s.pod.uid resource attribute,
    else by the connection's address (so it runs where applications connect, before any
    batching); ``filter.namespace`` with scope namespace, so a Role is enough."""
    config: dict[str, Any] = {
        "auth_type": AUTH_TYPE,
        "passthrough": False,
        "pod_association": [
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.ip"}]},
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]},
            {"sources": [{"from": "connection"}]},
        ],
        "extract": {"metadata": list(env.metadata)},
    }
    if env.labels:
        config["extract"]["labels"] = [_extract_config(item) for item in env.labels]
    if env.annotations:
        config["extract"]["annotations"] = [_extract_config(item) for item in env.annotations]
    if env.scope == "namespace":
        config["filter"] = {"namespace": env.namespace}
    return config


def edge_processors(env: Environment) -> dict[str, Any]:
    """``k8s_attributes`` first (the sending pod's own node, namespace and workload), then
    ``resource_detection`` (where the collector runs, only where the span has nothing yet)."""
    result: dict[str, Any] = {}
    if env.attributes:
        result["k8s_attributes"] = k8s_attributes(env)
    if env.detectors:  # none listed: no resource detection at all
        result["resource_detection"] = resource_detection(env)
    return result


def pod_env(env: Environment) -> list[dict[str, Any]]:
    """The node's name from the downward API, for the k8snode and eks detectors."""
    if not env.node:
        return []
    return [{"name": NODE_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]


def _reads(env: Environment) -> list[dict[str, Any]]:
    """What k8s_attributes reads: pods; namespaces only to extract their labels or
    annotations; the workloads whose labels or annotations it extracts. Owner names need
    nothing more: a deployment's name comes from its ReplicaSet's name, the others from the
    pod's owner references."""
    read = ["get", "list", "watch"]
    sources = {item.source for item in (*env.labels, *env.annotations)}
    core = ["pods", *(["namespaces"] if "namespace" in sources else [])]
    rules = [{"apiGroups": [""], "resources": core, "verbs": read}]
    workloads = sorted(f"{source}s" for source in sources & {"deployment", "statefulset"})
    if workloads:
        rules.append({"apiGroups": ["apps"], "resources": workloads, "verbs": read})
    return rules


def role_rules(env: Environment) -> list[dict[str, Any]]:
    """The Role the operator renders in the pipeline's namespace (scope namespace)."""
    return _reads(env) if env.attributes and env.scope == "namespace" else []


def cluster_rules(env: Environment) -> list[dict[str, Any]]:
    """What the cluster admin grants the collector's ServiceAccount in a ClusterRole (the
    operator holds no cluster-wide RBAC, so it never renders one): ``get`` on nodes for the
    k8snode and eks detectors; with scope cluster, k8s_attributes' reads in every namespace."""
    rules = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}] if env.node else []
    if env.attributes and env.scope == "cluster":
        rules += _reads(env)
    return rules


def rbac_objects(
    owner: dict[str, Any], name: str, component: str, env: Environment
) -> list[dict[str, Any]]:
    """The Role and RoleBinding of the collector's ServiceAccount ``name`` (scope namespace),
    or nothing. The operator can grant them: it holds these reads in its own namespaces."""
    rules = role_rules(env)
    if not rules:
        return []
    metadata = child_metadata(owner, name, component)
    return [
        {"apiVersion": RBAC_API, "kind": "Role", "metadata": metadata, "rules": rules},
        {
            "apiVersion": RBAC_API,
            "kind": "RoleBinding",
            "metadata": child_metadata(owner, name, component),
            "roleRef": {"apiGroup": RBAC_API.split("/")[0], "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": env.namespace}],
        },
    ]
