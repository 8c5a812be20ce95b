"""The operator's per-run state (handlers/runtime.py) and the consumer set derived from kopf's
indices (handlers/consumers.py, handlers/secret_watch.py): requests coalesce, nobody waits
for them, and nothing per object outlives the object."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kvtrace_operator import k8s
from kvtrace_operator.handlers import consumers, secret_watch
from kvtrace_operator.handlers.runtime import ObjectLocks, Options, Runtime
from kvtrace_operator.render import consumer_tokens
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

FAST = Options(request_delay=0.02, status_delay=0.02, request_concurrency=2)


def runtime(options: Options = FAST) -> Runtime:
    return Runtime(client=None, options=options)


class Recorder:
    """A runner that records its calls; each run may take a while (``pause``)."""

    def __init__(self, pause: float = 0.0, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.running = 0
        self.most = 0
        self.pause, self.fail = pause, fail

    async def __call__(self, rt: Runtime, namespace: str, name: str, apply: bool) -> None:
        self.calls.append((namespace, name, apply))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.pause)
            if self.fail:
                raise RuntimeError("API server unreachable")
        finally:
            self.running -= 1


async def settle(rt: Runtime, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while len(rt.requests) and loop.time() < end:
        await asyncio.sleep(0.01)
    assert len(rt.requests) == 0, "requests still pending after the deadline"


async def test_a_burst_of_requests_for_one_object_makes_one_reconcile() -> None:
    rt, runner = runtime(), Recorder()
    rt.requests.runners["TracingPipeline"] = runner
    for _ in range(200):
        rt.request("TracingPipeline", "ns", "traces")  # returns at once: nobody waits
    assert runner.calls == []
    await settle(rt)
    assert runner.calls == [("ns", "traces", True)]


async def test_requests_during_a_run_make_exactly_one_more_run_and_apply_wins() -> None:
    rt, runner = runtime(), Recorder(pause=0.1)
    rt.requests.runners["KVCluster"] = runner
    rt.request("KVCluster", "ns", "kv", apply=False)
    await asyncio.sleep(0.06)  # the first run is under way
    assert runner.running == 1
    for apply in (False, True, False):
        rt.request("KVCluster", "ns", "kv", apply=apply)
    await settle(rt)
    assert runner.calls == [("ns", "kv", False), ("ns", "kv", True)]


async def test_status_refreshes_gather_longer_and_a_request_to_apply_cuts_the_wait() -> None:
    """Members becoming ready one after the other (a status refresh each) make one run
    after ``status_delay``; a request to apply (a deleted child) waits ``request_delay`` only."""
    rt, runner = runtime(Options(request_delay=0.02, status_delay=1.0)), Recorder()
    rt.requests.runners["KVCluster"] = runner
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        rt.request("KVCluster", "ns", "kv", apply=False)
        await asyncio.sleep(0.05)
    await settle(rt)
    assert runner.calls == [("ns", "kv", False)]
    assert loop.time() - started >= 1.0  # the status window, not request_delay
    rt.request("KVCluster", "ns", "kv", apply=False)
    await asyncio.sleep(0.05)
    rt.request("KVCluster", "ns", "kv", apply=True)
    requested = loop.time()
    await settle(rt)
    assert runner.calls[1:] == [("ns", "kv", True)]
    assert loop.time() - requested < 0.6, "the request to apply waited for the status window"


async def test_runs_are_bounded_and_a_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt, runner = runtime(), Recorder(pause=0.05, fail=True)
    rt.requests.runners["KVCluster"] = runner
    for index in range(6):
        rt.request("KVCluster", "ns", f"kv{index}")
    await settle(rt)
    assert len(runner.calls) == 6 and runner.most == 2  # request_concurrency
    assert "queued reconcile of KVCluster ns/kv0 failed: API server unreachable" in caplog.text


async def test_a_pipeline_request_does_not_queue_behind_many_cluster_requests() -> None:
    """Each kind has its own ``request_concurrency`` runs: a pipeline requested after 20
    KVClusters (each run slow) runs at once, not after them."""
    rt, clusters, pipelines = runtime(), Recorder(pause=0.2), Recorder()
    rt.requests.runners.update({"KVCluster": clusters, "TracingPipeline": pipelines})
    for index in range(20):
        rt.request("KVCluster", "ns", f"kv{index}")
    rt.request("TracingPipeline", "ns", "traces")
    loop = asyncio.get_running_loop()
    end = loop.time() + 5.0
    while not pipelines.calls and loop.time() < end:
        await asyncio.sleep(0.01)
    assert pipelines.calls == [("ns", "traces", True)]
    assert len(clusters.calls) <= 4, "the pipeline waited for the clusters' runs"
    await settle(rt)
    assert clusters.most == 2 and len(clusters.calls) == 20


async def test_an_unknown_kind_is_refused_naming_the_known_ones() -> None:
    rt = runtime()
    rt.requests.runners["KVCluster"] = Recorder()
    with pytest.raises(KeyError, match="no runner for Deployment \\(registered: KVCluster\\)"):
        rt.request("Deployment", "ns", "app")


async def test_close_cancels_what_is_queued() -> None:
    rt, runner = runtime(Options(request_delay=10.0)), Recorder()
    rt.requests.runners["KVCluster"] = runner
    rt.request("KVCluster", "ns", "kv")
    await rt.requests.close()
    assert runner.calls == [] and len(rt.requests) == 0


async def test_object_locks_serialise_one_object_and_leave_nothing_behind() -> None:
    locks, order = ObjectLocks(), []

    async def hold(tag: str) -> None:
        async with locks.hold(("KVCluster", "ns", "kv")):
            order.append(f"{tag}+")
            await asyncio.sleep(0.01)
            order.append(f"{tag}-")

    await asyncio.gather(hold("a"), hold("b"), hold("c"))
    assert order == ["a+", "a-", "b+", "b-", "c+", "c-"]
    assert len(locks) == 0


async def test_create_delete_cycles_do_not_grow_the_state() -> None:
    """What a create/reconcile/delete cycle leaves per object is dropped by forget()."""
    rt = runtime()
    rt.requests.runners["KVCluster"] = Recorder()
    for cycle in range(300):
        name, uid = f"kv{cycle % 7}", f"uid-{cycle}"
        async with rt.lock("KVCluster", "ns", name):
            rt.validated[uid] = {("StatefulSet", name): "checksum"}
            rt.certificates_kept[uid] = frozenset()
            rt.applied[uid] = {("StatefulSet", name): k8s.Applied("render", "g1/labels")}
            rt.deliveries[("ns", name)] = (("True", "Delivered", ""), {})
            rt.rechecks[("ns", name)] = asyncio.get_running_loop().create_task(asyncio.sleep(60))
        rt.request("KVCluster", "ns", name)
        rt.forget("KVCluster", "ns", name, uid)
        rt.forget("TracingPipeline", "ns", name, uid)
    await settle(rt)
    assert rt.sizes() == {
        "locks": 0,
        "requests": 0,
        "validated": 0,
        "applied": 0,
        "certificates_kept": 0,
        "secret_data": 0,
        "deliveries": 0,
        "rechecks": 0,
        "injection_events": 0,
    }


async def test_an_entry_written_by_a_reconcile_under_way_at_deletion_is_dropped_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kvtrace_operator.handlers import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "LATE_WRITES_S", 0.05)
    rt = runtime()
    rt.validated["uid-1"] = {}
    rt.forget("KVCluster", "ns", "kv", "uid-1")
    rt.validated["uid-1"] = {}  # the apply of a reconcile that read kv before its deletion
    await asyncio.sleep(0.2)
    assert rt.validated == {}


INDICES: dict[str, Any] = {
    consumers.CLUSTERS_INDEX: {
        ("ns", "traces"): [
            ("KVCluster", "orders"),
            ("KVCluster", "carts"),
            ("KVCluster", "orders"),
        ],
        ("other", "traces"): [("KVCluster", "elsewhere")],
    },
    secret_watch.INDEX: {("ns", "traces-ca"): ["traces"]},
    secret_watch.CLIENT_INDEX: {("ns", "orders-otlp-client-token"): [("traces", "orders")]},
}


def test_the_consumers_are_read_from_the_indices_per_namespace_and_pipeline() -> None:
    found = consumers.referencing(INDICES, "ns", "traces")
    assert found == [("KVCluster", "carts"), ("KVCluster", "orders")]
    assert consumers.cluster_names(found) == ["carts", "orders"]
    assert consumers.referencing(INDICES, "ns", "nothing") == []
    assert consumers.referencing({}, "ns", "traces") == []  # before kopf filled its indices


def test_a_consumer_set_is_a_function_of_its_sources() -> None:
    auth = parse_pipeline(
        {"security": {"auth": {"consumers": [{"name": "billing"}]}}}
    ).security.auth
    referencing = consumers.referencing(INDICES, "ns", "traces")
    first = consumer_tokens.consumers(auth, "traces", referencing)
    assert [c.label for c in first] == [
        "pipeline",
        "KVCluster/carts",
        "KVCluster/orders",
        "consumer/billing",
    ]
    assert consumer_tokens.consumers(auth, "traces", list(reversed(referencing))) == first
    with pytest.raises(ValueError, match="no token Secret for consumers of kind 'Pod'"):
        consumer_tokens.consumers(auth, "traces", [("Pod", "p")])


def test_a_secret_change_reaches_the_pipelines_and_clusters_it_concerns() -> None:
    assert secret_watch.affected(INDICES, "ns", "traces-ca") == (["traces"], ["carts", "orders"])
    assert secret_watch.affected(INDICES, "ns", "orders-otlp-client-token") == (
        ["traces"],
        ["orders"],
    )
    assert secret_watch.affected(INDICES, "ns", "unrelated") == ([], [])


async def test_tokens_ready_is_false_while_the_consumers_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cluster arriving while the token file is written: the file holds the older set, so
    TokensReady says ConsumersChanged (not True) and one more reconcile is requested."""
    from kvtrace_operator.handlers import pipeline, secret_gate
    from kvtrace_operator.render.status import condition

    rt, runner = runtime(), Recorder()
    rt.requests.runners["TracingPipeline"] = runner
    index = {("ns", "traces"): [("KVCluster", "a")]}
    rt.indices = {consumers.CLUSTERS_INDEX: index}
    body = {"metadata": {"namespace": "ns", "name": "traces", "generation": 2}}

    async def written(client: Any, pipe: Any, referencing: Any) -> dict[str, Any]:
        index[("ns", "traces")] = [("KVCluster", "a"), ("KVCluster", "b")]  # b arrives meanwhile
        return dict(
            condition(
                "TokensReady",
                True,
                "TokensFound",
                "the collector accepts the tokens of: a",
                generation=2,
                now="2026-01-01T00:00:00Z",
            )
        )

    monkeypatch.setattr(secret_gate, "sync_tokens", written)
    moved = await pipeline.sync_tokens(rt, body, [("KVCluster", "a")])
    assert moved is not None and (moved["status"], moved["reason"]) == ("False", "ConsumersChanged")
    await settle(rt)
    assert runner.calls == [("ns", "traces", True)]
    # Nothing moved during the next write: the condition is the token set's own.
    steady = await pipeline.sync_tokens(rt, body, consumers.referencing(rt.indices, "ns", "traces"))
    assert steady is not None and steady["status"] == "True"


async def test_memory_is_released_once_after_a_burst_of_deletions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kvtrace_operator.handlers import runtime as runtime_module

    released: list[float] = []
    refreshed: list[object] = []

    async def refresh_pool(client: object) -> None:
        """The idle connections closed first (their TLS buffers are freed then)."""
        assert len(released) == len(refreshed)
        refreshed.append(client)

    async def until(count: int) -> None:
        """Poll (deadline 10 s: a loaded machine) until ``count`` releases happened."""
        deadline = asyncio.get_running_loop().time() + 10
        while len(released) < count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    monkeypatch.setattr(runtime_module, "RELEASE_AFTER_S", 1.0)
    monkeypatch.setattr(runtime_module, "release_memory", lambda: released.append(1.0))
    monkeypatch.setattr(runtime_module, "refresh_pool", refresh_pool)
    rt = runtime()
    for index in range(20):
        rt.forget("KVCluster", "ns", f"kv{index}", f"uid-{index}")
    await until(1)
    assert released == [1.0] and refreshed == [rt.client]
    # The garbage collector deleting the children afterwards postpones the next release
    # until it is done, then the memory their events used goes back too.
    rt.forget("KVCluster", "ns", "kv-last", "uid-last")
    for _ in range(5):
        await asyncio.sleep(0.05)
        rt.deletion_seen()
    assert released == [1.0]
    await until(2)
    assert released == [1.0, 1.0]


def test_the_objects_index_keeps_no_copy_of_the_object() -> None:
    """What the index of our resources keeps: no managedFields, no annotation copying the
    object (kopf's diff base, kubectl's last-applied), the rest as it is."""
    from kvtrace_operator.handlers.common import slim

    body = {
        "metadata": {
            "name": "kv",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {
                "kvtrace.dev/last-handled-configuration": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "a",
            },
        },
        "spec": {"replicas": 3},
        "status": {"phase": "Running"},
    }
    kept = slim(body)
    assert kept == {
        "metadata": {"name": "kv", "annotations": {"team": "a"}},
        "spec": {"replicas": 3},
        "status": {"phase": "Running"},
    }
    assert "managedFields" in body["metadata"]  # a copy: kopf's body is untouched
    del body["metadata"]["annotations"]["team"]
    assert "annotations" not in slim(body)["metadata"]


async def test_at_most_reconcile_concurrency_reconciles_of_a_kind_work_at_once() -> None:
    """200 resources created at once: their reconciles queue for a place (first come, first
    served) instead of all holding their renders while the API server works through them;
    another kind has places of its own, and one object's reconciles still go one at a time."""
    rt = runtime(Options(reconcile_concurrency=2))
    running: dict[str, int] = {"KVCluster": 0, "TracingPipeline": 0}
    most: dict[str, int] = {"KVCluster": 0, "TracingPipeline": 0}
    order: list[str] = []

    async def work(kind: str, name: str) -> None:
        async with rt.lock(kind, "ns", name):
            order.append(name)
            running[kind] += 1
            most[kind] = max(most[kind], running[kind])
            await asyncio.sleep(0.02)
            running[kind] -= 1

    await asyncio.gather(
        *(work("KVCluster", f"kv{i}") for i in range(6)),
        work("TracingPipeline", "traces"),
        work("KVCluster", "kv0"),
    )
    assert most == {"KVCluster": 2, "TracingPipeline": 1}
    assert order[:2] == ["kv0", "kv1"] and order.count("kv0") == 2
    assert len(rt.locks) == 0
