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

API_VERSION = "cert-manager.io/v1"
KIND = "Certificate"
CRD_NAME = "certificates.cert-manager.io"


def issuer_ref(settings: dict[str, Any]) -> dict[str, str]:
    ref = settings["issuerRef"]
    return {
        "name": str(ref["name"]),
        "kind": str(ref.get("kind") or "Issuer"),
        "group": str(ref.get("group") or "cert-manager.io"),
    }


def certificate(
    pipeline: dict[str, Any], leaf: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(pipeline, leaf["secret"], leaf["component"]),
        "spec": {
            "secretName": leaf["secret"],
            "commonName": leaf["commonName"],
            "dnsNames": list(leaf["dnsNames"]),
            "duration": settings["duration"],
            "renewBefore": settings["renewBefore"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "client auth", "digital signature"],
            "issuerRef": issuer_ref(settings),
        },
    }


def certificate_objects(pipeline: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The Certificates of a certManager pipeline (none in the other modes)."""
    if tls.mode(spec) != tls.CERT_MANAGER:
        return []
    settings = spec["security"]["tls"]
    return [certificate(pipeline, leaf, settings) for leaf in tls.leaves(pipeline, spec)]
