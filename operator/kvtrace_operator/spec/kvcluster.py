"""The typed spec of a KVCluster: ``parse_kvcluster`` applies the CRD's defaults once
(``spec.defaults``) and reads every field into frozen dataclasses. Builders read fields of
``KVClusterSpec``; nobody below re-defaults. Imports nothing of the operator above ``spec``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvtrace_operator.spec.common import TLS, TokenHolder
from kvtrace_operator.spec.defaults import apply_defaults_kvcluster
from kvtrace_operator.spec.durations import Duration
from kvtrace_operator.spec.errors import SpecError
from kvtrace_operator.spec.fields import Fields
from kvtrace_operator.spec.quantities import Quantity

CONSISTENCY_LEVELS = ("one", "quorum", "all")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
ANTI_AFFINITY = ("preferred", "required", "none")
CLIENT_ACCESS = ("all", "labelled")


@dataclass(frozen=True)
class Consistency:
    read: str
    write: str


@dataclass(frozen=True)
class Storage:
    size: Quantity
    storage_class_name: str | None


@dataclass(frozen=True)
class Scheduling:
    """Placement; the Kubernetes values (``affinity`` and the lists) are copied verbatim."""

    pod_anti_affinity: str
    affinity: dict[str, Any] | None
    node_selector: dict[str, str] | None
    tolerations: list[dict[str, Any]] | None
    topology_spread_constraints: list[dict[str, Any]] | None
    priority_class_name: str | None


@dataclass(frozen=True)
class KVAuth:
    enabled: bool
    clients: tuple[TokenHolder, ...]


@dataclass(frozen=True)
class KVSecurity:
    auth: KVAuth
    tls: TLS


@dataclass(frozen=True)
class KVClusterSpec:
    """A KVCluster's spec with every default applied. ``image`` None: the operator-wide default
    image (``render.images``); ``pipeline_name`` None: untraced."""

    replicas: int
    image: str | None
    image_pull_policy: str
    replication_factor: int
    consistency: Consistency
    storage: Storage
    resources: dict[str, Any] | None
    anti_entropy_interval: Duration
    pipeline_name: str | None
    service_name: str | None
    scheduling: Scheduling
    network_policy_enabled: bool
    client_access: str
    security: KVSecurity


def _scheduling(fields: Fields) -> Scheduling:
    return Scheduling(
        pod_anti_affinity=fields.enum("podAntiAffinity", ANTI_AFFINITY),
        affinity=fields.kubernetes("affinity"),
        node_selector=fields.string_map("nodeSelector"),
        tolerations=fields.kubernetes("tolerations"),
        topology_spread_constraints=fields.kubernetes("topologySpreadConstraints"),
        priority_class_name=fields.opt_string("priorityClassName"),
    )


def _security(fields: Fields) -> KVSecurity:
    auth = fields.obj("auth")
    clients = TokenHolder.read_all(auth, "clients")
    return KVSecurity(KVAuth(auth.boolean("enabled"), clients), TLS.read(fields.obj("tls")))


def parse_kvcluster(spec: object) -> KVClusterSpec:
    """The typed, defaulted spec of a KVCluster (``spec``: the resource's ``spec``, None when
    it has none). SpecError naming the field path for a value of the wrong type."""
    if spec is not None and not isinstance(spec, dict):
        raise SpecError("spec", f"expected an object, got {type(spec).__name__}")
    fields = Fields(apply_defaults_kvcluster(spec), "spec")
    consistency, storage = fields.obj("consistency"), fields.obj("storage")
    tracing, network = fields.obj("tracing"), fields.obj("networkPolicy")
    ref = tracing.opt_obj("pipelineRef")
    return KVClusterSpec(
        replicas=fields.integer("replicas"),
        image=fields.opt_string("image"),
        image_pull_policy=fields.enum("imagePullPolicy", PULL_POLICIES),
        replication_factor=fields.integer("replicationFactor"),
        consistency=Consistency(
            consistency.enum("read", CONSISTENCY_LEVELS),
            consistency.enum("write", CONSISTENCY_LEVELS),
        ),
        storage=Storage(storage.quantity("size"), storage.opt_string("storageClassName")),
        resources=fields.kubernetes("resources"),
        anti_entropy_interval=fields.obj("antiEntropy").duration("interval"),
        pipeline_name=(ref.opt_string("name") or None) if ref is not None else None,
        service_name=tracing.opt_string("serviceName"),
        scheduling=_scheduling(fields.obj("scheduling")),
        network_policy_enabled=network.boolean("enabled"),
        client_access=network.enum("clientAccess", CLIENT_ACCESS),
        security=_security(fields.obj("security")),
    )
