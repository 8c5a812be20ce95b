"""Injection of a TracingPipeline's OpenTelemetry configuration into the user's own pods
(docs/injection.md): a pure function from a pod and the pipeline it asks for to the patched pod.

Annotations (on the pod template; docs/design.md section 6):

- ``kvtrace.dev/inject: PIPELINE`` or ``NAMESPACE/PIPELINE`` (``"false"``: not injected);
- ``kvtrace.dev/inject-python: "true"``, ``kvtrace.dev/inject-java: "true"``: a language
  agent, copied by an init container into an emptyDir (``PYTHONPATH`` / ``JAVA_TOOL_OPTIONS``);
- ``kvtrace.dev/restart-on-change: "true"``: the operator rolls the workload when the injected
  configuration of its pipeline changes (render/injection_workloads.py).

Every regular container gets the pipeline's standard ``OTEL_*`` environment (render/otel_env.py),
``OTEL_SERVICE_NAME`` from the owning workload, ``k8s.*`` resource attributes from the downward
API, the workload's own bearer token and the pipeline's CA bundle, both from the workload's
Secret in the pod's namespace (``WORKLOAD-KIND-otlp-workload``; the webhook creates it, the
operator keeps its CA copy current). Variables a container sets itself in ``env`` win.
Injecting an injected pod changes nothing (idempotent).

Pure and deterministic: never imports kopf or a Kubernetes client.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from typing import Any

from kvtrace.shared.api import MANAGED_BY
from kvtrace_operator.render import security
from kvtrace_operator.render import tls as tls_render
from kvtrace_operator.render.checksum import checksum
from kvtrace_operator.render.consumer_tokens import TOKEN_KEY, workload_secret_name
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images
from kvtrace_operator.render.labels import PART_OF
from kvtrace_operator.render.names import namespace_of
from kvtrace_operator.render.otel_env import env, exporter_env, field_env
from kvtrace_operator.render.podspec import container_security_context
from kvtrace_operator.render.validate import validate_pipeline
from kvtrace_operator.spec import PipelineSpec, parse_pipeline

INJECT = "kvtrace.dev/inject"
INJECT_PYTHON = "kvtrace.dev/inject-python"
INJECT_JAVA = "kvtrace.dev/inject-java"
RESTART_ON_CHANGE = "kvtrace.dev/restart-on-change"
# The workloads restart-on-change rolls (the workload webhook's kinds); a Job's template is
# immutable and a bare pod or ReplicaSet has no rollout: they are never read nor patched.
RESTART_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
REQUEST_ANNOTATIONS = (INJECT, INJECT_PYTHON, INJECT_JAVA, RESTART_ON_CHANGE)
# Written by the webhook on the pods it handled (read by `kvtrace status` and `kvtrace doctor`).
INJECTED = "kvtrace.dev/injected"  # NAMESPACE/PIPELINE
INJECTED_CHECKSUM = "kvtrace.dev/injected-checksum"  # of the injected configuration
INJECTION_ERROR = "kvtrace.dev/injection-error"  # why a pod asking for injection was not injected
# Set by the operator on the pod template of restart-on-change workloads.
RESTART_CHECKSUM = "kvtrace.dev/instrumentation-checksum"
OWN_ANNOTATIONS = (INJECTED, INJECTED_CHECKSUM, INJECTION_ERROR, RESTART_CHECKSUM)
# On the workload's Secret: which pipeline it is a consumer of, and for which workload.
PIPELINE_LABEL = "kvtrace.dev/pipeline"
PIPELINE_NAMESPACE_LABEL = "kvtrace.dev/pipeline-namespace"
WORKLOAD_ANNOTATION = "kvtrace.dev/workload"

PYTHON_VOLUME = "kvtrace-python-agent"
PYTHON_DIR = "/otel-auto-instrumentation-python"
PYTHON_AGENT_SOURCE = "/autoinstrumentation"  # in the agent image
PYTHON_PATH = f"{PYTHON_DIR}/opentelemetry/instrumentation/auto_instrumentation:{PYTHON_DIR}"
JAVA_VOLUME = "kvtrace-java-agent"
JAVA_DIR = "/otel-auto-instrumentation-java"
JAVA_AGENT_SOURCE = "/javaagent.jar"  # in the agent image
JAVA_AGENT = f"{JAVA_DIR}/javaagent.jar"
CA_KEY = tls_render.CA_FILE
CA_VOLUME = "kvtrace-telemetry-ca"
POD_NAME_ENV = "OTEL_RESOURCE_ATTRIBUTES_POD_NAME"
NODE_NAME_ENV = "OTEL_RESOURCE_ATTRIBUTES_NODE_NAME"
POD_UID_ENV = "OTEL_RESOURCE_ATTRIBUTES_POD_UID"
AGENT_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "500m", "memory": "128Mi"},
}
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BOOL = ("true", "false")


def annotation_field(key: str) -> str:
    return f"metadata.annotations['{key}']"


@dataclasses.dataclass(frozen=True)
class Request:
    """What a pod's annotations ask for."""

    namespace: str  # the pipeline's
    pipeline: str
    python: bool = False
    java: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.pipeline}"


@dataclasses.dataclass(frozen=True)
class Workload:
    """The object that owns a pod's template (``Pod`` for a bare pod)."""

    kind: str
    name: str

    @property
    def secret(self) -> str:
        """The workload's own Secret (token and CA bundle) in the pod's namespace."""
        return workload_secret_name(self.kind, self.name)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def _flag(annotations: dict[str, str], key: str) -> bool:
    value = annotations.get(key)
    if value is None:
        return False
    if value not in _BOOL:
        raise SpecError(annotation_field(key), f'expected "true" or "false", got {value!r}')
    return value == "true"


def _typo(annotations: dict[str, str]) -> None:
    """An annotation that looks like one of ours but is not: a misspelled request."""
    for key in sorted(annotations):
        if key in REQUEST_ANNOTATIONS or key in OWN_ANNOTATIONS:
            continue
        close = difflib.get_close_matches(key, REQUEST_ANNOTATIONS, n=1, cutoff=0.8)
        if close or key.startswith("kvtrace.dev/inject"):
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SpecError(
                annotation_field(key),
                f"unknown kvtrace annotation{hint}; known: {', '.join(REQUEST_ANNOTATIONS)}",
            )


def parse_request(annotations: dict[str, str] | None, pod_namespace: str) -> Request | None:
    """The injection a pod asks for, None when it asks for none. SpecError (naming the
    annotation) for a malformed value, a misspelled key or an agent without a pipeline."""
    annotations = dict(annotations or {})
    _typo(annotations)
    python, java = _flag(annotations, INJECT_PYTHON), _flag(annotations, INJECT_JAVA)
    _flag(annotations, RESTART_ON_CHANGE)
    value = annotations.get(INJECT)
    if value is None or value == "false":
        if python or java:
            agent = INJECT_PYTHON if python else INJECT_JAVA
            raise SpecError(
                annotation_field(agent), f"needs {INJECT}: PIPELINE (or NAMESPACE/PIPELINE)"
            )
        return None
    namespace, _, pipeline = value.rpartition("/")
    namespace = namespace or pod_namespace
    for part in (namespace, pipeline):
        if not _LABEL.match(part) or len(part) > 63:
            raise SpecError(
                annotation_field(INJECT),
                "expected PIPELINE or NAMESPACE/PIPELINE (DNS "
                f"labels: lower-case letters, digits, '-'), got {value!r}",
            )
    return Request(namespace, pipeline, python, java)


def owning_workload(pod: dict[str, Any]) -> Workload:
    """Deployment (through its ReplicaSet's ``pod-template-hash``), StatefulSet, DaemonSet,
    Job, ReplicaSet...; the pod itself without a controller."""
    meta = pod.get("metadata") or {}
    owner = next((ref for ref in meta.get("ownerReferences") or () if ref.get("controller")), None)
    if owner is None:
        name = meta.get("name") or str(meta.get("generateName") or "pod").rstrip("-")
        return Workload("Pod", name)
    kind, name = str(owner["kind"]), str(owner["name"])
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return Workload("Deployment", name[: -len(template_hash) - 1])
    return Workload(kind, name)


def config_checksum(
    pipeline: dict[str, Any], request: Request, agents: Images = DEFAULT_IMAGES
) -> str:
    """What an injected pod was given (``agents``: the operator's agent images), as one value:
    a change means its pods must restart."""
    spec = parse_pipeline(pipeline.get("spec"))
    return checksum(
        {
            "env": exporter_env(pipeline, spec),
            "auth": security.auth(spec) is not None,
            "tls": spec.security.tls.active_mode,
            "python": agents.python_agent if request.python else None,
            "java": agents.java_agent if request.java else None,
        }
    )[:16]


def resource_attributes(pod: dict[str, Any], workload: Workload, container: str) -> str:
    namespace = namespace_of(pod)
    attributes = [
        ("k8s.namespace.name", namespace),
        ("k8s.pod.name", f"$({POD_NAME_ENV})"),
        ("k8s.pod.uid", f"$({POD_UID_ENV})"),
        ("k8s.node.name", f"$({NODE_NAME_ENV})"),
        ("k8s.container.name", container),
    ]
    if workload.kind != "Pod":
        attributes.append((f"k8s.{workload.kind.lower()}.name", workload.name))
    attributes.append(("service.instance.id", f"{namespace}.$({POD_NAME_ENV}).{container}"))
    return ",".join(f"{key}={value}" for key, value in attributes)


def merged_attributes(own: str, ours: str) -> str:
    """The container's ``OTEL_RESOURCE_ATTRIBUTES`` with ours for the keys it does not set."""
    keys = {item.split("=", 1)[0].strip() for item in own.split(",") if "=" in item}
    extra = [item for item in ours.split(",") if item.split("=", 1)[0] not in keys]
    return ",".join([own, *extra]) if own else ",".join(extra)


def container_env(
    pod: dict[str, Any],
    pipeline: dict[str, Any],
    spec: PipelineSpec,
    request: Request,
    workload: Workload,
    container: dict[str, Any],
) -> list[dict[str, Any]]:
    """The container's env list: ours first (skipping what it sets), then its own."""
    own = list(container.get("env") or [])
    own_values = {item["name"]: item for item in own}
    ours = [
        field_env(POD_NAME_ENV, "metadata.name"),
        field_env(POD_UID_ENV, "metadata.uid"),
        field_env(NODE_NAME_ENV, "spec.nodeName"),
        env("OTEL_SERVICE_NAME", workload.name),
        *exporter_env(pipeline, spec),
    ]
    attributes = resource_attributes(pod, workload, container["name"])
    given = own_values.get("OTEL_RESOURCE_ATTRIBUTES")
    if given is None:
        ours.append(env("OTEL_RESOURCE_ATTRIBUTES", attributes))
    elif "value" in given and "valueFrom" not in given:
        given = {**given, "value": merged_attributes(str(given["value"]), attributes)}
        own = [given if item["name"] == "OTEL_RESOURCE_ATTRIBUTES" else item for item in own]
    if security.auth(spec):
        ours.append(
            {
                "name": security.TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": workload.secret, "key": TOKEN_KEY}},
            }
        )
        ours.append(
            env("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20$({security.TOKEN_ENV})")
        )
    if security.tls(spec):
        ours.append(env("OTEL_EXPORTER_OTLP_CERTIFICATE", security.CLIENT_CA_FILE))
    if request.python:
        ours.append(env("PYTHONPATH", PYTHON_PATH))
    if request.java:
        ours.append(env("JAVA_TOOL_OPTIONS", f"-javaagent:{JAVA_AGENT}"))
    own = [_prepend_agent(item) for item in own]
    return [*(item for item in ours if item["name"] not in own_values), *own]


def _prepend_agent(item: dict[str, Any]) -> dict[str, Any]:
    """A container's own PYTHONPATH / JAVA_TOOL_OPTIONS keeps its value with the agent added."""
    value = item.get("value")
    if not isinstance(value, str) or "valueFrom" in item:
        return item
    if item["name"] == "PYTHONPATH" and PYTHON_PATH not in value:
        return {**item, "value": f"{PYTHON_PATH}:{value}" if value else PYTHON_PATH}
    if item["name"] == "JAVA_TOOL_OPTIONS" and f"-javaagent:{JAVA_AGENT}" not in value:
        return {**item, "value": f"-javaagent:{JAVA_AGENT} {value}".strip()}
    return item


def _agent_volumes(request: Request, agents: Images) -> list[tuple[str, str, str, list[str]]]:
    """(volume, mount path, image, copy command) per agent asked for."""
    wanted = []
    if request.python:
        wanted.append(
            (
                PYTHON_VOLUME,
                PYTHON_DIR,
                agents.python_agent,
                ["cp", "-r", f"{PYTHON_AGENT_SOURCE}/.", PYTHON_DIR],
            )
        )
    if request.java:
        wanted.append(
            (JAVA_VOLUME, JAVA_DIR, agents.java_agent, ["cp", JAVA_AGENT_SOURCE, JAVA_AGENT])
        )
    return wanted


def agent_images(pod: dict[str, Any]) -> Images:
    """The agent images an injected ``pod``'s init containers run (the defaults for an agent
    it has not): what its checksum was computed with, whatever the operator's flags are now."""
    spec = pod.get("spec") or {}
    init = {c.get("name"): c.get("image") for c in spec.get("initContainers") or ()}
    return dataclasses.replace(
        DEFAULT_IMAGES,
        python_agent=init.get(PYTHON_VOLUME) or DEFAULT_IMAGES.python_agent,
        java_agent=init.get(JAVA_VOLUME) or DEFAULT_IMAGES.java_agent,
    )


def _add_named(
    items: list[dict[str, Any]], new: dict[str, Any], key: str = "name"
) -> list[dict[str, Any]]:
    """``items`` with ``new`` appended unless an item of that name is there already."""
    return items if any(item.get(key) == new[key] for item in items) else [*items, new]


def _volumes(
    pipeline_spec: PipelineSpec, request: Request, workload: Workload, agents: Images
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) pairs every container gets: the CA bundle, the agents."""
    pairs = []
    if security.tls(pipeline_spec):
        pairs.append(
            (
                {
                    "name": CA_VOLUME,
                    "secret": {
                        "secretName": workload.secret,
                        "items": [{"key": CA_KEY, "path": CA_KEY}],
                    },
                },
                {"name": CA_VOLUME, "mountPath": security.CLIENT_CA_DIR, "readOnly": True},
            )
        )
    for volume, path, _, _ in _agent_volumes(request, agents):
        pairs.append(
            (
                {"name": volume, "emptyDir": {"sizeLimit": "200Mi"}},
                {"name": volume, "mountPath": path},
            )
        )
    return pairs


def inject(
    pod: dict[str, Any],
    pipeline: dict[str, Any],
    request: Request,
    agents: Images = DEFAULT_IMAGES,
) -> dict[str, Any]:
    """``pod`` with ``pipeline``'s configuration injected as ``request`` asks, the agents'
    init containers from ``agents`` (the operator's images; a new dict, ``pod`` is not
    changed). SpecError when the pipeline cannot be rendered."""
    pipeline_spec = validate_pipeline(pipeline)
    result = copy.deepcopy(pod)
    spec = result.setdefault("spec", {})
    workload = owning_workload(result)
    pairs = _volumes(pipeline_spec, request, workload, agents)
    volumes = list(spec.get("volumes") or [])
    for volume, _ in pairs:
        volumes = _add_named(volumes, volume)
    spec["volumes"] = volumes
    containers = []
    for container in spec.get("containers") or []:
        container = dict(container)
        container["env"] = container_env(
            result, pipeline, pipeline_spec, request, workload, container
        )
        mounts = list(container.get("volumeMounts") or [])
        for _, mount in pairs:
            if not any(m.get("mountPath") == mount["mountPath"] for m in mounts):
                mounts = _add_named(mounts, mount)
        container["volumeMounts"] = mounts
        containers.append(container)
    spec["containers"] = containers
    init = list(spec.get("initContainers") or [])
    for agent, path, image, command in _agent_volumes(request, agents):
        init = _add_named(
            init,
            {
                "name": agent,
                "image": image,
                "command": command,
                "volumeMounts": [{"name": agent, "mountPath": path}],
                "resources": copy.deepcopy(AGENT_RESOURCES),
                "securityContext": container_security_context(),
            },
        )
    if init:
        spec["initContainers"] = init
    annotations = result.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(INJECTION_ERROR, None)
    annotations[INJECTED] = request.ref
    annotations[INJECTED_CHECKSUM] = config_checksum(pipeline, request, agents)
    return result


def refused(pod: dict[str, Any], message: str) -> dict[str, Any]:
    """``pod`` unchanged but for the annotation saying why it was not injected."""
    result = copy.deepcopy(pod)
    annotations = result.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[INJECTION_ERROR] = message
    return result


def workload_secret(
    namespace: str, workload: Workload, request: Request, owner: dict[str, Any] | None
) -> dict[str, Any]:
    """The workload's Secret (metadata only; the webhook fills ``token`` once, the operator the
    ``ca.crt`` copy): labelled with its pipeline, owned by the workload when known."""
    metadata: dict[str, Any] = {
        "name": workload.secret,
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/name": "kvtrace-workload-token",
            "app.kubernetes.io/instance": workload.name,
            "app.kubernetes.io/component": "otlp-workload-token",
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            PIPELINE_NAMESPACE_LABEL: request.namespace,
            PIPELINE_LABEL: request.pipeline,
        },
        "annotations": {WORKLOAD_ANNOTATION: workload.label},
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}
