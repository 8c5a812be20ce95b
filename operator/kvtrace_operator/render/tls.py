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
from kvtrace_operator.spec.defaults import apply_defaults_kvcluster, apply_defaults_pipeline
from kvtrace_operator.spec.durations import parse_duration

MANAGED, CERT_MANAGER, SECRET = "managed", "certManager", "secret"
MODES = (MANAGED, CERT_MANAGER, SECRET)
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
# Durations of the managed CA and leaves (and of cert-manager Certificates).
DURATION_FIELDS = ("duration", "renewBefore", "caDuration", "caRenewBefore")
MIN_DURATION = "1s"  # the CRD's CEL minimum of each


def settings(spec: dict[str, Any]) -> dict[str, Any] | None:
    """``spec.security.tls`` when enabled, else None."""
    values = spec.get("security", {}).get("tls", {})
    return values if values.get("enabled") else None


def mode(spec: dict[str, Any]) -> str | None:
    values = settings(spec)
    if values is None:
        return None
    return str(values.get("mode") or (SECRET if values.get("secretName") else MANAGED))


def every_hop(spec: dict[str, Any]) -> bool:
    """Whether the sampling tier and Jaeger serve TLS too (managed and certManager modes)."""
    return mode(spec) in (MANAGED, CERT_MANAGER)


KVCLUSTER_KIND = "KVCluster"


def is_kvcluster(owner: dict[str, Any]) -> bool:
    return owner.get("kind") == KVCLUSTER_KIND


def base_name(owner: dict[str, Any]) -> str:
    """What the CA and trust Secrets of ``owner`` are named after: a pipeline's name, a
    KVCluster's ``NAME-kv``."""
    name = names.name_of(owner)
    return names.kv_tls_base(name) if is_kvcluster(owner) else name


def owner_spec(owner: dict[str, Any]) -> dict[str, Any]:
    """The defaulted spec of a pipeline or a KVCluster."""
    defaults = apply_defaults_kvcluster if is_kvcluster(owner) else apply_defaults_pipeline
    return defaults(owner.get("spec"))


def ca_secret(pipeline_name: str) -> str:
    return f"{pipeline_name}-tls-ca"


def trust_secret(pipeline_name: str) -> str:
    return f"{pipeline_name}-tls-trust"


def leaf_secret(workload_name: str) -> str:
    return f"{workload_name}-tls"


def edge_secret(spec: dict[str, Any], pipeline_name: str) -> str:
    """The Secret the collector apps send to serves from."""
    if mode(spec) == SECRET:
        return str(spec["security"]["tls"]["secretName"])
    return leaf_secret(names.collector(pipeline_name))


def client_ca(spec: dict[str, Any], pipeline_name: str) -> tuple[str, str]:
    """(Secret, key) of the CA bundle applications trust."""
    if mode(spec) == SECRET:
        return edge_secret(spec, pipeline_name), CA_FILE
    return trust_secret(pipeline_name), CA_FILE


def dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """Every name a client in the cluster may use for ``service``."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        names.service_dns(service, namespace),
    )


def kv_leaves(cluster: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One leaf every member serves on both ports (managed and certManager modes): the client
    Service's names, the peer Service's and each member's (``NAME-i.NAME-peers.NS.svc...``,
    by wildcard: the peers file names members so, and a new member needs no new leaf)."""
    if not every_hop(spec):
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


def leaves(pipeline: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One serving certificate per TLS server of the pipeline (managed and certManager
    modes): ``secret``, ``component`` (labels), ``commonName``, ``dnsNames``; a KVCluster's
    one (``kv_leaves``)."""
    if is_kvcluster(pipeline):
        return kv_leaves(pipeline, spec)
    if not every_hop(spec):
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
    if spec["jaeger"]["enabled"]:
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


def written_secrets(pipeline: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """The Secrets the operator writes (and owns) for the pipeline's TLS, not rendered because
    their keys are made when it applies: the CA, the trust bundle and each leaf in mode
    managed; the trust bundle in mode certManager (cert-manager writes the leaves)."""
    name = base_name(pipeline)
    if mode(spec) == MANAGED:
        return [
            ca_secret(name),
            trust_secret(name),
            *(leaf["secret"] for leaf in leaves(pipeline, spec)),
        ]
    return [trust_secret(name)] if mode(spec) == CERT_MANAGER else []


def reload_interval(spec: dict[str, Any]) -> str:
    """How often servers re-read their certificate: a quarter of ``renewBefore``, at most 1h,
    so a renewed leaf is served long before the old one expires."""
    values = spec["security"]["tls"]
    if mode(spec) == SECRET:
        return f"{MAX_RELOAD_SECONDS // 3600}h"
    renew = parse_duration(values["renewBefore"], "spec.security.tls.renewBefore") // 10**9
    seconds = max(1, min(MAX_RELOAD_SECONDS, renew // 4))
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


# ---- configs --------------------------------------------------------------------------------


def server_tls(spec: dict[str, Any], directory: str = SERVING_DIR) -> dict[str, Any]:
    """The ``tls`` block of a receiver protocol serving the mounted leaf."""
    return {
        "cert_file": f"{directory}/tls.crt",
        "key_file": f"{directory}/tls.key",
        "reload_interval": reload_interval(spec),
    }


def client_tls(server_name: str | None = None) -> dict[str, Any]:
    """The ``tls`` block of an exporter to one of the pipeline's own TLS servers."""
    result: dict[str, Any] = {"ca_file": f"{TRUST_DIR}/{CA_FILE}"}
    if server_name:
        # The load-balancing exporter dials pod IPs, a local pod runner rewritten addresses:
        # verify the Service name instead.
        result["server_name_override"] = server_name
    return result


def exporter_tls(spec: dict[str, Any], server_name: str | None = None) -> dict[str, Any]:
    """TLS to the pipeline's own sampling tier or Jaeger: verified, or plaintext (``insecure``)."""
    return client_tls(server_name) if every_hop(spec) else {"insecure": True}


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
    spec: dict[str, Any],
    workload_name: str,
    *,
    serves: bool,
    exports_inside: bool,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A collector tier's TLS volumes: ``serves`` its receivers over TLS (its leaf, or the
    user's Secret at the edge); ``exports_inside`` to the sampling tier or Jaeger (the bundle)."""
    if settings(spec) is None:
        return []
    name = names.name_of(pipeline)
    volumes = []
    if serves:
        edge = workload_name == names.collector(name)
        volumes.append(
            serving_volume(
                edge_secret(spec, name) if edge else leaf_secret(workload_name), SERVING_DIR
            )
        )
    if exports_inside and every_hop(spec):
        volumes.append(trust_volume(trust_secret(name), CA_FILE, TRUST_DIR))
    return volumes


def jaeger_volumes(
    pipeline: dict[str, Any], spec: dict[str, Any]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    if not every_hop(spec):
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


def validate(spec: dict[str, Any]) -> None:
    """SpecError naming the ``spec.security.tls`` field that cannot work (the CRD's CEL rules,
    again for files; like them, whether or not TLS is enabled)."""
    values = spec["security"]["tls"]
    field = "spec.security.tls"
    if values.get("mode") is not None and values["mode"] not in MODES:
        raise SpecError(
            f"{field}.mode", f"expected one of {', '.join(MODES)}, got {values['mode']!r}"
        )
    chosen = values.get("mode") or (SECRET if values.get("secretName") else MANAGED)
    if values.get("secretName") and chosen != SECRET:
        raise SpecError(f"{field}.secretName", f"is used only by mode secret, got mode {chosen}")
    if chosen == CERT_MANAGER:
        issuer = values.get("issuerRef")
        if not isinstance(issuer, dict) or not issuer.get("name"):
            raise SpecError(
                f"{field}.issuerRef",
                "required with mode certManager: {name: ISSUER, kind: "
                "Issuer|ClusterIssuer}, the cert-manager issuer that signs the certificates",
            )
        if issuer.get("kind", "Issuer") not in ISSUER_KINDS:
            raise SpecError(
                f"{field}.issuerRef.kind",
                f"expected one of {', '.join(ISSUER_KINDS)}, got {issuer.get('kind')!r}",
            )
    if chosen == SECRET and not values.get("secretName"):
        raise SpecError(
            f"{field}.secretName",
            "required with mode secret: a Secret with tls.crt, tls.key "
            "and ca.crt (as cert-manager writes it)",
        )
    nanos = {
        key: parse_duration(values[key], f"{field}.{key}", MIN_DURATION) for key in DURATION_FIELDS
    }
    if nanos["renewBefore"] >= nanos["duration"]:
        raise SpecError(
            f"{field}.renewBefore",
            f"expected less than duration ({values['duration']}), got {values['renewBefore']!r}",
        )
    if nanos["caRenewBefore"] >= nanos["caDuration"]:
        raise SpecError(
            f"{field}.caRenewBefore",
            f"expected less than caDuration ({values['caDuration']}), "
            f"got {values['caRenewBefore']!r}",
        )
    if 2 * nanos["renewBefore"] >= nanos["caRenewBefore"]:
        raise SpecError(
            f"{field}.caRenewBefore",
            "expected more than twice renewBefore "
            f"({values['renewBefore']}): leaves move to a new CA half-way through "
            f"caRenewBefore, got {values['caRenewBefore']!r}",
        )


def policy_seconds(spec: dict[str, Any]) -> dict[str, float]:
    """The four durations in seconds (for the rotation policy of the k8s layer)."""
    values = spec["security"]["tls"]
    return {
        key: parse_duration(values[key], f"spec.security.tls.{key}") / 1e9
        for key in DURATION_FIELDS
    }
