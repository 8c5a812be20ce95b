"""cert-manager ``Certificate`` objects (``spec.security.tls.mode: certManager``): one per TLS
server of the pipeline, writing the same Secrets the managed CA would (render/tls.py).

cert-manager writes ``tls.crt``, ``tls.key`` and ``ca.crt`` (the issuing CA) into each
Secret and renews it ``renewBefore`` ahead; the servers reload it. The operator copies the CAs
into the trust bundle the clients read (k8s/certificates.py).
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import tls
from kvtrace_operator.render.labels import child_metadata
from kvtrace_operator.spec import OwnerSpec
from kvtrace_operator.spec.common import TLS

API_VERSION = "cert-manager.io/v1"
KIND = "Certificate"
CRD_NAME = "certificates.cert-manager.io"


def issuer_ref(settings: TLS) -> dict[str, str]:
    ref = settings.issuer_ref
    if ref is None:  # render.validate refuses certManager without one
        raise ValueError("spec.security.tls.issuerRef: required with mode certManager")
    return {
        "name": ref.name,
        "kind": ref.kind or "Issuer",
        "group": ref.group or "cert-manager.io",
    }


def certificate(pipeline: dict[str, Any], leaf: dict[str, Any], settings: TLS) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(pipeline, leaf["secret"], leaf["component"]),
        "spec": {
            "secretName": leaf["secret"],
            "commonName": leaf["commonName"],
            "dnsNames": list(leaf["dnsNames"]),
            "duration": settings.duration.text,
            "renewBefore": settings.renew_before.text,
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "client auth", "digital signature"],
            "issuerRef": issuer_ref(settings),
        },
    }


def certificate_objects(pipeline: dict[str, Any], spec: OwnerSpec) -> list[dict[str, Any]]:
    """The Certificates of a certManager pipeline or KVCluster (none in the other modes)."""
    settings = spec.security.tls
    if settings.active_mode != tls.CERT_MANAGER:
        return []
    return [certificate(pipeline, leaf, settings) for leaf in tls.leaves(pipeline, spec)]
