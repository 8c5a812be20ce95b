"""When the operator-managed CA and its leaves are created and renewed (docs/security.md, TLS).

Pure decisions from the certificates the Secrets hold now and ``now``; ``rotate`` applies them
(making keys with ``pki``, the only non-deterministic part). Nothing here talks to the API.

Timeline of a CA rotation (no span lost):

1. The CA is within ``caRenewBefore`` of its ``notAfter``: a new CA is made. The trust bundle
   (``ca.crt`` of every TLS Secret) becomes *new + old*; the workloads that trust the bundle
   roll (their checksum covers it). Leaves stay signed by the old CA.
2. ``caRenewBefore / 2`` after the new CA's ``notBefore`` (every consumer has rolled by then),
   leaves are re-issued by the new CA; servers reload them (``reload_interval``) without a
   restart. Clients trust both CAs, so old and new leaves are both accepted meanwhile.
3. When the old CA expires it leaves the bundle (consumers roll once more).

A leaf is renewed when it is missing, within ``renewBefore`` of its ``notAfter``, lacks one
of its DNS names, or is not signed by the CA that signs now.
"""

from __future__ import annotations

import dataclasses
import datetime

from kvtrace_operator import pki


@dataclasses.dataclass(frozen=True)
class Policy:
    """Validity and renewal windows (``spec.security.tls``)."""

    duration: datetime.timedelta
    renew_before: datetime.timedelta
    ca_duration: datetime.timedelta
    ca_renew_before: datetime.timedelta

    @property
    def propagation(self) -> datetime.timedelta:
        """How long a new CA is only trusted, not yet signing: consumers roll meanwhile."""
        return self.ca_renew_before / 2


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    """One serving certificate: the Secret it lives in and the names it must carry."""

    secret: str
    common_name: str
    dns_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class State:
    """What the Secrets hold: the signing CA, the previous one (until it expires), the leaves."""

    ca: pki.KeyPair | None = None
    previous_ca: pki.KeyPair | None = None
    leaves: dict[str, pki.KeyPair] = dataclasses.field(default_factory=dict)


def remaining(cert: pki.CertInfo, now: datetime.datetime) -> datetime.timedelta:
    return cert.not_after - now


def ca_due(ca: pki.CertInfo | None, now: datetime.datetime, policy: Policy) -> str | None:
    """Why a new CA is needed now, or None."""
    if ca is None:
        return "missing"
    if remaining(ca, now) <= policy.ca_renew_before:
        return "expiring"
    return None


def signs_now(
    ca: pki.CertInfo, previous: pki.CertInfo | None, now: datetime.datetime, policy: Policy
) -> str:
    """``ca`` or ``previous``: the previous CA keeps signing while the new one propagates, as
    long as what it signs would not be due for renewal at once."""
    if previous is None or now >= ca.not_before + pki.BACKDATE + policy.propagation:
        return "ca"
    if remaining(previous, now) <= policy.renew_before:
        return "ca"
    return "previous"


def leaf_due(
    leaf: pki.CertInfo | None,
    signed_by_signer: bool,
    spec: LeafSpec,
    now: datetime.datetime,
    policy: Policy,
) -> str | None:
    """Why ``spec``'s leaf must be (re)issued now, or None."""
    if leaf is None:
        return "missing"
    if remaining(leaf, now) <= policy.renew_before:
        return "expiring"
    if not set(spec.dns_names) <= set(leaf.dns_names):
        return "dns-names"
    if not signed_by_signer:
        return "issuer"
    return None


def trusted(state: State, now: datetime.datetime) -> list[str]:
    """The CA certificates clients trust: the signing CA, then the previous one until it expires."""
    result = [state.ca.cert_pem] if state.ca else []
    if state.previous_ca and pki.info(state.previous_ca.cert_pem).not_after > now:
        result.append(state.previous_ca.cert_pem)
    return result


def trust_bundle(state: State, now: datetime.datetime) -> str:
    return pki.bundle(*trusted(state, now))


def rotate(
    state: State, leaves: list[LeafSpec], now: datetime.datetime, policy: Policy, ca_name: str
) -> tuple[State, list[str]]:
    """The state after every due creation and renewal, and what was done (for events and
    logs: names and reasons, never key material)."""
    actions: list[str] = []
    ca, previous = state.ca, state.previous_ca
    reason = ca_due(pki.info(ca.cert_pem) if ca else None, now, policy)
    if reason:
        previous = ca if ca else None
        ca = pki.make_ca(ca_name, now, policy.ca_duration)
        actions.append(f"CA {ca_name}: {reason}")
    assert ca is not None
    if previous is not None and pki.info(previous.cert_pem).not_after <= now:
        previous = None
        actions.append(f"CA {ca_name}: previous CA expired, dropped from the trust bundle")
    ca_info = pki.info(ca.cert_pem)
    previous_info = pki.info(previous.cert_pem) if previous else None
    signer = (
        previous
        if previous and signs_now(ca_info, previous_info, now, policy) == "previous"
        else ca
    )
    result: dict[str, pki.KeyPair] = {}
    for spec in leaves:
        current = state.leaves.get(spec.secret)
        usable = current is not None and pki.matches_key(current.cert_pem, current.key_pem)
        leaf = pki.info(current.cert_pem) if current and usable else None
        signed = bool(current) and pki.signed_by(current.cert_pem, signer.cert_pem)  # type: ignore[union-attr]
        why = leaf_due(leaf, signed, spec, now, policy)
        if why is None and current is not None:
            result[spec.secret] = current
            continue
        result[spec.secret] = pki.issue(
            signer, spec.common_name, spec.dns_names, now, policy.duration
        )
        actions.append(f"certificate {spec.secret}: {why}")
    return State(ca=ca, previous_ca=previous, leaves=result), actions
