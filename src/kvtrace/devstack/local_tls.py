"""The certificates of ``spec.security.tls`` (on by default, mode ``managed``) for harnesses
that run the rendered collector and Jaeger without the operator and the kubelet
(tests/tracing, the tests/security dataplane tests, benchmarks/tracing_overhead.py).

In a cluster the operator's managed CA signs one leaf per server (render/tls.py ``leaves``)
and the kubelet mounts the leaves and the trust bundle. Here :func:`local_tls` makes a CA
with the operator's own ``pki`` and issues the same leaves, each with the Service names the
operator puts in it **plus** the loopback address the harness runs the servers on
(``127.0.0.1``, where ``kvtrace.devstack.backends`` binds them): clients here connect to that
address, so the certificate must name it. Exporters that verify the Service name
(``server_name_override``) verify it as in the cluster. Verification is never turned off.

:meth:`LocalTLS.use_files` points a rendered config's mount paths at the files and
:meth:`LocalTLS.client_env` the members' ``OTEL_EXPORTER_OTLP_CERTIFICATE``; nothing else of
the rendered config or environment changes. With TLS off (``enabled: false``) both are
identities.

The pod runner (``kvtrace.devstack.podrunner``) runs the operator's own certificates instead,
from the Secret volumes; but it rewrites the Service names clients dial to the pod's loopback
address. :func:`loopback_leaf` re-issues a server's leaf, with the pipeline's own CA (read from
the namespace's Secrets), adding that address: harness-only, documented in docs/security.md.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvtrace_operator import pki
from kvtrace_operator.render import names, sampling, tls
from kvtrace_operator.render.security import CLIENT_CA_DIR
from kvtrace_operator.spec import parse_pipeline

LOOPBACK = ("127.0.0.1",)
VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class LocalTLS:
    """Files as the kubelet would mount them: ``leaves`` (leaf Secret name -> directory with
    ``tls.crt`` and ``tls.key``) and ``trust_dir`` (``ca.crt``, the bundle); empty without TLS."""

    pipeline: dict[str, Any]
    leaves: dict[str, Path] = field(default_factory=dict)
    trust_dir: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.trust_dir is not None

    @property
    def ca_file(self) -> Path:
        if self.trust_dir is None:
            raise ValueError("TLS is off for this pipeline: there is no CA file")
        return self.trust_dir / tls.CA_FILE

    def leaf_of(self, workload: str) -> str:
        """The leaf Secret of a workload (``names.collector(NAME)``, ``names.jaeger(NAME)``...)."""
        return tls.leaf_secret(workload)

    def edge_leaf(self) -> str:
        """The leaf of the collector applications send to (either tier layout)."""
        return self.leaf_of(names.collector(names.name_of(self.pipeline)))

    def sampling_leaf(self) -> str:
        """The leaf of the collector running the rendered sampling tier: behind a
        load-balancing tier its own, else the edge's."""
        name = names.name_of(self.pipeline)
        two_tier = sampling.two_tier(parse_pipeline(self.pipeline.get("spec")))
        return self.leaf_of(names.sampling_collector(name) if two_tier else names.collector(name))

    def jaeger_leaf(self) -> str:
        return self.leaf_of(names.jaeger(names.name_of(self.pipeline)))

    def use_files(self, config: dict[str, Any], leaf: str | None) -> dict[str, Any]:
        """A copy of a rendered collector or Jaeger config whose serving certificate is the
        local ``leaf`` (a key of ``leaves``) and whose trust bundle is ``trust_dir``."""
        if not self.enabled:
            return dict(_replace(config, {}))
        mounts = {tls.TRUST_DIR: str(self.trust_dir)}
        if leaf is not None:
            if leaf not in self.leaves:
                raise ValueError(
                    f"no local leaf {leaf!r}: the pipeline's TLS servers are {sorted(self.leaves)}"
                )
            mounts |= {
                tls.SERVING_DIR: str(self.leaves[leaf]),
                tls.JAEGER_SERVING_DIR: str(self.leaves[leaf]),
            }
        return dict(_replace(config, mounts))

    def client_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """A member's environment with the mounted bundle's path pointed at ``trust_dir``."""
        if not self.enabled:
            return dict(env)
        return dict(_replace(dict(env), {CLIENT_CA_DIR: str(self.trust_dir)}))


def _replace(value: Any, mounts: Mapping[str, str]) -> Any:
    """``value`` (nested dicts and lists) with every string starting with a mount path
    rewritten to the local directory."""
    if isinstance(value, dict):
        return {key: _replace(item, mounts) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, mounts) for item in value]
    if isinstance(value, str):
        for mount, local in mounts.items():
            if value == mount or value.startswith(mount + "/"):
                return local + value[len(mount) :]
    return value


def _write(path: Path, text: str, private: bool = False) -> None:
    path.write_text(text)
    if private:
        path.chmod(0o600)


def local_tls(
    directory: Path, pipeline: dict[str, Any], hosts: Sequence[str] = LOOPBACK
) -> LocalTLS:
    """A CA and every TLS server leaf of ``pipeline`` under ``directory``, each leaf valid for
    its Service names and ``hosts`` (IP addresses). Mode ``managed`` and ``certManager``
    pipelines get all their servers; TLS off gets nothing; mode ``secret`` (the user's own
    certificate) is the caller's to provide."""
    spec = parse_pipeline(pipeline.get("spec"))
    if not spec.security.tls.enabled:
        return LocalTLS(pipeline)
    if not spec.security.tls.every_hop:
        raise ValueError(
            "spec.security.tls mode secret serves the user's own certificate: provide its files"
        )
    now = datetime.datetime.now(datetime.UTC)
    name, namespace = names.name_of(pipeline), names.namespace_of(pipeline)
    ca = pki.make_ca(f"kvtrace {namespace}/{name} local CA", now, VALIDITY * 2)
    trust_dir = directory / "trust"
    trust_dir.mkdir(parents=True, exist_ok=True)
    _write(trust_dir / tls.CA_FILE, ca.cert_pem)
    leaves = {}
    for leaf in tls.leaves(pipeline, spec):
        pair = pki.issue(
            ca, leaf["commonName"], leaf["dnsNames"], now, VALIDITY, ip_addresses=tuple(hosts)
        )
        leaf_dir = directory / leaf["secret"]
        leaf_dir.mkdir(parents=True, exist_ok=True)
        _write(leaf_dir / "tls.crt", pair.cert_pem)
        _write(leaf_dir / "tls.key", pair.key_pem, private=True)
        leaves[leaf["secret"]] = leaf_dir
    return LocalTLS(pipeline, leaves, trust_dir)


# ---- the pod runner's servers -------------------------------------------------------------------


def issuers(secrets: Iterable[Mapping[str, bytes]]) -> list[pki.KeyPair]:
    """Every CA key pair in the data of ``secrets`` (``X.crt`` beside ``X.key``: the managed
    CA Secret holds ``tls.crt``/``tls.key`` and, during a rotation, ``previous.crt``/``.key``)."""
    found = []
    for data in secrets:
        for name, cert in data.items():
            key = data.get(name[: -len(".crt")] + ".key") if name.endswith(".crt") else None
            if key is None:
                continue
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                if pki.info(cert.decode()).is_ca:
                    found.append(pki.KeyPair(cert.decode(), key.decode()))
    return found


def loopback_leaf(
    cert_pem: str, cas: Iterable[pki.KeyPair], address: str, now: datetime.datetime | None = None
) -> pki.KeyPair | None:
    """The serving certificate ``cert_pem`` re-issued for a server the pod runner runs on
    ``address``: same subject, DNS names and end (``notAfter``), the loopback ``address`` added
    as an IP name, signed by the one of ``cas`` that signed the original (a fresh key). Clients
    that the endpoint map sends to ``address`` verify it; those verifying a Service name too.
    None when ``cert_pem`` is no server leaf (a CA, no DNS names), none of ``cas`` signed it
    (cert-manager's issuer keys are not in the namespace), or it has expired."""
    moment = now or datetime.datetime.now(datetime.UTC)
    try:
        leaf = pki.info(cert_pem)
    except ValueError:
        return None
    if leaf.is_ca or not leaf.dns_names or leaf.not_after <= moment:
        return None
    for ca in cas:
        if pki.signed_by(cert_pem, ca.cert_pem):
            return pki.issue(
                ca,
                leaf.common_name,
                leaf.dns_names,
                moment,
                leaf.not_after - moment,
                ip_addresses=(address,),
            )
    return None
