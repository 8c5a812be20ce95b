"""Certificates for the local control plane, made with the ``openssl`` command line.

One throw-away CA per cluster signs the API server's serving certificate and the admin
client certificate (``O=system:masters``); a separate key pair signs service-account tokens.
ECDSA P-256 keys keep generation well under a second.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


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


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise FileNotFoundError("the openssl command is needed to make the local cluster's certificates")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def _leaf(directory: Path, name: str, subject: str, extensions: Sequence[str]) -> None:
    _openssl("req", "-new", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=directory)
    (directory / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", f"{name}.ext",
             "-out", f"{name}.crt", cwd=directory)


def create(directory: Path, *, service_ip: str, hosts: Sequence[str] = ()) -> Pki:
    """Make the CA, serving, admin and service-account keys under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-new", *_KEY, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=kvtrace-local-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=directory)
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", *hosts]
    sans = [f"DNS:{n}" for n in names] + ["IP:127.0.0.1", f"IP:{service_ip}"]
    _leaf(directory, "apiserver", "/CN=kube-apiserver", [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth",
        "subjectAltName=" + ",".join(sans),
    ])
    _leaf(directory, "admin", "/O=system:masters/CN=kvtrace-admin", [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=clientAuth,serverAuth",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ])
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key",
             cwd=directory)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for path in directory.iterdir():
        if path.suffix in (".key",):
            path.chmod(0o600)
    return Pki(directory)
