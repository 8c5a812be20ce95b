"""The local control plane's certificates (devstack/pki.py on the operator's pki): what the API
server, its clients and the service-account token signer need, checked in a real mutual-TLS
handshake."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvtrace.devstack import pki as local_pki
from kvtrace_operator import pki

pytestmark = pytest.mark.unit


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_control_plane_certificates(tmp_path: Path) -> None:
    files = local_pki.create(tmp_path / "pki", service_ip="10.96.0.1", hosts=("kv.local",))
    ca, serving, admin = load(files.ca_cert), load(files.serving_cert), load(files.admin_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for leaf in (files.serving_cert, files.admin_cert):
        assert pki.signed_by(leaf.read_text(), files.ca_cert.read_text())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "kv.local"} <= set(
        sans.get_values_for_type(x509.DNSName)
    )
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.96.0.1",
    }
    # The API server reads a client certificate's O as the user's groups, its CN as the user.
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "kvtrace-admin"
    ]
    usages = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
    signer = serialization.load_pem_private_key(files.sa_key.read_bytes(), password=None)
    public = serialization.load_pem_public_key(files.sa_pub.read_bytes())
    assert signer.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    for key in (files.ca_key, files.serving_key, files.admin_key, files.sa_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key.name


def test_admin_and_api_server_certificates_complete_a_mutual_tls_handshake(tmp_path: Path) -> None:
    files = local_pki.create(tmp_path, service_ip="10.96.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files.ca_cert))
    server_context.load_cert_chain(str(files.serving_cert), str(files.serving_key))
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.create_default_context(cafile=str(files.ca_cert))
    client_context.load_cert_chain(str(files.admin_cert), str(files.admin_key))
    seen: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls:
                seen.append(tls.getpeercert())
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(timeout=10)
    assert seen and seen[0], "the server saw no verified client certificate"
