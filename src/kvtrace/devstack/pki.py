"""Certificates for the local control plane, made with the operator's own
:mod:`kvtrace_operator.pki` (``cryptography``; the one PKI of the code base).

One throw-away CA per cluster signs the API server's serving certificate and the admin
client certificate (``O=system:masters``); a separate key pair signs service-account tokens.
ECDSA P-256 keys keep generation well under a second. Private keys are written 0600.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Sequence
from pathlib import Path

from kvtrace_operator import pki

VALIDITY = datetime.timedelta(days=3650)
API_SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _file(name: str) -> property:
    return property(lambda self: self.directory / name)


@dataclasses.dataclass(frozen=True)
class Pki:
    """The files :func:`create` writes, by role."""

    directory: Path

    ca_cert = _file("ca.crt")
    ca_key = _file("ca.key")
    serving_cert = _file("apiserver.crt")
    serving_key = _file("apiserver.key")
    admin_cert = _file("admin.crt")
    admin_key = _file("admin.key")
    sa_key = _file("sa.key")  # signs service-account tokens
    sa_pub = _file("sa.pub")


def _write(cert: Path, key: Path, pair: pki.KeyPair) -> None:
    cert.write_text(pair.cert_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pair.key_pem)
    key.chmod(0o600)  # also when the file was there already


def create(
    directory: Path,
    *,
    service_ip: str,
    hosts: Sequence[str] = (),
    now: datetime.datetime | None = None,
) -> Pki:
    """Make the CA, serving, admin and service-account keys under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = Pki(directory)
    now = now or datetime.datetime.now(datetime.UTC)
    ca = pki.make_ca("kvtrace-local-ca", now, VALIDITY)
    _write(files.ca_cert, files.ca_key, ca)
    _write(
        files.serving_cert,
        files.serving_key,
        pki.issue(
            ca,
            "kube-apiserver",
            (*API_SERVER_NAMES, *hosts),
            now,
            VALIDITY,
            ip_addresses=("127.0.0.1", service_ip),
        ),
    )
    _write(
        files.admin_cert,
        files.admin_key,
        pki.issue(
            ca,
            "kvtrace-admin",
            ("localhost",),
            now,
            VALIDITY,
            ip_addresses=("127.0.0.1",),
            organization="system:masters",
        ),
    )
    _write(files.sa_pub, files.sa_key, pki.make_signing_key())
    return files
