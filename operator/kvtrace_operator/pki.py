"""Certificates of the operator-managed CA (``spec.security.tls.mode: managed``), built with
``cryptography``: no I/O, no clock (``now`` is a parameter), only the keys are random.

ECDSA P-256 keys (fast to make, accepted by Go's TLS stack and Python's ``ssl``). A CA is
self-signed with ``basicConstraints CA:TRUE`` (path length 0) and ``keyCertSign``; a leaf is a
server-and-client certificate for its DNS names whose ``notAfter`` never passes its CA's.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A certificate is valid from a little before ``now``: clocks of the pods may lag the operator's.
BACKDATE = datetime.timedelta(minutes=1)


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, PEM-encoded (what a ``kubernetes.io/tls`` Secret holds)."""

    cert_pem: str
    key_pem: str


@dataclasses.dataclass(frozen=True)
class CertInfo:
    """What the rotation decisions read from a certificate."""

    common_name: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    is_ca: bool
    fingerprint: str  # sha256 of the DER, hex
    issuer: str  # common name of the issuer


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


MAX_COMMON_NAME = 64  # RFC 5280 ub-common-name; clients verify the DNS names, not the CN


def _name(common_name: str, organization: str = "kvtrace") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:MAX_COMMON_NAME]),
        ]
    )


def _aware(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        raise ValueError("pki needs timezone-aware datetimes (UTC)")
    return moment


def make_ca(common_name: str, now: datetime.datetime, validity: datetime.timedelta) -> KeyPair:
    """A self-signed CA valid from ``now`` (minus BACKDATE) for ``validity``."""
    now = _aware(now)
    key = _new_key()
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))


def issue(
    ca: KeyPair,
    common_name: str,
    dns_names: list[str] | tuple[str, ...],
    now: datetime.datetime,
    validity: datetime.timedelta,
    ip_addresses: tuple[str, ...] = (),
    organization: str = "kvtrace",
) -> KeyPair:
    """A leaf for ``dns_names`` (and ``ip_addresses``) signed by ``ca``, valid for
    ``validity`` but never beyond the CA's own ``notAfter``. ``organization`` is the
    subject's O (Kubernetes reads a client certificate's O as its groups)."""
    now = _aware(now)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an ECDSA key")
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))


def make_signing_key() -> KeyPair:
    """A bare ECDSA P-256 key pair (no certificate): ``cert_pem`` holds the public key's PEM
    (``BEGIN PUBLIC KEY``), e.g. for signing and verifying service-account tokens."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(public.decode(), _key_pem(key))


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _info(cert: x509.Certificate) -> CertInfo:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        common_name=_common_name(cert.subject),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        is_ca=is_ca,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        issuer=_common_name(cert.issuer),
    )


def info(cert_pem: str) -> CertInfo:
    """The first certificate of ``cert_pem``; ValueError when it holds none."""
    return _info(x509.load_pem_x509_certificate(cert_pem.encode()))


def bundle_info(bundle_pem: str) -> list[CertInfo]:
    """Every certificate of a PEM bundle, in order (empty for an empty bundle)."""
    if not bundle_pem.strip():
        return []
    return [_info(cert) for cert in x509.load_pem_x509_certificates(bundle_pem.encode())]


def bundle(*cert_pems: str) -> str:
    """One PEM bundle of the given certificates (each ends with a newline)."""
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in cert_pems)


def split_bundle(bundle_pem: str) -> list[str]:
    """The PEM certificates of a bundle, in order."""
    if not bundle_pem.strip():
        return []
    return [_cert_pem(cert) for cert in x509.load_pem_x509_certificates(bundle_pem.encode())]


def signed_by(cert_pem: str, ca_cert_pem: str) -> bool:
    """Whether ``ca_cert_pem``'s key signed ``cert_pem`` (signature check, not a chain walk)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def matches_key(cert_pem: str, key_pem: str) -> bool:
    """Whether the private key belongs to the certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
