"""TLS on the telemetry hops (``TracingPipeline.spec.security.tls``; docs/security.md, TLS).

Three modes (``mode``; unset means ``secret`` when ``secretName`` is given, else ``managed``):

- ``managed``: the operator's own CA (Secret ``NAME-tls-ca``) signs one leaf per server:
  the collector apps send to (``NAME-collector-tls``), the sampling tier behind a
  load-balancing tier (``NAME-collector-sampling-tls``) and Jaeger's OTLP receiver
  (``NAME-jaeger-tls``). Clients trust ``NAME-tls-trust`` (key ``ca.crt``: the CA, and the
  previous one during a rotation).
- ``certManager``: the same Secrets, written by cert-manager from one ``Certificate`` each
  (render/certificates.py); the operator copies their CAs into ``NAME-tls-trust``.
- ``secret``: your own ``kubernetes.io/tls`` Secret serves the edge only (the sampling tier
  and Jaeger stay plaintext; both accept only their own collector, by NetworkPolicy).

A KVCluster (``KVCluster.spec.security.tls``, the same fields and modes) gets the same
machinery under the prefix ``NAME-kv`` (``base_name``): CA ``NAME-kv-tls-ca``, bundle
``NAME-kv-tls-trust``, one leaf ``NAME-kv-tls`` for every member (``kv_leaves``); in mode
``secret`` the user's Secret is that leaf. render/kvsecurity.py mounts it.

Servers mount their leaf in a volume named ``serving-cert`` and reload it
(``reload_interval``): a renewed leaf needs no restart. Clients read the trust bundle only at
start, so its Secret rolls them (render/secret_refs.py) -- it changes only when a CA does.
"""

from __future__ import annotations

import base64
from typing import Any

from kvtrace_operator.render import names, sampling
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.labels import (
    COLLECTOR,
    COLLECTOR_LOADBALANCER,
    COLLECTOR_SAMPLING,
    JAEGER,
    KVNODE,
    child_metadata,
)
from kvtrace_operator.spec import KVClusterSpec, OwnerSpec, parse_kvcluster, parse_pipeline
from kvtrace_operator.spec.common import CERT_MANAGER as CERT_MANAGER  # re-exported
from kvtrace_operator.spec.common import MANAGED as MANAGED  # re-exported
from kvtrace_operator.spec.common import SECRET as SECRET  # re-exported
from kvtrace_operator.spec.common import TLS, TLS_MODES
from kvtrace_operator.spec.durations import Duration, parse_duration

MODES = TLS_MODES
SERVING_VOLUME = "serving-cert"  # re-read by the program: a change rolls nothing
TRUST_VOLUME = "telemetry-ca"  # read at start: a change rolls the pods
SERVING_DIR = (
    "/etc/otelcol-serving"  # not below /etc/otelcol (read-only config) or /etc/otelcol-tls
)
TRUST_DIR = "/etc/otelcol-trust"
JAEGER_SERVING_DIR = "/etc/jaeger-serving"
CA_FILE = "ca.crt"
TLS_SECRET_TYPE = "kubernetes.io/tls"
TRUST_COMPONENT = "tls-trust"
CA_COMPONENT = "tls-ca"
MAX_RELOAD_SECONDS = 3600
ISSUER_KINDS = ("Issuer", "ClusterIssuer")
MIN_DURATION = "1s"  # the CRD's CEL minimum of each


KVCLUSTER_KIND = "KVCluster"


def is_kvcluster(owner: dict[str, Any]) -> bool:
    return owner.get("kind") == KVCLUSTER_KIND


def base_name(owner: dict[str, Any]) -> str:
    """What the CA and trust Secrets of ``owner`` are named after: a pipeline's name, a
    KVCluster's ``NAME-kv``."""
    name = names.name_of(owner)
    return names.kv_tls_base(name) if is_kvcluster(owner) else name


def owner_spec(owner: dict[str, Any]) -> OwnerSpec:
    """The typed spec of a pipeline or a KVCluster."""
    parse = parse_kvcluster if is_kvcluster(owner) else parse_pipeline
    return parse(owner.get("spec"))


def ca_secret(pipeline_name: str) -> str:
    return f"{pipeline_name}-tls-ca"


def trust_secret(pipeline_name: str) -> str:
    return f"{pipeline_name}-tls-trust"


def leaf_secret(workload_name: str) -> str:
    return f"{workload_name}-tls"


def edge_secret(settings: TLS, pipeline_name: str) -> str:
    """The Secret the collector apps send to serves from."""
    if settings.active_mode == SECRET and settings.secret_name:
        return settings.secret_name
    return leaf_secret(names.collector(pipeline_name))


def client_ca(settings: TLS, pipeline_name: str) -> tuple[str, str]:
    """(Secret, key) of the CA bundle applications trust."""
    if settings.active_mode == SECRET:
        return edge_secret(settings, pipeline_name), CA_FILE
    return trust_secret(pipeline_name), CA_FILE


def dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """Every name a client in the cluster may use for ``service``."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        names.service_dns(service, namespace),
    )


def kv_leaves(cluster: dict[str, Any], spec: KVClusterSpec) -> list[dict[str, Any]]:
    """One leaf every member serves on both ports (managed and certManager modes): the client
    Service's names, the peer Service's and each member's (``NAME-i.NAME-peers.NS.svc...``,
    by wildcard: the peers file names members so, and a new member needs no new leaf)."""
    if not spec.security.tls.every_hop:
        return []
    name, namespace = names.name_of(cluster), names.namespace_of(cluster)
    peers = names.peers_service(name)
    members = [f"*.{peers}.{namespace}.svc", f"*.{names.service_dns(peers, namespace)}"]
    return [
        {
            "secret": leaf_secret(names.kv_tls_base(name)),
            "component": KVNODE,
            "commonName": name,
            "dnsNames": [*dns_names(name, namespace), *dns_names(peers, namespace), *members],
        }
    ]


def leaves(pipeline: dict[str, Any], spec: OwnerSpec) -> list[dict[str, Any]]:
    """One serving certificate per TLS server of the pipeline (managed and certManager
    modes): ``secret``, ``component`` (labels), ``commonName``, ``dnsNames``; a KVCluster's
    one (``kv_leaves``)."""
    if isinstance(spec, KVClusterSpec):
        return kv_leaves(pipeline, spec)
    if not spec.security.tls.every_hop:
        return []
    name, namespace = names.name_of(pipeline), names.namespace_of(pipeline)
    servers = [
        (
            names.collector(name),
            names.collector(name),
            COLLECTOR_LOADBALANCER if sampling.two_tier(spec) else COLLECTOR,
        )
    ]
    if sampling.two_tier(spec):
        servers.append(
            (names.sampling_collector(name), names.sampling_collector(name), COLLECTOR_SAMPLING)
        )
    if spec.jaeger.enabled:
        servers.append((names.jaeger(name), names.jaeger_otlp(name), JAEGER))
    # Jaeger's leaf serves its query port too (or the query proxy beside it).
    extra = {names.jaeger(name): dns_names(names.jaeger_query(name), namespace)}
    return [
        {
            "secret": leaf_secret(workload),
            "component": component,
            "commonName": service,
            "dnsNames": [*dns_names(service, namespace), *extra.get(workload, ())],
        }
        for workload, service, component in servers
    ]


def written_secrets(pipeline: dict[str, Any], spec: OwnerSpec) -> list[str]:
    """The Secrets the operator writes (and owns) for the pipeline's TLS, not rendered because
    their keys are made when it applies: the CA, the trust bundle and each leaf in mode
    managed; the trust bundle in mode certManager (cert-manager writes the leaves)."""
    name = base_name(pipeline)
    active = spec.security.tls.active_mode
    if active == MANAGED:
        return [
            ca_secret(name),
            trust_secret(name),
            *(leaf["secret"] for leaf in leaves(pipeline, spec)),
        ]
    return [trust_secret(name)] if active == CERT_MANAGER else []


def reload_interval(settings: TLS) -> str:
    """How often servers re-read their certificate: a quarter of ``renewBefore``, at most 1h,
    so a renewed leaf is served long before the old one expires."""
    if settings.active_mode == SECRET:
        return f"{MAX_RELOAD_SECONDS // 3600}h"
    renew = settings.renew_before.nanos // 10**9
    seconds = max(1, min(MAX_RELOAD_SECONDS, renew // 4))
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


# ---- configs --------------------------------------------------------------------------------


def server_tls(settings: TLS, directory: str = SERVING_DIR) -> dict[str, Any]:
    """The ``tls`` block of a receiver protocol serving the mounted leaf."""
    return {
        "cert_file": f"{directory}/tls.crt",
        "key_file": f"{directory}/tls.key",
        "reload_interval": reload_interval(settings),
    }


def client_tls(server_name: str | None = None) -> dict[str, Any]:
    """The ``tls`` block of an exporter to one of the pipeline's own TLS servers."""
    result: dict[str, Any] = {"ca_file": f"{TRUST_DIR}/{CA_FILE}"}
    if server_name:
        # The load-balancing exporter dials pod IPs, a local pod runner rewritten addresses:
        # verify the Service name instead.
        result["server_name_override"] = server_name
    return result


def exporter_tls(settings: TLS, server_name: str | None = None) -> dict[str, Any]:
    """TLS to the pipeline's own sampling tier or Jaeger: verified, or plaintext (``insecure``)."""
    return client_tls(server_name) if settings.every_hop else {"insecure": True}


# ---- volumes --------------------------------------------------------------------------------


def serving_volume(secret: str, directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The key pair of ``secret`` at ``directory`` (reloaded: never rolls the pod)."""
    return (
        {
            "name": SERVING_VOLUME,
            "secret": {
                "secretName": secret,
                "items": [
                    {"key": "tls.crt", "path": "tls.crt"},
                    {"key": "tls.key", "path": "tls.key"},
                ],
            },
        },
        {"name": SERVING_VOLUME, "mountPath": directory, "readOnly": True},
    )


def trust_volume(secret: str, key: str, directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the CA bundle (``ca.crt``) of ``secret``: clients never see a private key."""
    return (
        {
            "name": TRUST_VOLUME,
            "secret": {"secretName": secret, "items": [{"key": key, "path": CA_FILE}]},
        },
        {"name": TRUST_VOLUME, "mountPath": directory, "readOnly": True},
    )


def collector_volumes(
    pipeline: dict[str, Any],
    settings: TLS,
    workload_name: str,
    *,
    serves: bool,
    exports_inside: bool,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A collector tier's TLS volumes: ``serves`` its receivers over TLS (its leaf, or the
    user's Secret at the edge); ``exports_inside`` to the sampling tier or Jaeger (the bundle)."""
    if not settings.enabled:
        return []
    name = names.name_of(pipeline)
    volumes = []
    if serves:
        edge = workload_name == names.collector(name)
        volumes.append(
            serving_volume(
                edge_secret(settings, name) if edge else leaf_secret(workload_name), SERVING_DIR
            )
        )
    if exports_inside and settings.every_hop:
        volumes.append(trust_volume(trust_secret(name), CA_FILE, TRUST_DIR))
    return volumes


def jaeger_volumes(
    pipeline: dict[str, Any], settings: TLS
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    if not settings.every_hop:
        return []
    return [serving_volume(leaf_secret(names.jaeger(names.name_of(pipeline))), JAEGER_SERVING_DIR)]


# ---- Secrets of the managed CA ----------------------------------------------------------------


def _data(values: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in sorted(values.items())}


def secret(
    pipeline: dict[str, Any],
    name: str,
    component: str,
    values: dict[str, str],
    secret_type: str = TLS_SECRET_TYPE,
) -> dict[str, Any]:
    """A Secret the operator writes (PEM text in ``values``), owned by the pipeline."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(pipeline, name, component),
        "type": secret_type,
        "data": _data(values),
    }


def trust_secret_object(pipeline: dict[str, Any], bundle_pem: str) -> dict[str, Any]:
    return secret(
        pipeline,
        trust_secret(base_name(pipeline)),
        TRUST_COMPONENT,
        {CA_FILE: bundle_pem},
        "Opaque",
    )


def decoded(secret_obj: dict[str, Any] | None) -> dict[str, str]:
    """The data of a Secret read from the API, as text (empty for a missing Secret)."""
    if not secret_obj:
        return {}
    return {
        key: base64.b64decode(value).decode()
        for key, value in (secret_obj.get("data") or {}).items()
    }


# ---- validation -------------------------------------------------------------------------------


def validate(settings: TLS) -> None:
    """SpecError naming the ``spec.security.tls`` field that cannot work (the CRD's CEL rules,
    again for files; like them, whether or not TLS is enabled)."""
    field = "spec.security.tls"
    chosen = settings.chosen_mode
    if settings.secret_name and chosen != SECRET:
        raise SpecError(f"{field}.secretName", f"is used only by mode secret, got mode {chosen}")
    if chosen == CERT_MANAGER:
        issuer = settings.issuer_ref
        if issuer is None or not issuer.name:
            raise SpecError(
                f"{field}.issuerRef",
                "required with mode certManager: {name: ISSUER, kind: "
                "Issuer|ClusterIssuer}, the cert-manager issuer that signs the certificates",
            )
        if (issuer.kind or "Issuer") not in ISSUER_KINDS:
            raise SpecError(
                f"{field}.issuerRef.kind",
                f"expected one of {', '.join(ISSUER_KINDS)}, got {issuer.kind!r}",
            )
    if chosen == SECRET and not settings.secret_name:
        raise SpecError(
            f"{field}.secretName",
            "required with mode secret: a Secret with tls.crt, tls.key "
            "and ca.crt (as cert-manager writes it)",
        )
    durations = _durations(settings)
    for duration in durations.values():
        parse_duration(duration.text, duration.field, MIN_DURATION)
    duration, renew = durations["duration"], durations["renewBefore"]
    ca_duration, ca_renew = durations["caDuration"], durations["caRenewBefore"]
    if renew.nanos >= duration.nanos:
        raise SpecError(
            renew.field, f"expected less than duration ({duration}), got {renew.text!r}"
        )
    if ca_renew.nanos >= ca_duration.nanos:
        raise SpecError(
            ca_renew.field, f"expected less than caDuration ({ca_duration}), got {ca_renew.text!r}"
        )
    if 2 * renew.nanos >= ca_renew.nanos:
        raise SpecError(
            ca_renew.field,
            f"expected more than twice renewBefore ({renew}): leaves move to a new CA half-way "
            f"through caRenewBefore, got {ca_renew.text!r}",
        )


def _durations(settings: TLS) -> dict[str, Duration]:
    return {
        "duration": settings.duration,
        "renewBefore": settings.renew_before,
        "caDuration": settings.ca_duration,
        "caRenewBefore": settings.ca_renew_before,
    }


def policy_seconds(settings: TLS) -> dict[str, float]:
    """The four durations in seconds (for the rotation policy of the k8s layer)."""
    return {key: duration.seconds for key, duration in _durations(settings).items()}
