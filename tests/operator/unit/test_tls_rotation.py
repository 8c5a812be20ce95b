"""The managed CA's certificates (pki) and when they are created and renewed (rotation)."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest

from kvtrace_operator import pki, rotation
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
POLICY = rotation.Policy(
    duration=10 * HOUR, renew_before=3 * HOUR, ca_duration=100 * HOUR, ca_renew_before=20 * HOUR
)
LEAVES = [
    rotation.LeafSpec("p-collector-tls", "p-collector", ("p-collector", "p-collector.ns.svc")),
    rotation.LeafSpec("p-jaeger-tls", "p-jaeger-otlp", ("p-jaeger-otlp.ns.svc",)),
]


def fresh() -> rotation.State:
    state, actions = rotation.rotate(rotation.State(), LEAVES, T0, POLICY, "test CA")
    assert actions == [
        "CA test CA: missing",
        "certificate p-collector-tls: missing",
        "certificate p-jaeger-tls: missing",
    ]
    return state


class TestPki:
    def test_ca_and_leaf_fields(self) -> None:
        ca = pki.make_ca("test CA", T0, 100 * HOUR)
        leaf = pki.issue(ca, "p-collector", ["a.ns.svc", "a"], T0, 10 * HOUR)
        ca_info, leaf_info = pki.info(ca.cert_pem), pki.info(leaf.cert_pem)
        assert ca_info.is_ca and not leaf_info.is_ca
        assert ca_info.not_after == T0 + 100 * HOUR and ca_info.not_before == T0 - pki.BACKDATE
        assert leaf_info.dns_names == ("a.ns.svc", "a") and leaf_info.issuer == "test CA"
        assert pki.signed_by(leaf.cert_pem, ca.cert_pem)
        assert not pki.signed_by(leaf.cert_pem, pki.make_ca("other", T0, HOUR).cert_pem)
        assert pki.matches_key(leaf.cert_pem, leaf.key_pem) and not pki.matches_key(
            leaf.cert_pem, ca.key_pem
        )

    def test_a_leaf_never_outlives_its_ca(self) -> None:
        ca = pki.make_ca("short CA", T0, 5 * HOUR)
        assert (
            pki.info(pki.issue(ca, "x", ["x"], T0, 10 * HOUR).cert_pem).not_after == T0 + 5 * HOUR
        )

    def test_bundles_round_trip(self) -> None:
        a, b = pki.make_ca("a", T0, HOUR), pki.make_ca("b", T0, HOUR)
        both = pki.bundle(a.cert_pem, b.cert_pem)
        assert [c.common_name for c in pki.bundle_info(both)] == ["a", "b"]
        assert pki.split_bundle(both) == [a.cert_pem, b.cert_pem]
        assert pki.split_bundle("") == [] and pki.bundle_info(" \n") == []

    def test_python_ssl_accepts_the_pair(self, tmp_path: Path) -> None:
        """The real TLS stack loads the key pair and verifies the chain."""
        ca = pki.make_ca("ssl CA", datetime.datetime.now(datetime.UTC), HOUR)
        leaf = pki.issue(ca, "srv", ["localhost"], datetime.datetime.now(datetime.UTC), HOUR)
        (tmp_path / "tls.crt").write_text(leaf.cert_pem)
        (tmp_path / "tls.key").write_text(leaf.key_pem)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
        client = ssl.create_default_context(cadata=ca.cert_pem)
        assert client.get_ca_certs()[0]["subject"][-1][0][1] == "ssl CA"

    def test_long_common_names_are_cut_to_64_characters(self) -> None:
        ca = pki.make_ca("x" * 100, T0, HOUR)
        assert pki.info(ca.cert_pem).common_name == "x" * 64

    def test_naive_datetimes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            pki.make_ca("x", datetime.datetime(2026, 1, 1), HOUR)


class TestRotation:
    def test_valid_certificates_are_left_alone(self) -> None:
        state = fresh()
        again, actions = rotation.rotate(state, LEAVES, T0 + 6 * HOUR, POLICY, "test CA")
        assert actions == [] and again == state

    def test_a_leaf_within_renew_before_is_renewed_by_the_same_ca(self) -> None:
        state = fresh()
        later = T0 + 7 * HOUR  # 3h left of 10h: due
        renewed, actions = rotation.rotate(state, LEAVES, later, POLICY, "test CA")
        assert actions == [
            "certificate p-collector-tls: expiring",
            "certificate p-jaeger-tls: expiring",
        ]
        assert renewed.ca == state.ca and renewed.previous_ca is None
        leaf = renewed.leaves["p-collector-tls"]
        assert pki.info(leaf.cert_pem).not_after == later + POLICY.duration
        assert pki.signed_by(leaf.cert_pem, state.ca.cert_pem)
        assert rotation.trusted(renewed, later) == [state.ca.cert_pem]

    def test_a_leaf_missing_a_name_is_reissued(self) -> None:
        state = fresh()
        wider = [
            rotation.LeafSpec("p-collector-tls", "p-collector", ("p-collector", "extra.ns.svc")),
            LEAVES[1],
        ]
        renewed, actions = rotation.rotate(state, wider, T0 + HOUR, POLICY, "test CA")
        assert actions == ["certificate p-collector-tls: dns-names"]
        assert "extra.ns.svc" in pki.info(renewed.leaves["p-collector-tls"].cert_pem).dns_names

    def test_ca_rotation_trusts_both_then_moves_leaves_then_drops_the_old_ca(self) -> None:
        state = fresh()
        old_ca = state.ca
        assert old_ca is not None
        # 1. 20h before the CA's end: a new CA, trusted at once; leaves stay with the old one.
        t1 = T0 + 80 * HOUR
        s1 = state
        # Keep the leaves fresh up to t1 (renewed by the old CA on the way).
        for hour in range(7, 80, 7):
            s1, _ = rotation.rotate(s1, LEAVES, T0 + hour * HOUR, POLICY, "test CA")
        s1, actions = rotation.rotate(s1, LEAVES, t1, POLICY, "test CA")
        assert actions[0] == "CA test CA: expiring"
        assert s1.previous_ca == old_ca and s1.ca != old_ca
        assert rotation.trusted(s1, t1) == [s1.ca.cert_pem, old_ca.cert_pem]
        assert all(pki.signed_by(leaf.cert_pem, old_ca.cert_pem) for leaf in s1.leaves.values())
        # Meanwhile a due leaf is still renewed by the old CA (not every client trusts the new one).
        s1, actions = rotation.rotate(s1, LEAVES, t1 + 4 * HOUR, POLICY, "test CA")
        assert actions == [
            "certificate p-collector-tls: expiring",
            "certificate p-jaeger-tls: expiring",
        ]
        assert all(pki.signed_by(leaf.cert_pem, old_ca.cert_pem) for leaf in s1.leaves.values())
        # 2. Half-way through caRenewBefore: leaves move to the new CA (reason: issuer).
        t2 = t1 + POLICY.propagation + pki.BACKDATE
        s2, actions = rotation.rotate(s1, LEAVES, t2, POLICY, "test CA")
        assert actions == [
            "certificate p-collector-tls: issuer",
            "certificate p-jaeger-tls: issuer",
        ]
        assert all(pki.signed_by(leaf.cert_pem, s2.ca.cert_pem) for leaf in s2.leaves.values())
        assert len(rotation.trusted(s2, t2)) == 2
        # 3. The old CA expires: it leaves the bundle.
        t3 = T0 + 100 * HOUR + HOUR
        s3, actions = rotation.rotate(s2, LEAVES, t3, POLICY, "test CA")
        assert "CA test CA: previous CA expired, dropped from the trust bundle" in actions
        assert s3.previous_ca is None and rotation.trusted(s3, t3) == [s2.ca.cert_pem]

    def test_the_old_ca_stops_signing_when_its_leaves_would_be_due_at_once(self) -> None:
        new = pki.info(pki.make_ca("new", T0, 100 * HOUR).cert_pem)
        old = pki.info(
            pki.make_ca("old", T0 - 90 * HOUR, 92 * HOUR).cert_pem
        )  # 2h left < renewBefore
        assert rotation.signs_now(new, old, T0, POLICY) == "ca"
        younger_old = pki.info(pki.make_ca("old", T0 - 80 * HOUR, 100 * HOUR).cert_pem)  # 20h left
        assert rotation.signs_now(new, younger_old, T0, POLICY) == "previous"
        assert rotation.signs_now(new, None, T0, POLICY) == "ca"

    def test_leaf_due_reasons(self) -> None:
        spec = LEAVES[0]
        assert rotation.leaf_due(None, False, spec, T0, POLICY) == "missing"
        ca = pki.make_ca("c", T0, 100 * HOUR)
        leaf = pki.info(pki.issue(ca, "p", list(spec.dns_names), T0, 10 * HOUR).cert_pem)
        assert rotation.leaf_due(leaf, True, spec, T0, POLICY) is None
        assert rotation.leaf_due(leaf, False, spec, T0, POLICY) == "issuer"
        assert rotation.leaf_due(leaf, True, spec, T0 + 7 * HOUR, POLICY) == "expiring"
        assert rotation.ca_due(None, T0, POLICY) == "missing"
        assert rotation.ca_due(pki.info(ca.cert_pem), T0 + 80 * HOUR, POLICY) == "expiring"
        assert rotation.ca_due(pki.info(ca.cert_pem), T0 + 79 * HOUR, POLICY) is None


class TestSecretsOfTheManagedCA:
    """The pure parts of k8s/certificates.py: Secrets from a state and back, the status, the
    cert-manager trust bundle."""

    PIPELINE = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {"collector": {"replicas": 2}, "security": {"tls": {"enabled": True}}},
    }

    def test_secrets_round_trip_and_never_expose_the_ca_key_to_pods(self) -> None:
        from kvtrace_operator.k8s import certificates
        from kvtrace_operator.render import tls

        spec = parse_pipeline(self.PIPELINE["spec"])
        leaves = certificates.leaf_specs(self.PIPELINE, spec)
        assert [leaf.secret for leaf in leaves] == [
            "p-collector-tls",
            "p-collector-sampling-tls",
            "p-jaeger-tls",
        ]
        state, _ = rotation.rotate(rotation.State(), leaves, T0, certificates.policy(spec), "CA")
        objects = certificates.managed_secrets(self.PIPELINE, spec, state, T0)
        data = {obj["metadata"]["name"]: tls.decoded(obj) for obj in objects}
        assert set(data["p-tls-trust"]) == {"ca.crt"} and set(data["p-tls-ca"]) == {
            "tls.crt",
            "tls.key",
            "ca.crt",
        }
        assert all(obj["metadata"]["ownerReferences"][0]["uid"] == "u1" for obj in objects)
        again = certificates.state_of(
            data["p-tls-ca"], {leaf.secret: data[leaf.secret] for leaf in leaves}
        )
        assert again == state
        # A key that does not match its certificate counts as missing (re-issued).
        broken = {**data["p-jaeger-tls"], "tls.key": data["p-collector-tls"]["tls.key"]}
        assert (
            "p-jaeger-tls"
            not in certificates.state_of(data["p-tls-ca"], {"p-jaeger-tls": broken}).leaves
        )
        status = certificates.tls_status(
            "managed",
            data["p-tls-trust"]["ca.crt"],
            {leaf.secret: data[leaf.secret]["tls.crt"] for leaf in leaves},
        )
        assert status["trusted"] == [
            {"commonName": "CA", "notAfter": "2028-12-31T00:00:00Z"}
        ]  # 26280h
        assert status["certificates"][0] == {
            "secret": "p-collector-sampling-tls",
            "issuer": "CA",
            "notAfter": "2026-04-01T00:00:00Z",
        }  # 2160h = 90 days

    def test_cert_manager_bundle_keeps_a_replaced_ca_until_it_expires(self) -> None:
        from kvtrace_operator.k8s.certificates import merged_bundle

        old, new = pki.make_ca("old", T0, 10 * HOUR), pki.make_ca("new", T0, 100 * HOUR)
        previous = merged_bundle([old.cert_pem], "", T0)
        assert merged_bundle([new.cert_pem], previous, T0 + HOUR) == pki.bundle(
            new.cert_pem, old.cert_pem
        )
        assert merged_bundle([new.cert_pem, new.cert_pem], previous, T0 + 11 * HOUR) == pki.bundle(
            new.cert_pem
        )
