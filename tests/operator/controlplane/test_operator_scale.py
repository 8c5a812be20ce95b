"""The operator at scale, on the real API server: no reconcile applies a spec older than the
API server's (a stale body from a resync timer that fired while the worker was busy), a new
cluster writes each Secret once and an update its StatefulSet once, a pipeline's consumers
and token file follow the live clusters through create/delete cycles, and the per-object
state returns to its baseline once the clusters are gone."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack.operator_fixtures import Kube, Operator
from kvtrace.devstack.proc import free_port
from kvtrace.devstack.pytest_plugin import dump_log_if_failed
from kvtrace_operator import handlers, k8s
from kvtrace_operator.handlers import kvcluster as kvcluster_handlers
from kvtrace_operator.render.consumer_tokens import TOKEN_SET_KEY, parse, token_set_secret

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0  # generous: the machine running the suite is small and busy


def cluster(name: str, cpu: str = "100m", pipeline: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": 1,
        "replicationFactor": 1,
        "resources": {"requests": {"cpu": cpu}},
    }
    if pipeline:
        spec["tracing"] = {"pipelineRef": {"name": pipeline}}
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name},
        "spec": spec,
    }


def set_cpu(kube: Kube, name: str, cpu: str) -> None:
    """Update the KVCluster's cpu request."""
    patch = {"spec": {"resources": {"requests": {"cpu": cpu}}}}
    kube.run("patch", "kvcluster", name, "--type=merge", "-p", json.dumps(patch))


def sts_cpu(kube: Kube, name: str) -> tuple[str, int]:
    """(cpu request of the node container, metadata.generation) of the cluster's StatefulSet."""
    sts = kube.get("statefulset", name) or {}
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return container["resources"]["requests"]["cpu"], int(sts["metadata"]["generation"])


@pytest.fixture
async def runtime(
    local_cluster: Any, crds: list[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[handlers.Runtime]:
    """The handlers' runtime in this process, against the local cluster (no kopf: the test
    plays the handlers' and the timer's parts itself)."""
    monkeypatch.setenv("KUBECONFIG", str(local_cluster.kubeconfig))
    runtime = handlers.start(k8s.make_client(), handlers.Options(request_delay=0.05), {})
    try:
        yield runtime
    finally:
        await runtime.requests.close()
        await runtime.client.close()


@pytest.fixture
def metrics_port(
    local_cluster: Any,
    kube_ns: Kube,
    crds: list[str],
    endpoint_map: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[int]:
    """The operator on the test's namespace serving its metrics on a free loopback port (the
    canary off: no collector runs behind the KWOK pods)."""
    port = free_port()
    log = tmp_path / "operator.log"
    operator = Operator(
        local_cluster,
        kube_ns.namespace,
        log,
        ["--metrics-port", str(port), "--canary-interval", "0"],
        endpoint_map.path,
    ).start()
    try:
        yield port
    finally:
        operator.stop()
        dump_log_if_failed(request, "operator log", log)


async def test_a_stale_body_from_the_resync_timer_never_undoes_an_update(
    runtime: handlers.Runtime, kube_ns: Kube
) -> None:
    """The race of the issue: the update is applied, then the resync timer, which fired while
    the object's worker was busy, runs with the body from before the update. The timer's
    reconcile must apply the API server's spec, not its body: the StatefulSet stays at 150m and
    is not written again (its generation: no flip-flop). Then both at once, the update queued
    behind the timer on the object's lock."""
    kube_ns.apply(cluster("kv"))
    stale = kube_ns.get("kvcluster", "kv")
    assert stale is not None
    await kvcluster_handlers.reconcile(runtime, stale)
    assert sts_cpu(kube_ns, "kv")[0] == "100m"

    set_cpu(kube_ns, "kv", "150m")
    updated = kube_ns.get("kvcluster", "kv")
    assert updated is not None
    await kvcluster_handlers.reconcile(runtime, updated)  # the update handler
    cpu, generation = sts_cpu(kube_ns, "kv")
    assert cpu == "150m"
    await kvcluster_handlers.reconcile(runtime, stale)  # the resync timer, with the old body
    assert sts_cpu(kube_ns, "kv") == ("150m", generation), "the stale body was applied"

    # A slow reconcile holds the object (as a blocked worker would) while the timer fires with
    # the old body and the next update arrives: whoever runs first applies the newest spec.
    async with runtime.lock("KVCluster", kube_ns.namespace, "kv"):
        timer = asyncio.create_task(kvcluster_handlers.reconcile(runtime, stale))
        set_cpu(kube_ns, "kv", "200m")
        newest = kube_ns.get("kvcluster", "kv")
        assert newest is not None
        update = asyncio.create_task(kvcluster_handlers.reconcile(runtime, newest))
        await asyncio.sleep(0.2)
        assert not timer.done() and not update.done()
    await asyncio.wait_for(asyncio.gather(timer, update), TIMEOUT)
    assert sts_cpu(kube_ns, "kv") == ("200m", generation + 1), "applied once, at the newest spec"
    status = (kube_ns.get("kvcluster", "kv") or {}).get("status") or {}
    assert status.get("observedGeneration") == newest["metadata"]["generation"]


async def test_a_new_cluster_writes_each_of_its_secrets_once(
    runtime: handlers.Runtime, kube_ns: Kube
) -> None:
    """A new cluster's first reconcile writes each TLS Secret once (before the workloads that
    mount them; not again with the other children) and creates its token Secret once; a
    second reconcile writes no Secret."""
    writes: list[tuple[str, str]] = []
    k8s.count_requests(
        runtime.client,
        lambda method, resource, dry_run: (
            writes.append((method, resource))
            if resource == "secrets" and method in WRITES and not dry_run
            else None
        ),
    )
    kube_ns.apply(cluster("kv"))
    body = kube_ns.get("kvcluster", "kv")
    assert body is not None
    await kvcluster_handlers.reconcile(runtime, body)
    owned = [
        s["metadata"]["name"]
        for s in kube_ns.list("secrets")
        if k8s.owned_by(s, body["metadata"]["uid"])
    ]
    assert len(owned) >= 3, owned  # the TLS CA, trust bundle and leaf, and the token
    assert sorted(writes) == sorted(
        [("POST", "secrets")] + [("PATCH", "secrets")] * (len(owned) - 1)
    ), (owned, writes)
    writes.clear()
    await kvcluster_handlers.reconcile(runtime, body)
    assert writes == []


def samples(port: int, name: str) -> list[tuple[dict[str, str], float]]:
    """The operator's metric ``name``: (labels, value) of each series."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            labels = dict(re.findall(r'(\w+)="([^"]*)"', series))  # values may be empty
            found.append((labels, float(value)))
    return found


def metrics(port: int) -> dict[str, int]:
    """``kvtrace_operator_state_entries`` by store."""
    entries = samples(port, "kvtrace_operator_state_entries")
    return {labels["store"]: int(value) for labels, value in entries}


WRITES = ("PATCH", "POST", "PUT", "DELETE")
# not children: what a reconcile writes beside them (the permission check's review stores nothing)
NOT_CHILDREN = ("events", "kvclusters/status", "tracingpipelines/status", "selfsubjectrulesreviews")


class Requests:
    """The operator's API requests (kvtrace_operator_api_requests) and KVCluster reconciles."""

    def __init__(self, port: int) -> None:
        self.port = port

    def reconciles(self) -> float:
        found = samples(self.port, "kvtrace_operator_reconciles_total")
        return sum(v for labels, v in found if labels["kind"] == "KVCluster")

    def child_writes(self) -> dict[str, int]:
        """Writes (no dry run) of children by resource: status and events aside."""
        found: dict[str, int] = {}
        for labels, value in samples(self.port, "kvtrace_operator_api_requests_total"):
            resource, write = labels["resource"], labels["method"] in WRITES
            if write and labels["dry_run"] == "false" and resource not in NOT_CHILDREN:
                found[resource] = found.get(resource, 0) + int(value)
        return found

    def total(self) -> int:
        return int(sum(v for _, v in samples(self.port, "kvtrace_operator_api_requests_total")))

    def dry_runs(self) -> dict[str, int]:
        """Dry-run requests by resource."""
        found: dict[str, int] = {}
        for labels, value in samples(self.port, "kvtrace_operator_api_requests_total"):
            if labels["dry_run"] == "true":
                found[labels["resource"]] = found.get(labels["resource"], 0) + int(value)
        return found

    def by_resource(self) -> dict[str, int]:
        """Every request (reads too) by ``METHOD resource``."""
        found: dict[str, int] = {}
        for labels, value in samples(self.port, "kvtrace_operator_api_requests_total"):
            key = f"{labels['method']} {labels['resource']}"
            found[key] = found.get(key, 0) + int(value)
        return found

    def after_resyncs(self, poll: Any, count: int) -> None:
        """Return once ``count`` more KVCluster reconciles ran (the 3 s resync timer's)."""
        start = self.reconciles()
        poll(lambda: self.reconciles() >= start + count, timeout=TIMEOUT, message="resyncs")


def sts_template_cpu(kube: Kube) -> str:
    return sts_cpu(kube, "kv")[0]


def test_the_resync_writes_nothing_unchanged_and_repairs_what_drifted(
    metrics_port: int, kube_ns: Kube, poll: Any
) -> None:
    """A new cluster's create dry-runs its StatefulSet only and reads no Secret. The resync
    timer (3 s here) of an unchanged cluster sends no write and at most one read (on average); a child edited by hand (the peers ConfigMap, the StatefulSet's spec) is re-applied
    by the next resync, and only that child; one deleted by hand comes back. An update
    dry-runs only the child it changed."""
    requests = Requests(metrics_port)
    kube_ns.apply(cluster("kv"))
    poll(
        lambda: kube_ns.condition_is("kvcluster", "kv", "Ready", "True"),
        timeout=TIMEOUT,
        message="kv Ready",
    )
    requests.after_resyncs(poll, 2)  # a reconcile under way at Ready has finished
    # The create dry-ran only the child carrying the spec's free-form values, created its
    # token Secrets without reading them first (the Secret watch had seen none), wrote
    # status.tls with the rest of the status, and posted no event for a first Ready=False nor
    # for the TLS Secrets its Created event names.
    assert requests.dry_runs() == {"statefulsets": 1}, requests.dry_runs()
    assert requests.by_resource().get("GET secrets", 0) == 0, requests.by_resource()
    assert (kube_ns.get("kvcluster", "kv") or {})["status"]["tls"]["certificates"]
    assert not {"NotReady", "CertificatesRenewed"} & {
        e["reason"] for e in kube_ns.list("events") if e["involvedObject"]["name"] == "kv"
    }
    writes, total, reconciles = requests.child_writes(), requests.total(), requests.reconciles()
    before = requests.by_resource()
    requests.after_resyncs(poll, 3)
    assert requests.child_writes() == writes, "an unchanged cluster's resync wrote a child"
    # Everything it reads is in the operator's watches: the cluster itself, its children, its
    # Secrets' versions and data (TLS, token); no dry run, no cert-manager lookup.
    sent = {k: v - before.get(k, 0) for k, v in requests.by_resource().items()}
    sent = {k: v for k, v in sent.items() if v}
    per_resync = (requests.total() - total) / (requests.reconciles() - reconciles)
    assert per_resync <= 1, f"{per_resync:.1f} requests per unchanged resync: {sent}"
    generation = sts_cpu(kube_ns, "kv")[1]

    config = kube_ns.get("configmap", "kv-config") or {}
    peers = config["data"]["peers"]
    kube_ns.run("patch", "configmap", "kv-config", "--type=merge", "-p", '{"data":{"peers":"x"}}')
    poll(
        lambda: (kube_ns.get("configmap", "kv-config") or {})["data"]["peers"] == peers,
        timeout=TIMEOUT,
        message="the peers file repaired by the resync",
    )
    repaired = requests.child_writes()
    assert repaired.get("configmaps", 0) == writes.get("configmaps", 0) + 1
    assert repaired.get("statefulsets") == writes.get("statefulsets")
    assert sts_cpu(kube_ns, "kv")[1] == generation, "the StatefulSet was written"

    patch = {"spec": {"template": {"spec": {"containers": [{"name": "kvnode"}]}}}}
    container = patch["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "999m"}}
    kube_ns.run("patch", "statefulset", "kv", "--type=strategic", "-p", json.dumps(patch))
    poll(
        lambda: sts_template_cpu(kube_ns) == "100m",
        timeout=TIMEOUT,
        message="the StatefulSet's spec repaired by the resync",
    )
    kube_ns.run("delete", "poddisruptionbudget", "kv")
    poll(lambda: kube_ns.get("poddisruptionbudget", "kv"), timeout=TIMEOUT, message="PDB back")
    writes = requests.child_writes()
    requests.after_resyncs(poll, 3)
    assert requests.child_writes() == writes, "repaired, the cluster's resync still writes"

    # An update dry-runs only the children its render changed: the StatefulSet; and writes it
    # once (the status refreshes of its rollout, and the resyncs after, do not write it again).
    dry_runs, writes = requests.dry_runs(), requests.child_writes()
    set_cpu(kube_ns, "kv", "150m")
    poll(lambda: sts_template_cpu(kube_ns) == "150m", timeout=TIMEOUT, message="updated")
    more = {k: v - dry_runs.get(k, 0) for k, v in requests.dry_runs().items()}
    assert {k: v for k, v in more.items() if v} == {"statefulsets": 1}, more
    requests.after_resyncs(poll, 3)
    more = {k: v - writes.get(k, 0) for k, v in requests.child_writes().items()}
    assert {k: v for k, v in more.items() if v} == {"statefulsets": 1}, more


def token_file_labels(kube: Kube, pipeline: str) -> set[str]:
    secret = kube.get("secret", token_set_secret(pipeline)) or {}
    text = base64.b64decode((secret.get("data") or {}).get(TOKEN_SET_KEY, "")).decode()
    return {label for _, label in parse(text)}


def test_consumers_and_state_follow_create_delete_cycles(
    metrics_port: int, kube_ns: Kube, poll: Any
) -> None:
    """Clusters created and deleted in bursts: each time the pipeline's status.consumers and
    the collector's token file hold exactly the live clusters (TokensReady True only then),
    and afterwards the operator's per-object state is back to its baseline."""
    port = metrics_port
    kube_ns.apply(
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "TracingPipeline",
            "metadata": {"name": "traces"},
            "spec": {},
        }
    )
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "TokensReady", "True"),
        timeout=TIMEOUT,
        message="pipeline TokensReady",
    )
    baseline = poll(lambda: metrics(port), timeout=TIMEOUT, message="operator metrics")
    names = [f"kv-{index}" for index in range(6)]
    for cycle in range(3):
        reads = Requests(port).by_resource().get("GET secrets", 0)
        kube_ns.apply(*(cluster(name, pipeline="traces") for name in names))
        expect_consumers(kube_ns, poll, names, f"cycle {cycle}: every cluster a consumer")
        # What the Secret watch has not seen yet is not read again and again: a new
        # cluster's TLS Secrets (it writes them), its token before it exists (the pipeline
        # waits for the watch's event; it keeps the one it made): at most 4 per cluster.
        reads = Requests(port).by_resource().get("GET secrets", 0) - reads
        assert reads <= 4 * len(names), f"cycle {cycle}: {reads} Secret reads (was 59)"
        kube_ns.run("delete", "kvcluster", "--all", "--wait=false")
        expect_consumers(kube_ns, poll, [], f"cycle {cycle}: no consumer left")

    def quiet() -> dict[str, int] | None:
        """No lock held, no request pending, and only the pipeline's own entries left (one
        written by a reconcile under way at a deletion goes LATE_WRITES_S = 60 s later)."""
        entries = metrics(port)
        idle = entries.get("locks") == 0 and entries.get("requests") == 0
        own = all(entries.get(store, 0) <= 1 for store in ("validated", "applied"))
        return entries if idle and own and entries.get("rechecks") == 0 else None

    settled = poll(quiet, timeout=TIMEOUT, message="no lock, no request, the pipeline's only")
    # Every other store is back at its baseline (taken while the pipeline may still have run);
    # the Secret data kept is the pipeline's own: no more entries than Secrets left (the
    # clusters' token Secrets went with them).
    expected = {
        **baseline,
        **{k: settled[k] for k in ("locks", "requests", "validated", "applied", "secret_data")},
    }
    assert settled == expected, (baseline, settled)
    poll(
        lambda: metrics(port)["secret_data"] <= len(kube_ns.list("secrets")),
        timeout=TIMEOUT,
        message="Secret data kept only of Secrets that exist",
    )


def expect_consumers(kube: Kube, poll: Any, names: list[str], message: str) -> None:
    labels = {"pipeline", *(f"KVCluster/{name}" for name in names)}

    def converged() -> bool:
        pipe = kube.get("tracingpipeline", "traces") or {}
        return (
            (pipe.get("status") or {}).get("consumers")
            == [
                {"kind": "KVCluster", "namespace": kube.namespace, "name": n} for n in sorted(names)
            ]
            and token_file_labels(kube, "traces") == labels
            and kube.condition_is("tracingpipeline", "traces", "TokensReady", "True")
        )

    poll(converged, timeout=TIMEOUT, message=message)
    # TokensReady True means the file holds exactly the live consumers.
    assert token_file_labels(kube, "traces") == labels
