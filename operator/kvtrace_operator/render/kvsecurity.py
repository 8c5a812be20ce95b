"""Transport security of a KVCluster's members (``KVCluster.spec.security``; docs/security.md,
"The KV cluster"): what the StatefulSet mounts and passes to ``kvtrace node serve``.

- ``tls`` (render/tls.py makes the certificates, as for a pipeline): the members' leaf
  (``NAME-kv-tls``, or the user's Secret in mode ``secret``) in the volume ``serving-cert``
  and the CA bundle (``NAME-kv-tls-trust``, or ``ca.crt`` of the user's Secret) in
  ``kv-trust``; the node serves TLS on both ports with mutual TLS between peers, and its
  probes use HTTPS.
- ``auth``: one token per file in the projected volume ``client-tokens``: the generated
  ``NAME-kv-client-token`` (file ``default``) and each declared client's (file = its name).

The node re-reads all three volumes (``--reload-interval``): a renewed certificate or a new
token rolls nothing (render/security.RELOADED_VOLUMES). Pure: imports only render modules.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kvtrace_operator.render import consumer_tokens, names, tls
from kvtrace_operator.render.labels import KVNODE  # noqa: F401 (the component of the leaf)
from kvtrace_operator.spec import KVClusterSpec

TLS_DIR = "/etc/kvnode-tls"
TRUST_DIR = "/etc/kvnode-trust"
TOKEN_DIR = "/etc/kvnode-tokens"
SERVING_VOLUME = tls.SERVING_VOLUME
TRUST_VOLUME = "kv-trust"
TOKEN_VOLUME = "client-tokens"
DEFAULT_CLIENT = "default"  # the file of the generated token
CLIENTS_FIELD = "spec.security.auth.clients"
TOKEN_COMPONENT = "kv-client-token"


class Client(NamedTuple):
    """A client of the KV API and the Secret key holding its token."""

    name: str
    secret: str
    key: str


def tls_on(spec: KVClusterSpec) -> bool:
    return spec.security.tls.enabled


def auth_on(spec: KVClusterSpec) -> bool:
    return spec.security.auth.enabled


def leaf_secret(cluster: dict[str, Any], spec: KVClusterSpec) -> str:
    settings = spec.security.tls
    if settings.active_mode == tls.SECRET and settings.secret_name:
        return settings.secret_name
    return tls.leaf_secret(names.kv_tls_base(names.name_of(cluster)))


def trust_secret(cluster: dict[str, Any], spec: KVClusterSpec) -> str:
    """Where the members' and clients' CA bundle (key ``ca.crt``) is."""
    if spec.security.tls.active_mode == tls.SECRET:
        return leaf_secret(cluster, spec)
    return tls.trust_secret(names.kv_tls_base(names.name_of(cluster)))


def clients(cluster: dict[str, Any], spec: KVClusterSpec) -> list[Client]:
    """The generated client first, then the declared ones in order."""
    name = names.name_of(cluster)
    result = [Client(DEFAULT_CLIENT, names.kv_client_token(name), consumer_tokens.TOKEN_KEY)]
    for entry in spec.security.auth.clients:
        ref = entry.token_secret_ref
        result.append(
            Client(entry.name, ref.name, ref.key)
            if ref
            else Client(
                entry.name, names.kv_client_token(name, entry.name), consumer_tokens.TOKEN_KEY
            )
        )
    return result


def token_secrets(cluster: dict[str, Any], spec: KVClusterSpec) -> list[dict[str, Any]]:
    """The token Secrets the operator generates (created once with a random token, owned by
    the cluster): its own and each declared client's without ``tokenSecretRef``."""
    if not auth_on(spec):
        return []
    declared = {
        entry.name for entry in spec.security.auth.clients if entry.token_secret_ref is None
    }
    return [
        consumer_tokens.generated_secret(cluster, client.secret, TOKEN_COMPONENT)
        for client in clients(cluster, spec)
        if client.name == DEFAULT_CLIENT or client.name in declared
    ]


def volumes(
    cluster: dict[str, Any], spec: KVClusterSpec
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) pairs of the members: leaf, CA bundle, client tokens."""
    result = []
    if tls_on(spec):
        result.append(tls.serving_volume(leaf_secret(cluster, spec), TLS_DIR))
        trust, mount = tls.trust_volume(trust_secret(cluster, spec), tls.CA_FILE, TRUST_DIR)
        result.append(({**trust, "name": TRUST_VOLUME}, {**mount, "name": TRUST_VOLUME}))
    if auth_on(spec):
        sources = [
            {"secret": {"name": c.secret, "items": [{"key": c.key, "path": c.name}]}}
            for c in clients(cluster, spec)
        ]
        result.append(
            (
                {"name": TOKEN_VOLUME, "projected": {"sources": sources}},
                {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            )
        )
    return result


def node_args(spec: KVClusterSpec) -> list[str]:
    """``kvtrace node serve`` flags of the mounted files."""
    args = []
    if tls_on(spec):
        args += [
            f"--tls-cert-file={TLS_DIR}/tls.crt",
            f"--tls-key-file={TLS_DIR}/tls.key",
            f"--tls-ca-file={TRUST_DIR}/{tls.CA_FILE}",
        ]
    if auth_on(spec):
        args.append(f"--auth-token-dir={TOKEN_DIR}")
    return args


def probe_scheme(spec: KVClusterSpec) -> str:
    """The kubelet probes HTTPS without verifying the certificate, and sends no token
    (``/healthz`` and ``/readyz`` need none)."""
    return "HTTPS" if tls_on(spec) else "HTTP"


def validate(spec: KVClusterSpec) -> None:
    """SpecError naming the ``spec.security`` field that cannot work."""
    tls.validate(spec.security.tls)
    consumer_tokens.validate(spec.security.auth.clients, CLIENTS_FIELD, reserved=(DEFAULT_CLIENT,))
