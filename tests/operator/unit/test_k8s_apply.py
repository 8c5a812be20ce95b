"""The k8s layer against a fake API server (an httpx mock transport): the requests it sends
(server-side apply, field manager, force; status merge patches; events), what it reports,
what it prunes."""

from __future__ import annotations

import datetime
import json
from typing import Any

import httpx2
import pytest
from lightkube import ApiError, AsyncClient, KubeConfig

from kvtrace_operator import k8s
from kvtrace_operator.k8s.apply import list_children
from kvtrace_operator.render import checksum

pytestmark = pytest.mark.unit

OWNER = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "KVCluster",
    "metadata": {"name": "kv", "namespace": "ns1", "uid": "owner-uid"},
}
LABELS = {
    "app.kubernetes.io/managed-by": "kvtrace-operator",
    "app.kubernetes.io/name": "kvcluster",
    "app.kubernetes.io/instance": "kv",
}


def child(
    kind: str, name: str, uid: str = "owner-uid", rv: str = "1", api: str = "v1"
) -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns1",
            "labels": dict(LABELS),
            "resourceVersion": rv,
            "ownerReferences": [
                {
                    "apiVersion": "kvtrace.dev/v1alpha1",
                    "kind": "KVCluster",
                    "name": "kv",
                    "uid": uid,
                }
            ],
        },
    }


class FakeServer:
    """Just enough of the API: list by kind, apply (PATCH), delete. Records every request."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.requests: list[httpx2.Request] = []
        self.reject: dict[str, str] = {}  # name -> 422 message
        self.reject_code = 422

    PLURALS = {
        "configmaps": "ConfigMap",
        "secrets": "Secret",
        "services": "Service",
        "serviceaccounts": "ServiceAccount",
        "deployments": "Deployment",
        "statefulsets": "StatefulSet",
        "poddisruptionbudgets": "PodDisruptionBudget",
        "networkpolicies": "NetworkPolicy",
        "roles": "Role",
        "rolebindings": "RoleBinding",
    }

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        parts = request.url.path.strip("/").split("/")
        ns_at = parts.index("namespaces")
        assert parts[ns_at + 1] == "ns1"
        kind = self.PLURALS[parts[ns_at + 2]]
        if request.method == "GET":
            wanted = dict(
                term.split("=", 1) for term in request.url.params["labelSelector"].split(",")
            )
            items = [
                o
                for (k, _), o in self.objects.items()
                if k == kind and wanted.items() <= (o["metadata"].get("labels") or {}).items()
            ]
            return httpx2.Response(
                200,
                json={"kind": f"{kind}List", "apiVersion": "v1", "metadata": {}, "items": items},
            )
        name = parts[ns_at + 3]
        if request.method == "PATCH":
            body = json.loads(request.content)
            if name in self.reject:
                return httpx2.Response(
                    self.reject_code,
                    json={
                        "kind": "Status",
                        "apiVersion": "v1",
                        "code": self.reject_code,
                        "status": "Failure",
                        "reason": "Invalid",
                        "message": self.reject[name],
                    },
                )
            if request.url.params.get("dryRun") == "All":
                return httpx2.Response(200, json=body)
            old = self.objects.get((kind, name))
            new = dict(body)
            new["metadata"] = {
                **body["metadata"],
                "resourceVersion": str(
                    int(old["metadata"]["resourceVersion"])
                    + (0 if old and old.get("data") == body.get("data") else 1)
                )
                if old
                else "1",
            }
            self.objects[(kind, name)] = new
            return httpx2.Response(200, json=new)
        if request.method == "DELETE":
            if self.objects.pop((kind, name), None) is None:
                return httpx2.Response(
                    404,
                    json={
                        "kind": "Status",
                        "apiVersion": "v1",
                        "code": 404,
                        "status": "Failure",
                        "message": "not found",
                    },
                )
            return httpx2.Response(
                200, json={"kind": "Status", "apiVersion": "v1", "status": "Success"}
            )
        raise AssertionError(request)


def client_for(handler: Any) -> AsyncClient:
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "fake", "cluster": {"server": "http://api.invalid"}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
    )
    return AsyncClient(
        config=config, transport=httpx2.MockTransport(handler), field_manager="kvtrace-operator"
    )


def cm(name: str, data: str, uid: str = "owner-uid", rv: str = "1") -> dict[str, Any]:
    obj = child("ConfigMap", name, uid=uid, rv=rv)
    obj["data"] = {"k": data}
    return obj


async def test_apply_uses_server_side_apply_with_our_field_manager_and_force() -> None:
    server = FakeServer([])
    changes = await k8s.apply_children(client_for(server), OWNER, [cm("a", "x")])
    patches = [r for r in server.requests if r.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].headers["content-type"] == "application/apply-patch+yaml"
    assert patches[0].url.params["fieldManager"] == "kvtrace-operator"
    assert patches[0].url.params["force"] == "true"
    assert patches[0].url.path == "/api/v1/namespaces/ns1/configmaps/a"
    assert changes.created == ["ConfigMap/a"] and not changes.updated and not changes.deleted
    assert changes.applied[0]["kind"] == "ConfigMap"


async def test_apply_reports_updates_only_for_objects_that_changed() -> None:
    server = FakeServer([cm("same", "x"), cm("changed", "old")])
    changes = await k8s.apply_children(
        client_for(server), OWNER, [cm("same", "x"), cm("changed", "new")]
    )
    assert changes.updated == ["ConfigMap/changed"]
    assert changes.created == [] and bool(changes)


async def test_prune_deletes_only_our_unrendered_children() -> None:
    foreign = cm("foreign", "x", uid="someone-else")
    deployment = {
        **child("Deployment", "stale-lb", api="apps/v1"),
        "spec": {"selector": {}, "template": {}},
    }
    server = FakeServer([cm("keep", "x"), cm("stale", "x"), foreign, deployment])
    changes = await k8s.apply_children(client_for(server), OWNER, [cm("keep", "x")])
    assert sorted(changes.deleted) == ["ConfigMap/stale", "Deployment/stale-lb"]
    assert ("ConfigMap", "foreign") in server.objects
    deletes = [r for r in server.requests if r.method == "DELETE"]
    # every apply is done before anything is deleted
    last_patch = max(i for i, r in enumerate(server.requests) if r.method == "PATCH")
    assert all(server.requests.index(r) > last_patch for r in deletes)


async def test_prune_can_be_disabled_and_lists_every_prunable_kind() -> None:
    server = FakeServer([cm("stale", "x")])
    changes = await k8s.apply_children(client_for(server), OWNER, [], prune=False)
    assert not changes and ("ConfigMap", "stale") in server.objects
    listed = {r.url.path.rsplit("/", 1)[-1] for r in server.requests if r.method == "GET"}
    assert listed == set(FakeServer.PLURALS)


async def test_list_children_fills_kind_and_filters_by_owner() -> None:
    other_owner = cm("other-cluster", "x", uid="other")
    other_owner["metadata"]["labels"]["app.kubernetes.io/instance"] = "other"
    server = FakeServer([cm("mine", "x"), cm("namesake", "x", uid="other"), other_owner])
    found = await list_children(client_for(server), OWNER, [("v1", "ConfigMap")])
    assert [(o["kind"], o["metadata"]["name"]) for o in found] == [("ConfigMap", "mine")]
    # The API server selects one owner's children: the operator never reads the namespace's.
    selectors = {r.url.params["labelSelector"] for r in server.requests}
    assert selectors == {
        "app.kubernetes.io/name=kvcluster,app.kubernetes.io/instance=kv,"
        "app.kubernetes.io/managed-by=kvtrace-operator"
    }


async def test_validate_first_dry_runs_everything_before_writing_anything() -> None:
    server = FakeServer([])
    await k8s.apply_children(
        client_for(server), OWNER, [cm("a", "x"), cm("b", "y")], validate_first=True
    )
    patches = [
        (r.url.path.rsplit("/", 1)[-1], r.url.params.get("dryRun"))
        for r in server.requests
        if r.method == "PATCH"
    ]
    assert patches == [("a", "All"), ("b", "All"), ("a", None), ("b", None)]


async def test_a_binding_to_a_role_of_the_same_render_passes_the_dry_run() -> None:
    """Without ``bind`` the API server reads the bound Role during a dry run: 404 until the
    real apply has created it, just before the binding."""
    server = FakeServer([])
    server.reject["binding"] = 'rolebindings.rbac.authorization.k8s.io "binding" not found'
    server.reject_code = 404
    rbac = "rbac.authorization.k8s.io/v1"
    rendered = [child("Role", "role", api=rbac), child("RoleBinding", "binding", api=rbac)]

    async def role_then_binding() -> None:
        await k8s.apply_children(client_for(server), OWNER, rendered, validate_first=True)

    with pytest.raises(ApiError):  # the fake refuses the real apply too: it is attempted
        await role_then_binding()
    dry_runs = [r for r in server.requests if r.url.params.get("dryRun") == "All"]
    assert [r.url.path.rsplit("/", 2)[-2] for r in dry_runs] == ["roles", "rolebindings"]
    server.reject_code = 422  # anything else than 404 on the binding still stops the apply
    with pytest.raises(k8s.Rejected):
        await role_then_binding()


async def test_a_rejected_child_leaves_nothing_half_applied() -> None:
    server = FakeServer([])
    server.reject["b"] = 'ConfigMap "b" is invalid: data[k]: Invalid value'
    with pytest.raises(k8s.Rejected, match=r"rejected ConfigMap/b: .*data\[k\]"):
        await k8s.apply_children(
            client_for(server), OWNER, [cm("a", "x"), cm("b", "y")], validate_first=True
        )
    assert not [r for r in server.requests if r.method == "PATCH" and "dryRun" not in r.url.params]
    assert server.objects == {}


@pytest.mark.parametrize(
    ("code", "message", "rejected"),
    [
        (422, "spec.template: Invalid value", True),
        (400, "bad request", True),
        (
            500,
            "failed to create typed patch object (ns/kv; apps/v1, Kind=StatefulSet): "
            ".spec.template.spec.affinity.podAntiAffinity: expected map",
            True,
        ),
        (
            500,
            "failed to convert new object (ns/c; apps/v1, Kind=Deployment): quantities must match",
            True,
        ),
        (500, "etcdserver: request timed out", False),  # transient: retried, not a spec problem
    ],
)
async def test_a_child_the_api_server_refuses_is_rejected(
    code: int, message: str, rejected: bool
) -> None:
    server = FakeServer([])
    server.reject["a"] = message
    server.reject_code = code
    with pytest.raises(k8s.Rejected if rejected else ApiError):
        await k8s.apply_children(client_for(server), OWNER, [cm("a", "x")])


async def test_an_immutable_field_deletes_the_child_to_recreate_it() -> None:
    server = FakeServer([cm("a", "x")])
    server.reject["a"] = "spec.selector: Invalid value: field is immutable"
    with pytest.raises(k8s.Recreating, match="ConfigMap/a"):
        await k8s.apply_children(client_for(server), OWNER, [cm("a", "x")])
    assert ("ConfigMap", "a") not in server.objects
    delete = next(r for r in server.requests if r.method == "DELETE")
    assert delete.url.params["propagationPolicy"] == "Background"


def test_stale_children_and_ownership() -> None:
    existing = {k8s.child_key(o): k8s.seen(o) for o in [cm("a", "x"), cm("b", "x")]}
    assert [child.name for child in k8s.stale_children(existing, [cm("a", "x")])] == ["b"]
    assert k8s.owned_by(cm("a", "x"), "owner-uid") and not k8s.owned_by(
        {"metadata": {}}, "owner-uid"
    )
    assert k8s.child_key(cm("a", "x")) == ("ConfigMap", "a")


def statefulset(
    generation: int, rv: str, ready: int = 0, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    obj = child("StatefulSet", "kv", rv=rv, api="apps/v1")
    obj["metadata"]["generation"] = generation
    obj["metadata"]["labels"].update(labels or {})
    obj["spec"] = {"replicas": 3, "template": {"metadata": {"annotations": {}}}}
    obj["status"] = {"readyReplicas": ready, "observedGeneration": generation}
    return obj


def test_a_child_s_version_ignores_its_status_but_not_its_spec_or_labels() -> None:
    """A controller writing the status moves the resourceVersion, not the version; someone
    writing the spec (generation) or the labels moves it; kinds without a generation use the
    resourceVersion."""
    base = k8s.seen(statefulset(1, "10"))
    assert k8s.seen(statefulset(1, "11", ready=3)).version == base.version
    assert (k8s.seen(statefulset(1, "11", ready=3)).workload or {})["readyReplicas"] == 3
    assert k8s.seen(statefulset(2, "12")).version != base.version
    assert k8s.seen(statefulset(1, "12", labels={"x": "y"})).version != base.version
    assert k8s.seen(cm("a", "x", rv="5")).version == "rv5"
    assert k8s.seen(cm("a", "x")).workload is None


def test_drifted_is_missing_rerendered_or_changed_by_someone_else() -> None:
    obj = cm("a", "x")
    now = k8s.seen(cm("a", "x", rv="7"))
    applied = k8s.Applied(checksum(obj), "rv7")
    assert not k8s.drifted(obj, now, applied)
    assert k8s.drifted(obj, None, applied)  # deleted
    assert k8s.drifted(obj, now, None)  # never applied by this process
    assert k8s.drifted(cm("a", "y"), now, applied)  # rendered differently
    assert k8s.drifted(obj, k8s.seen(cm("a", "edited", rv="8")), applied)  # edited by hand


def test_a_watch_behind_the_last_apply_is_not_a_drift() -> None:
    """The watch still shows the generation before the operator's own apply (it lags on a busy
    API server): not applied again. A later generation (someone wrote the spec) or the same
    generation with other labels is a drift."""
    obj = statefulset(2, "20")
    applied = k8s.Applied(checksum(obj), k8s.seen(statefulset(2, "20")).version)
    assert not k8s.drifted(obj, k8s.seen(statefulset(1, "10")), applied)  # not caught up yet
    assert not k8s.drifted(obj, k8s.seen(statefulset(2, "21", ready=3)), applied)
    assert k8s.drifted(obj, k8s.seen(statefulset(3, "30")), applied)  # written by someone else
    assert k8s.drifted(obj, k8s.seen(statefulset(2, "22", labels={"x": "y"})), applied)
    assert k8s.apply.generation_of(applied.version) == 2
    assert k8s.apply.generation_of("rv7") is None


async def test_children_written_before_by_the_same_reconcile_are_not_sent_again() -> None:
    """A TLS Secret (or a generated token) the reconcile wrote just before the children's
    apply is taken as applied: counted as created, remembered for the next apply, not sent."""
    server = FakeServer([])
    client = client_for(server)
    rendered = [cm("tls", "x"), cm("b", "y")]
    written = {("ConfigMap", "tls"): cm("tls", "x", rv="4")}
    changes = await k8s.apply_children(
        client, OWNER, rendered, observed={}, last={}, written=written
    )
    assert [r.url.path.rsplit("/", 1)[-1] for r in server.requests] == ["b"]
    assert changes.created == ["ConfigMap/tls", "ConfigMap/b"]
    assert changes.last[("ConfigMap", "tls")] == k8s.Applied(checksum(cm("tls", "x")), "rv4")


async def test_only_drifted_children_are_applied_and_nothing_is_sent_when_none_did() -> None:
    server = FakeServer([])
    client = client_for(server)
    rendered = [cm("a", "x"), cm("b", "y"), cm("c", "z")]
    first = await k8s.apply_children(client, OWNER, rendered, observed={}, last={})
    assert first.created == ["ConfigMap/a", "ConfigMap/b", "ConfigMap/c"]
    observed = {key: k8s.seen(server.objects[key]) for key in server.objects}
    server.requests.clear()
    again = await k8s.apply_children(client, OWNER, rendered, observed=observed, last=first.last)
    assert server.requests == [] and not again and again.last == first.last

    del observed[("ConfigMap", "b")]  # deleted by hand: the watch saw it go
    server.objects.pop(("ConfigMap", "b"))
    observed[("ConfigMap", "c")] = k8s.seen(cm("c", "edited", rv="9"))  # edited by hand
    repaired = await k8s.apply_children(client, OWNER, rendered, observed=observed, last=first.last)
    assert [r.url.path.rsplit("/", 1)[-1] for r in server.requests] == ["b", "c"]
    assert repaired.created == ["ConfigMap/b"] and repaired.updated == ["ConfigMap/c"]


def test_every_prunable_kind_resolves_to_a_lightkube_resource() -> None:
    for api_version, kind in k8s.PRUNABLE_KINDS:
        assert k8s.resource_class(api_version, kind).__name__ == kind
    assert k8s.resource_class("kvtrace.dev/v1alpha1", "KVCluster") is k8s.KVCluster


# --------------------------------------------------------------------------- events, status

PIPELINE = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "TracingPipeline",
    "metadata": {"name": "traces", "namespace": "ns1", "uid": "u1", "resourceVersion": "7"},
}


def test_event_names_the_object_and_the_operator() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    event = k8s.build_event(PIPELINE, "Created", "Deployment/traces-collector", now=when)
    assert event["involvedObject"] == {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "name": "traces",
        "namespace": "ns1",
        "uid": "u1",
        "resourceVersion": "7",
    }
    assert event["metadata"] == {"generateName": "traces.", "namespace": "ns1"}
    assert event["source"] == {"component": "kvtrace-operator"}
    assert (event["type"], event["reason"], event["firstTimestamp"]) == (
        "Normal",
        "Created",
        "2026-01-02T03:04:05Z",
    )
    assert len(k8s.build_event(PIPELINE, "X", "m" * 5000)["message"]) == 1024


def recording_client(status: int = 200) -> tuple[AsyncClient, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if status != 200:
            return httpx2.Response(
                status,
                json={
                    "kind": "Status",
                    "apiVersion": "v1",
                    "code": status,
                    "status": "Failure",
                    "message": "nope",
                },
            )
        body = json.loads(request.content) if request.content else {}
        return httpx2.Response(
            200 if request.method == "PATCH" else 201,
            json={**PIPELINE, **body} if request.method == "PATCH" else body,
        )

    return client_for(handler), seen


async def test_post_event_creates_a_core_event() -> None:
    client, seen = recording_client()
    await k8s.post_event(client, PIPELINE, "Updated", "ConfigMap/x", "Normal")
    assert seen[0].method == "POST" and seen[0].url.path == "/api/v1/namespaces/ns1/events"
    assert json.loads(seen[0].content)["reason"] == "Updated"


async def test_post_event_failure_is_not_fatal() -> None:
    client, _ = recording_client(status=403)
    await k8s.post_event(client, PIPELINE, "Updated", "ConfigMap/x")


async def test_patch_status_is_a_merge_patch_of_the_status_subresource() -> None:
    client, seen = recording_client()
    await k8s.patch_status(client, k8s.TracingPipeline, "traces", "ns1", {"consumers": ["kv"]})
    assert seen[0].method == "PATCH"
    assert (
        seen[0].url.path
        == "/apis/kvtrace.dev/v1alpha1/namespaces/ns1/tracingpipelines/traces/status"
    )
    assert seen[0].headers["content-type"] == "application/merge-patch+json"
    assert json.loads(seen[0].content) == {"status": {"consumers": ["kv"]}}


async def test_patch_status_of_a_deleted_object_is_ignored() -> None:
    client, _ = recording_client(status=404)
    await k8s.patch_status(client, k8s.KVCluster, "gone", "ns1", {"phase": "Running"})


# --------------------------------------------------------------------------- members (drain)


def test_member_url_is_the_stable_dns_name_on_the_client_port() -> None:
    cluster = {"metadata": {"name": "kv", "namespace": "ns1"}}
    assert (
        k8s.member_url(cluster, 3) == "http://kv-3.kv-peers.ns1.svc.cluster.local:7070/v1/cluster"
    )


@pytest.mark.parametrize(
    ("view", "drained"),
    [
        ({"member": False, "rebalancing": False, "hints_pending": {}}, True),
        ({"member": False, "rebalancing": False, "hints_pending": {"kv-0": 0}}, True),
        ({"member": False, "rebalancing": True, "hints_pending": {}}, False),  # still streaming
        (
            {"member": False, "rebalancing": False, "hints_pending": {"kv-0": 3}},
            False,
        ),  # would lose hints
        (
            {"member": True, "rebalancing": False, "hints_pending": {}},
            False,
        ),  # has not seen the new peers
        (None, False),  # unreachable
    ],
)
def test_a_leaving_member_is_drained_only_when_it_holds_nothing_for_others(
    view: dict[str, Any] | None, drained: bool
) -> None:
    assert k8s.drained(view) is drained


async def test_member_views_resolve_through_the_endpoint_map(
    tmp_path: Any, monkeypatch: Any
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Member(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            body = json.dumps({"id": "kv-1", "member": False, "rebalancing": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Member)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mapping = tmp_path / "endpoints.json"
        mapping.write_text(
            json.dumps(
                {
                    "kv-1.kv-peers.ns1.svc.cluster.local:7070": f"127.0.0.1:{server.server_address[1]}"
                }
            )
        )
        monkeypatch.setenv("KVTRACE_ENDPOINT_MAP", str(mapping))
        cluster = {"metadata": {"name": "kv", "namespace": "ns1"}}
        views = await k8s.member_views(cluster, [1, 2], timeout=1.0)
        assert views[0] == {"id": "kv-1", "member": False, "rebalancing": False}
        assert views[1] is None  # kv-2 does not resolve: unknown, not drained
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/apps/v1/namespaces/ns/statefulsets/kv", "statefulsets"),
        ("/apis/apps/v1/namespaces/ns/statefulsets", "statefulsets"),
        ("/apis/kvtrace.dev/v1alpha1/namespaces/ns/kvclusters/kv/status", "kvclusters/status"),
        ("/api/v1/namespaces/ns/events", "events"),
        ("/api/v1/namespaces/ns", "namespaces"),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/a.b",
            "customresourcedefinitions",
        ),
        ("/api/v1/nodes", "nodes"),
        ("/version", ""),
    ],
)
def test_a_request_is_counted_by_the_resource_it_addresses(path: str, resource: str) -> None:
    assert k8s.client.request_resource(path) == resource


async def test_every_request_of_a_client_is_counted() -> None:
    server = FakeServer([cm("stale", "x")])
    client = client_for(server)
    seen: list[tuple[str, str, bool]] = []
    k8s.count_requests(client, lambda *labels: seen.append(labels))
    await k8s.apply_children(client, OWNER, [cm("a", "x")], validate_first=True)
    assert ("PATCH", "configmaps", True) in seen and ("PATCH", "configmaps", False) in seen
    assert ("DELETE", "configmaps", False) in seen
    assert len(seen) == len(server.requests)


async def test_at_most_in_flight_requests_are_sent_at_once() -> None:
    import asyncio

    running, most = 0, 0

    async def slow(request: httpx2.Request) -> httpx2.Response:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return httpx2.Response(200, json={"kind": "Status", "apiVersion": "v1"})

    transport = k8s.client.InFlight(httpx2.MockTransport(slow), 3)
    async with httpx2.AsyncClient(transport=transport) as client:
        answers = await asyncio.gather(*(client.get(f"http://api.invalid/{i}") for i in range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    assert most == 3


async def test_waiting_requests_go_by_priority_then_by_when_their_work_began() -> None:
    """Two slots, both taken: the waiting requests are sent FIRST-level ones first (a
    pipeline's), then those of the reconcile that began earliest (each reconcile's requests
    together), then the ones sent outside any (last); a cancelled waiter gives its turn away."""
    import asyncio

    release = asyncio.Event()
    order: list[str] = []

    async def answer(request: httpx2.Request) -> httpx2.Response:
        order.append(request.url.path.strip("/"))
        if request.url.path.startswith("/hold"):
            await release.wait()
        return httpx2.Response(200, json={})

    transport = k8s.client.InFlight(httpx2.MockTransport(answer), 2)
    async with httpx2.AsyncClient(transport=transport) as client:

        async def reconcile(level: int, names: list[str]) -> None:
            with k8s.request_priority(level):
                await asyncio.gather(*(client.get(f"http://api.invalid/{n}") for n in names))

        holders = [asyncio.create_task(client.get(f"http://api.invalid/hold{i}")) for i in (1, 2)]
        while len(order) < 2:
            await asyncio.sleep(0)
        # sent outside any reconcile first, then the work begins in this order; every
        # request waits for a slot
        outside = asyncio.create_task(client.get("http://api.invalid/outside"))
        cancelled = asyncio.create_task(client.get("http://api.invalid/cancelled"))
        tasks = []
        for level, names in (
            (k8s.RECONCILE, ["early1", "early2"]),
            (k8s.RECONCILE, ["late1"]),
            (k8s.FIRST, ["pipeline"]),
        ):
            tasks.append(asyncio.create_task(reconcile(level, names)))
            await asyncio.sleep(0.01)  # a later start
        cancelled.cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*holders, *tasks, outside)
    assert order[2:] == ["pipeline", "early1", "early2", "late1", "outside"], order
    assert transport.slots.free == 2


def test_a_generated_secret_rewritten_by_the_operator_has_not_drifted() -> None:
    """A pipeline's token file changes with every consumer (write_token_set): its new
    resourceVersion is no drift (the next reconcile would read it again); a render change
    still is, and a Secret with applied data drifts on any new version."""
    from kvtrace_operator.render.consumer_tokens import generated_secret

    token_file = generated_secret(OWNER, "kv-otlp-tokens", "otlp-tokens", "tokens")
    applied = k8s.Applied(checksum(token_file), "rv3")
    rewritten = k8s.Seen("v1", "Secret", "kv-otlp-tokens", "5", "rv5", None)
    assert not k8s.drifted(token_file, rewritten, applied)
    changed = {**token_file, "metadata": {**token_file["metadata"], "labels": {"x": "y"}}}
    assert k8s.drifted(changed, rewritten, applied)
    plain = child("Secret", "kv-tls")
    assert k8s.drifted(plain, rewritten, k8s.Applied(checksum(plain), "rv3"))
