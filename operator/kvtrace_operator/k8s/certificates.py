"""The TLS Secrets of a pipeline or a KVCluster (docs/security.md, TLS): the managed CA's life cycle, and
cert-manager's Certificates with the trust bundle copied from what cert-manager wrote.

``prepare`` runs before the pipeline's children are applied (their pods mount these Secrets):
it reads the current Secrets, lets ``rotation`` decide, and server-side applies the result.
An unchanged Secret is applied with the same data, which the API server treats as a no-op (no
new resourceVersion, so nothing rolls). Key material is never logged: only Secret names and
reasons leave this module.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from kvtrace_operator import pki, rotation
from kvtrace_operator.k8s.apply import apply_object, child_key, delete_object, list_children
from kvtrace_operator.k8s.secrets import SecretData
from kvtrace_operator.render import names, tls
from kvtrace_operator.render.certificates import API_VERSION, CRD_NAME, KIND, certificate_objects
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.spec import OwnerSpec

# Registers cert-manager's kind with lightkube (apply_object resolves kinds by apiVersion/kind).
Certificate = create_namespaced_resource("cert-manager.io", "v1", "Certificate", "certificates")

PREVIOUS_CERT, PREVIOUS_KEY = "previous.crt", "previous.key"


@dataclasses.dataclass
class Prepared:
    """The Secrets written, to apply again with the children (so pruning keeps them), and
    what changed (names and reasons only). cert-manager's Certificates are among the rendered
    children already; they are applied here first because the workloads wait for their Secrets."""

    objects: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    actions: list[str] = dataclasses.field(default_factory=list)
    status: dict[str, Any] | None = (
        None  # status.tls of the pipeline (None: TLS off or mode secret)
    )
    # those of ``objects`` written now, as the API server returned them: the children's apply
    # of this reconcile takes them as applied (each TLS Secret is written once)
    written: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tls_status(mode: str, bundle_pem: str, leaves: dict[str, str]) -> dict[str, Any]:
    """``status.tls``: the CAs clients trust and each server certificate, with their ends
    (``leaves``: Secret name -> its tls.crt, absent ones left out)."""
    return {
        "mode": mode,
        "trusted": [
            {"commonName": cert.common_name, "notAfter": _stamp(cert.not_after)}
            for cert in pki.bundle_info(bundle_pem)
        ],
        "certificates": [
            {"secret": name, "issuer": cert.issuer, "notAfter": _stamp(cert.not_after)}
            for name, pem in sorted(leaves.items())
            if pem
            for cert in [pki.info(pem)]
        ],
    }


def policy(spec: OwnerSpec) -> rotation.Policy:
    seconds = tls.policy_seconds(spec.security.tls)
    return rotation.Policy(
        duration=datetime.timedelta(seconds=seconds["duration"]),
        renew_before=datetime.timedelta(seconds=seconds["renewBefore"]),
        ca_duration=datetime.timedelta(seconds=seconds["caDuration"]),
        ca_renew_before=datetime.timedelta(seconds=seconds["caRenewBefore"]),
    )


def leaf_specs(pipeline: dict[str, Any], spec: OwnerSpec) -> list[rotation.LeafSpec]:
    return [
        rotation.LeafSpec(leaf["secret"], leaf["commonName"], tuple(leaf["dnsNames"]))
        for leaf in tls.leaves(pipeline, spec)
    ]


def _pair(data: dict[str, str], cert: str, key: str) -> pki.KeyPair | None:
    return pki.KeyPair(data[cert], data[key]) if data.get(cert) and data.get(key) else None


def state_of(ca_data: dict[str, str], leaf_data: dict[str, dict[str, str]]) -> rotation.State:
    """The rotation state from the Secrets' decoded data (unreadable material counts as absent)."""

    def usable(pair: pki.KeyPair | None) -> pki.KeyPair | None:
        try:
            return pair if pair and pki.matches_key(pair.cert_pem, pair.key_pem) else None
        except ValueError:
            return None

    leaves = {
        name: pair
        for name, data in leaf_data.items()
        if (pair := usable(_pair(data, "tls.crt", "tls.key"))) is not None
    }
    return rotation.State(
        ca=usable(_pair(ca_data, "tls.crt", "tls.key")),
        previous_ca=usable(_pair(ca_data, PREVIOUS_CERT, PREVIOUS_KEY)),
        leaves=leaves,
    )


def managed_secrets(
    pipeline: dict[str, Any], spec: OwnerSpec, state: rotation.State, now: datetime.datetime
) -> list[dict[str, Any]]:
    """The CA Secret, the trust bundle and one ``kubernetes.io/tls`` Secret per leaf."""
    assert state.ca is not None
    name = tls.base_name(pipeline)
    bundle = rotation.trust_bundle(state, now)
    ca_values = {"tls.crt": state.ca.cert_pem, "tls.key": state.ca.key_pem, tls.CA_FILE: bundle}
    if state.previous_ca is not None:
        ca_values |= {
            PREVIOUS_CERT: state.previous_ca.cert_pem,
            PREVIOUS_KEY: state.previous_ca.key_pem,
        }
    objects = [
        tls.secret(pipeline, tls.ca_secret(name), tls.CA_COMPONENT, ca_values, "Opaque"),
        tls.trust_secret_object(pipeline, bundle),
    ]
    for leaf in tls.leaves(pipeline, spec):
        pair = state.leaves[leaf["secret"]]
        objects.append(
            tls.secret(
                pipeline,
                leaf["secret"],
                leaf["component"],
                {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, tls.CA_FILE: bundle},
            )
        )
    return objects


def first_tls(owner: Mapping[str, Any]) -> bool:
    """Whether the owner's TLS was never prepared: no ``status.tls`` yet (a status written
    before, e.g. while a new KVCluster waited for its pipeline, does not count)."""
    return not (owner.get("status") or {}).get("tls")


async def read_data(
    secret_data: SecretData, name: str, namespace: str, *, new_owner: bool = False
) -> dict[str, str]:
    """A Secret's decoded data ({} when it does not exist). For a ``new_owner`` (no
    ``status.tls`` yet: its TLS was never prepared) a Secret the running Secret watch has not
    seen is taken as absent without a read: nobody made its TLS Secrets yet."""
    if new_owner and secret_data.unseen(namespace, name):
        return {}
    return tls.decoded(await secret_data.get(name, namespace))


async def prepare_managed(
    secret_data: SecretData, pipeline: dict[str, Any], spec: OwnerSpec, now: datetime.datetime
) -> Prepared:
    name, namespace = tls.base_name(pipeline), names.namespace_of(pipeline)
    wanted = leaf_specs(pipeline, spec)
    new_owner = first_tls(pipeline)
    ca_data = await read_data(secret_data, tls.ca_secret(name), namespace, new_owner=new_owner)
    leaf_data = {
        leaf.secret: await read_data(secret_data, leaf.secret, namespace, new_owner=new_owner)
        for leaf in wanted
    }
    state, actions = rotation.rotate(
        state_of(ca_data, leaf_data),
        wanted,
        now,
        policy(spec),
        ca_name=f"kvtrace {namespace}/{name} CA",
    )
    objects = managed_secrets(pipeline, spec, state, now)
    current = {
        tls.ca_secret(name): ca_data,
        **leaf_data,
        tls.trust_secret(name): await read_data(
            secret_data, tls.trust_secret(name), namespace, new_owner=new_owner
        ),
    }
    # the changed ones now (the workloads wait for them); the others go with the children
    written: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:
        if tls.decoded(obj) != current.get(obj["metadata"]["name"]):
            written[child_key(obj)] = await apply_object(secret_data.client, obj, namespace)
            secret_data.remember(written[child_key(obj)], written=True)
    status = tls_status(
        tls.MANAGED,
        rotation.trust_bundle(state, now),
        {name: pair.cert_pem for name, pair in state.leaves.items()},
    )
    return Prepared(objects, actions, status, written)


def merged_bundle(ca_pems: list[str], previous_bundle: str, now: datetime.datetime) -> str:
    """Every CA cert-manager's Secrets name now, then those of the previous bundle that are
    still valid (a CA rotation keeps the old CA trusted until it expires), each once."""
    seen: dict[str, str] = {}
    for pem in [*ca_pems, *pki.split_bundle(previous_bundle)]:
        cert = pki.info(pem)
        if cert.not_after > now and cert.fingerprint not in seen:
            seen[cert.fingerprint] = pem
    return pki.bundle(*seen.values())


async def cert_manager_installed(client: AsyncClient) -> bool:
    async for _ in client.list(CustomResourceDefinition, fields={"metadata.name": CRD_NAME}):
        return True
    return False


async def prepare_cert_manager(
    secret_data: SecretData, pipeline: dict[str, Any], spec: OwnerSpec, now: datetime.datetime
) -> Prepared:
    client = secret_data.client
    if not await cert_manager_installed(client):
        raise SpecError(
            "spec.security.tls.mode",
            f"certManager needs cert-manager in the cluster: the "
            f"CustomResourceDefinition {CRD_NAME} does not exist (install cert-manager or "
            f"use mode managed)",
        )
    name, namespace = tls.base_name(pipeline), names.namespace_of(pipeline)
    objects = certificate_objects(pipeline, spec)
    for obj in objects:
        await apply_object(client, obj, namespace)
    written = [
        await read_data(secret_data, leaf["secret"], namespace)
        for leaf in tls.leaves(pipeline, spec)
    ]
    ca_pems = [pem for data in written for pem in pki.split_bundle(data.get(tls.CA_FILE, ""))]
    previous = await read_data(secret_data, tls.trust_secret(name), namespace)
    bundle = merged_bundle(ca_pems, previous.get(tls.CA_FILE, ""), now)
    status = tls_status(
        tls.CERT_MANAGER,
        bundle,
        {
            leaf["secret"]: data.get("tls.crt", "")
            for leaf, data in zip(tls.leaves(pipeline, spec), written)
        },
    )
    if not bundle:  # cert-manager has not issued yet: the Secret watch reconciles when it has
        return Prepared([], [], status)
    trust = tls.trust_secret_object(pipeline, bundle)
    applied = await apply_object(client, trust, namespace)
    secret_data.remember(applied, written=True)
    changed = ["trust bundle updated"] if bundle != previous.get(tls.CA_FILE) else []
    return Prepared([trust], changed, status, {child_key(trust): applied})


async def prune_certificates(
    client: AsyncClient, pipeline: dict[str, Any], keep: set[str]
) -> list[str]:
    """Delete the pipeline's own cert-manager Certificates (owned by it, with its labels) that
    are not in ``keep``: all of them once it leaves mode certManager or turns TLS off, a
    server's when it goes (two tiers to one). Their Secrets stay (cert-manager never deletes
    them; managed mode takes them over, or the children's pruning removes ours). Nothing
    without cert-manager's CRD. Returns what was deleted, as action texts."""
    if not await cert_manager_installed(client):
        return []
    meta = pipeline["metadata"]
    try:
        owned = await list_children(client, pipeline, kinds=((API_VERSION, KIND),))
    except ApiError as exc:
        if exc.status.code == 404:  # the CRD went away meanwhile
            return []
        raise
    deleted = []
    for obj in owned:
        labels = obj["metadata"].get("labels") or {}
        if (
            labels.get("app.kubernetes.io/instance") == meta["name"]
            and obj["metadata"]["name"] not in keep
            and await delete_object(client, obj, meta["namespace"])
        ):
            deleted.append(
                f"Certificate {obj['metadata']['name']}: deleted (not rendered in mode "
                f"{tls.owner_spec(pipeline).security.tls.active_mode or 'off'})"
            )
    return deleted


def certificate_names(pipeline: dict[str, Any]) -> frozenset[str]:
    """The cert-manager Certificates the owner's TLS mode renders now (none outside mode
    certManager): what ``prepare`` keeps; the others of the owner are deleted."""
    spec = tls.owner_spec(pipeline)
    return frozenset(obj["metadata"]["name"] for obj in certificate_objects(pipeline, spec))


async def prepare(
    secret_data: SecretData,
    pipeline: dict[str, Any],
    now: datetime.datetime | None = None,
    *,
    prune: bool = True,
) -> Prepared:
    """Write what the pipeline's TLS mode needs before its workloads are applied (the current
    Secrets read through ``secret_data``), and, with ``prune``, delete the cert-manager
    Certificates it no longer renders (a LIST: the caller prunes when the rendered set
    changed, not on every reconcile). Raises SpecError (certManager without cert-manager)
    and lightkube.ApiError."""
    spec = tls.owner_spec(pipeline)
    moment = now or datetime.datetime.now(datetime.UTC)
    if spec.security.tls.active_mode == tls.MANAGED:
        prepared = await prepare_managed(secret_data, pipeline, spec, moment)
    elif spec.security.tls.active_mode == tls.CERT_MANAGER:
        prepared = await prepare_cert_manager(secret_data, pipeline, spec, moment)
    else:
        prepared = Prepared()
    if prune and pipeline.get("metadata", {}).get("uid"):
        keep = set(certificate_names(pipeline))
        prepared.actions += await prune_certificates(secret_data.client, pipeline, keep)
    return prepared
