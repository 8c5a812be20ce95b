"""Benchmark: the operator with many resources on the local control plane.

    .venv/bin/python benchmarks/operator_scale.py [--clusters 200] [--pipelines 20] [--replicas 3]
        [--phase-timeout 240] [--resync-interval 60] [--apply-concurrency 16]
        [--tracemalloc FRAMES] [--out benchmarks/results/operator_scale.json]

A real local cluster (kube-apiserver, etcd, controller-manager, scheduler, KWOK with 3 fake
nodes; `kvtrace dev tools` builds them) and `kvtrace operator run -n scale` as its own
process, with its own ServiceAccount token, so the API server's audit log (Metadata level,
that user only) counts exactly the operator's requests. The canary is off (no collector runs
behind KWOK pods). Three phases, each sent at once by the benchmark's own async API client
(lightkube: one server-side apply per object, `--apply-concurrency` requests in flight; one
deletecollection per kind), as a controller or a GitOps tool would. How long that client took
is `apply_s`, and each time is also given from its end (`*_after_apply_s`: what the operator
and the controllers took once everything was applied):

- create: `--pipelines` TracingPipelines and `--clusters` KVClusters (`--replicas` members,
  cpu request 100m), spread evenly over the pipelines;
- update: every KVCluster's cpu request 100m -> 150m;
- delete: every KVCluster and TracingPipeline.

Reported per phase: seconds until every resource was *processed* (kopf's handler finished:
its last-handled annotation holds the current spec), until *converged* (every StatefulSet at
the new spec, every status at its generation, every pipeline's `status.consumers` and token
file equal to its live KVClusters with `TokensReady=True`), until *gone* (delete: no
resource, StatefulSet or Deployment left; *finalized*: no resource left, the rest is the
garbage collector's); the operator's CPU seconds and API requests (per
resource), and afterwards its RSS: at baseline (idle, before), peak, and after the delete.
RSS *after* is read once the garbage collector deleted every child too
(`children_gone_after_delete_s`, from the delete phase's end) and twice `--settle` later.
*Flip-flops*: a StatefulSet whose cpu request went back to an older value, or whose
generation moved more than the updates asked for. Prints the JSON document, then a table and
the issue's targets, met or not. Bounded: each phase gives up after `--phase-timeout`.

`--tracemalloc FRAMES` (a memory investigation, not a timed run: tracing allocations slows the
operator down) starts the operator with Python's tracemalloc on, takes a snapshot at the
baseline and once everything is gone, and reports the allocations still held that grew most
(by file and line), and the heap's size at both points.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.types import PatchType

from kvtrace.devstack.cluster import LocalCluster
from kvtrace.devstack.proc import free_port
from kvtrace.devstack.pytest_plugin import operator_process, token_kubeconfig
from kvtrace_operator.k8s import KVCluster, TracingPipeline

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "scale"
OPERATOR_SA = "kvtrace-operator-bench"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_SA}"
HANDLED = "kvtrace.dev/last-handled-configuration"
KUBECTL_TIMEOUT_S = 300.0  # one `kubectl get` of the namespace, on a busy machine
CLIENT_TIMEOUT_S = 120.0  # one request of the benchmark's own client
BENCH_MANAGER = "kvtrace-bench"  # the field manager of the benchmark's applies
RESOURCES = {"KVCluster": KVCluster, "TracingPipeline": TracingPipeline}
TARGETS = {"converge_s": 60.0, "gone_s": 60.0, "rss_peak_mib": 200.0, "rss_after_ratio": 1.2}


class Usage(threading.Thread):
    """Samples a process's RSS (peak) and CPU seconds from /proc every 0.25 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.stopped = pid, 0, threading.Event()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            try:
                self.peak_kib = max(self.peak_kib, self.rss_kib())
            except OSError:
                return


# Started in the operator's process (PYTHONPATH) with --tracemalloc: SIGUSR1 dumps a snapshot
# and the names of the modules imported so far.
SITECUSTOMIZE = """
import os, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["KVTRACE_BENCH_TRACEMALLOC"]))
def dump(signum, frame):
    where = os.environ["KVTRACE_BENCH_SNAPSHOTS"]
    path = where + "/snapshot-%d" % len([n for n in os.listdir(where) if "." not in n])
    with open(path + ".modules", "w") as modules:
        modules.write("\\n".join(sorted(sys.modules)))
    tracemalloc.take_snapshot().dump(path + ".tmp")
    os.rename(path + ".tmp", path)
signal.signal(signal.SIGUSR1, dump)
"""


class Snapshots:
    """tracemalloc snapshots of the operator's process, on demand (--tracemalloc)."""

    def __init__(self, work: Path, frames: int) -> None:
        self.dir, self.frames = work / "snapshots", frames
        self.dir.mkdir()
        (work / "site").mkdir()
        (work / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.env = {
            "PYTHONPATH": str(work / "site"),
            "KVTRACE_BENCH_TRACEMALLOC": str(frames),
            "KVTRACE_BENCH_SNAPSHOTS": str(self.dir),
        }

    def take(self, pid: int, timeout: float = 120.0) -> tuple[tracemalloc.Snapshot, set[str]]:
        """A snapshot of the process's heap, and the modules it has imported."""
        index = len(list(self.dir.glob("snapshot-*[0-9]")))
        path = self.dir / f"snapshot-{index}"
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no tracemalloc snapshot from {pid} in {timeout:.0f}s")
            time.sleep(0.5)
        modules = set(Path(f"{path}.modules").read_text().split())
        return tracemalloc.Snapshot.load(str(path)), modules

    @staticmethod
    def report(
        first: tuple[tracemalloc.Snapshot, set[str]], last: tuple[tracemalloc.Snapshot, set[str]]
    ) -> dict[str, Any]:
        """What grew from ``first`` to ``last``: the heap, by line, the modules imported
        meanwhile (by package), and the allocations held that grew most, by traceback."""
        (before, modules_before), (after, modules_after) = first, last
        imported = Counter(name.split(".")[0] for name in modules_after - modules_before)
        return {
            "heap_mib_baseline": round(
                sum(s.size for s in before.statistics("filename")) / 2**20, 1
            ),
            "heap_mib_after": round(sum(s.size for s in after.statistics("filename")) / 2**20, 1),
            "modules_imported_after_baseline": dict(imported.most_common()),
            "grown_most": [
                {
                    "where": str(stat.traceback[0]),
                    "size_diff_kib": round(stat.size_diff / 1024, 1),
                    "count_diff": stat.count_diff,
                }
                for stat in after.compare_to(before, "lineno")[:15]
            ],
            "grown_most_by_traceback": [
                {
                    "frames": [str(frame) for frame in stat.traceback[-8:]],  # the innermost
                    "size_diff_kib": round(stat.size_diff / 1024, 1),
                }
                for stat in after.compare_to(before, "traceback")[:10]
            ],
        }


def audit_policy(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "audit.k8s.io/v1",
                "kind": "Policy",
                "omitStages": ["RequestReceived", "ResponseStarted"],
                "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
            }
        )
    )
    return path


def operator_requests(audit_log: Path) -> Counter[str]:
    """The operator's completed requests so far, by ``verb resource[/subresource]`` (a dry
    run counts as ``dryrun-patch``)."""
    requests: Counter[str] = Counter()
    if audit_log.exists():
        for line in audit_log.read_text().splitlines():
            event = json.loads(line)
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "?") + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            verb = event.get("verb", "?")
            if "dryRun=" in event.get("requestURI", ""):
                verb = f"dryrun-{verb}"
            requests[f"{verb} {resource}"] += 1
    return requests


def by_verb(requests: Counter[str]) -> dict[str, int]:
    verbs: Counter[str] = Counter()
    for key, count in requests.items():
        verbs[key.split(" ", 1)[0]] += count
    return dict(sorted(verbs.items()))


def kvcluster(index: int, pipelines: int, replicas: int, cpu: str) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": f"kv-{index:03d}", "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "replicationFactor": min(3, replicas),
            "resources": {"requests": {"cpu": cpu}},
            "tracing": {"pipelineRef": {"name": f"traces-{index % pipelines:02d}"}},
        },
    }


def pipeline(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": f"traces-{index:02d}", "namespace": NAMESPACE},
        "spec": {},
    }


class Observer:
    """One snapshot of the namespace per poll (kubectl), and what it says about a phase."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.cpu_history: dict[str, list[str]] = {}
        self.generations: dict[str, int] = {}

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for kinds in ("kvclusters,tracingpipelines,statefulsets,deployments", "secrets"):
            args = ["-n", NAMESPACE, "get", kinds, "-o", "json"]
            if kinds == "secrets":
                args += ["-l", "app.kubernetes.io/component=otlp-tokens"]
            for item in json.loads(self.cluster.kubectl(*args, timeout=KUBECTL_TIMEOUT_S).stdout)[
                "items"
            ]:
                found.setdefault(item["kind"], []).append(item)
        for sts in found.get("StatefulSet", []):
            name = sts["metadata"]["name"]
            cpu = (
                sts["spec"]["template"]["spec"]["containers"][0]
                .get("resources", {})
                .get("requests", {})
                .get("cpu")
            )
            history = self.cpu_history.setdefault(name, [])
            if not history or history[-1] != cpu:
                history.append(cpu)
            self.generations[name] = int(sts["metadata"]["generation"])
        return found

    @staticmethod
    def progress(snap: dict[str, list[dict[str, Any]]], cpu: str) -> dict[str, int]:
        """How far a phase got, as counts: KVClusters *processed* (kopf's last-handled
        annotation holds the current spec), their *status_current* (observedGeneration is the
        generation), StatefulSets at ``cpu``, pipelines whose consumers and token file match
        (*pipelines_matched*), and what is *left* (resources, workloads)."""
        kvcs = snap.get("KVCluster", [])
        sts = {s["metadata"]["name"]: s for s in snap.get("StatefulSet", [])}

        def handled(obj: dict[str, Any]) -> bool:
            annotation = (obj["metadata"].get("annotations") or {}).get(HANDLED) or "{}"
            return bool(json.loads(annotation).get("spec") == obj["spec"])

        def at_spec(kvc: dict[str, Any]) -> bool:
            child = sts.get(kvc["metadata"]["name"])
            containers = child["spec"]["template"]["spec"]["containers"] if child else []
            return bool(
                containers
                and containers[0].get("resources", {}).get("requests", {}).get("cpu") == cpu
            )

        pipes = snap.get("TracingPipeline", [])
        return {
            "processed": sum(map(handled, kvcs)),
            "status_current": sum(
                (k.get("status") or {}).get("observedGeneration") == k["metadata"]["generation"]
                for k in kvcs
            ),
            "sts_at_spec": sum(map(at_spec, kvcs)),
            "pipelines_matched": sum(
                consumers_match(p, kvcs, snap.get("Secret", [])) for p in pipes
            ),
            "resources_left": len(kvcs) + len(pipes),
            "workloads_left": len(sts) + len(snap.get("Deployment", [])),
        }

    @staticmethod
    def processed(counts: dict[str, int], total: int) -> bool:
        return counts["processed"] == total

    @staticmethod
    def converged(counts: dict[str, int], clusters: int, pipelines: int) -> bool:
        """Every status at its generation, every StatefulSet at the new spec, every
        pipeline's consumers and token file equal to its live KVClusters."""
        return (
            counts["resources_left"] == clusters + pipelines
            and counts["status_current"] == clusters
            and counts["sts_at_spec"] == clusters
            and counts["pipelines_matched"] == pipelines
        )

    @staticmethod
    def finalized(counts: dict[str, int]) -> bool:
        """No KVCluster or TracingPipeline left: the operator let them go (its finalizer)."""
        return counts["resources_left"] == 0

    @staticmethod
    def gone(counts: dict[str, int]) -> bool:
        return counts["resources_left"] == 0 and counts["workloads_left"] == 0

    def flip_flops(self, updates: int) -> list[str]:
        """StatefulSets whose cpu went back to an older value, or that were written more often
        than created + ``updates``."""
        bad = [
            f"{name}: cpu {' -> '.join(map(str, seen))}"
            for name, seen in self.cpu_history.items()
            if len(seen) != len(set(seen))
        ]
        bad += [
            f"{name}: generation {gen} > {1 + updates}"
            for name, gen in self.generations.items()
            if gen > 1 + updates
        ]
        return sorted(bad)


def consumers_match(
    pipe: dict[str, Any], kvcs: list[dict[str, Any]], secrets: list[dict[str, Any]]
) -> bool:
    """status.consumers and the token file hold exactly the pipeline's live KVClusters, and
    TokensReady says True."""
    name = pipe["metadata"]["name"]
    live = sorted(
        k["metadata"]["name"]
        for k in kvcs
        if k["spec"].get("tracing", {}).get("pipelineRef", {}).get("name") == name
    )
    status = pipe.get("status") or {}
    ready = any(
        c["type"] == "TokensReady" and c["status"] == "True" for c in status.get("conditions") or ()
    )
    secret = next((s for s in secrets if s["metadata"]["name"] == f"{name}-otlp-tokens"), None)
    text = base64.b64decode(((secret or {}).get("data") or {}).get("tokens", "")).decode()
    labels = sorted(line.split(" ", 1)[1] for line in text.splitlines() if " " in line)
    return (
        status.get("consumers")
        == [{"kind": "KVCluster", "namespace": NAMESPACE, "name": n} for n in live]
        and ready
        and labels == sorted(["pipeline", *(f"KVCluster/{n}" for n in live)])
    )


def run_phase(
    name: str,
    observer: Observer,
    usage: Usage,
    audit: Path,
    args: argparse.Namespace,
    act: Any,
    done: dict[str, Any],
    cpu: str = "",
) -> dict[str, Any]:
    """Do ``act``, then poll until every check of ``done`` (on Observer.progress counts)
    holds or the phase times out. The timeline keeps every poll's counts with the operator's
    CPU seconds and requests so far: where the phase waited."""
    requests_before, cpu_before = operator_requests(audit), usage.cpu_s()
    lines_before = audit_lines(audit)
    started = time.monotonic()
    act()
    acted = round(time.monotonic() - started, 1)
    reached: dict[str, float | None] = dict.fromkeys(done)
    timeline = []
    while time.monotonic() - started < args.phase_timeout:
        counts = observer.progress(observer.snapshot(), cpu)
        elapsed = round(time.monotonic() - started, 1)
        for key, check in done.items():
            if reached[key] is None and check(counts):
                reached[key] = elapsed
        timeline.append(
            {
                "t": elapsed,
                **counts,
                "operator_cpu_s": round(usage.cpu_s() - cpu_before, 1),
                "operator_requests": audit_lines(audit) - lines_before,
                "operator_rss_mib": round(usage.rss_kib() / 1024, 1),
            }
        )
        print(f"[{name}] {elapsed:6.1f}s {counts} {reached}", file=sys.stderr, flush=True)
        if all(value is not None for value in reached.values()):
            break
        time.sleep(2.0)
    requests = operator_requests(audit) - requests_before
    total = sum(requests.values())
    return {
        **{f"{key}_s": value for key, value in reached.items()},
        "apply_s": acted,
        **{
            f"{key}_after_apply_s": None if value is None else round(value - acted, 1)
            for key, value in reached.items()
        },
        "operator_cpu_s": round(usage.cpu_s() - cpu_before, 1),
        "api_requests": total,
        "api_requests_per_resource": round(total / (args.clusters + args.pipelines), 1),
        "api_requests_by_verb": by_verb(requests),
        "api_requests_by_resource": dict(requests.most_common()),
        "timeline": timeline,
    }


def audit_lines(audit_log: Path) -> int:
    """The operator's requests so far (the audit policy logs only its user), cheaply."""
    if not audit_log.exists():
        return 0
    with audit_log.open("rb") as log:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: log.read(1 << 20), b""))


class Client:
    """The benchmark's own API client (lightkube, async): a phase's objects are applied or
    deleted ``concurrency`` requests at a time, as a controller or a GitOps tool would send
    them, so the phase measures the operator, not one request after the other (kubectl)."""

    def __init__(self, cluster: LocalCluster, concurrency: int) -> None:
        self.kubeconfig, self.concurrency = cluster.kubeconfig, concurrency

    def _run(self, work: Callable[[AsyncClient], Awaitable[None]]) -> None:
        async def main() -> None:
            client = AsyncClient(
                config=KubeConfig.from_file(str(self.kubeconfig)),
                field_manager=BENCH_MANAGER,
                timeout=httpx2.Timeout(CLIENT_TIMEOUT_S, pool=None),
            )
            try:
                await work(client)
            finally:
                await client.close()

        asyncio.run(main())

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """Server-side apply of every object (one request each, ``concurrency`` at once)."""

        async def work(client: AsyncClient) -> None:
            slots = asyncio.Semaphore(self.concurrency)

            async def one(obj: dict[str, Any]) -> None:
                async with slots:
                    await client.patch(
                        RESOURCES[obj["kind"]],
                        obj["metadata"]["name"],
                        obj,
                        namespace=NAMESPACE,
                        patch_type=PatchType.APPLY,
                        field_manager=BENCH_MANAGER,
                        force=True,
                    )

            await asyncio.gather(*(one(obj) for obj in objects))

        self._run(work)

    def delete_all(self) -> None:
        """Every KVCluster, then every TracingPipeline of the namespace (kubectl's order: a
        pipeline gone first would re-render its clusters), one deletecollection each."""

        async def work(client: AsyncClient) -> None:
            for res in RESOURCES.values():
                await client.deletecollection(res, namespace=NAMESPACE)

        self._run(work)


def start_operator(
    cluster: LocalCluster, work: Path, args: argparse.Namespace, env: dict[str, str]
) -> Any:
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", OPERATOR_SA)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        OPERATOR_SA,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={NAMESPACE}:{OPERATOR_SA}",
    )
    kubeconfig = token_kubeconfig(cluster, NAMESPACE, OPERATOR_SA, work / "operator.kubeconfig")
    process = operator_process(
        kubeconfig,
        [
            "-n",
            NAMESPACE,
            "--liveness",
            "none",
            "--canary-interval",
            "0",
            "--metrics-port",
            str(free_port()),
            "--resync-interval",
            str(args.resync_interval),
        ],
        work / "operator.log",
        **env,
    )
    return process.start()


def measure(cluster: LocalCluster, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    snapshots = Snapshots(work, args.tracemalloc) if args.tracemalloc else None
    env = dict(item.split("=", 1) for item in args.operator_env)
    process = start_operator(cluster, work, args, {**env, **(snapshots.env if snapshots else {})})
    try:
        return run_phases(cluster, work, args, process, snapshots)
    finally:
        process.stop(timeout=15)


CHILD_KINDS = (
    "configmaps,secrets,services,serviceaccounts,deployments,statefulsets,"
    "poddisruptionbudgets,networkpolicies,roles,rolebindings"
)


def wait_children_gone(cluster: LocalCluster, timeout: float) -> float | None:
    """Seconds until the garbage collector deleted the last of the operator's children (it
    goes on after the StatefulSets and Deployments are gone; the operator hands memory back
    once deletions were quiet for 10 s, so RSS "after" is read after that); None: timed out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        left = cluster.kubectl(
            "-n",
            NAMESPACE,
            "get",
            CHILD_KINDS,
            "-l",
            "app.kubernetes.io/managed-by=kvtrace-operator",
            "-o",
            "name",
            timeout=KUBECTL_TIMEOUT_S,
        ).stdout.split()
        if not left:
            return round(time.monotonic() - started, 1)
        time.sleep(2.0)
    return None


def run_phases(
    cluster: LocalCluster,
    work: Path,
    args: argparse.Namespace,
    process: Any,
    snapshots: Snapshots | None,
) -> dict[str, Any]:
    """Baseline, the three phases, and what is left after them (the operator runs)."""
    usage = Usage(int(process.pid))
    usage.start()
    time.sleep(args.settle)
    baseline = usage.rss_kib()
    first = snapshots.take(int(process.pid)) if snapshots else None
    audit, observer, n = work / "audit.log", Observer(cluster), args.clusters
    client = Client(cluster, args.apply_concurrency)
    pipes = [pipeline(i) for i in range(args.pipelines)]
    phases = {
        "create": run_phase(
            "create",
            observer,
            usage,
            audit,
            args,
            lambda: client.apply(
                [*pipes, *(kvcluster(i, args.pipelines, args.replicas, "100m") for i in range(n))],
            ),
            {
                "processed": lambda c: observer.processed(c, n),
                "converged": lambda c: observer.converged(c, n, args.pipelines),
            },
            cpu="100m",
        ),
        "update": run_phase(
            "update",
            observer,
            usage,
            audit,
            args,
            lambda: client.apply(
                [kvcluster(i, args.pipelines, args.replicas, "150m") for i in range(n)]
            ),
            {
                "processed": lambda c: observer.processed(c, n),
                "converged": lambda c: observer.converged(c, n, args.pipelines),
            },
            cpu="150m",
        ),
    }
    flips = observer.flip_flops(updates=1)
    phases["delete"] = run_phase(
        "delete",
        observer,
        usage,
        audit,
        args,
        client.delete_all,
        {"finalized": observer.finalized, "gone": observer.gone},
    )
    children_gone = wait_children_gone(cluster, args.phase_timeout)
    time.sleep(args.settle)
    quiet = operator_requests(audit)
    time.sleep(args.settle)
    after_gone = sum((operator_requests(audit) - quiet).values())
    usage.stopped.set()
    rss = {
        "baseline_mib": round(baseline / 1024, 1),
        "peak_mib": round(usage.peak_kib / 1024, 1),
        "after_mib": round(usage.rss_kib() / 1024, 1),
    }
    memory = (
        {"tracemalloc": Snapshots.report(first, snapshots.take(int(process.pid)))}
        if snapshots and first
        else {}
    )
    return {
        "phases": phases,
        "rss": rss,
        **memory,
        "flip_flops": flips,
        "children_gone_after_delete_s": children_gone,
        "requests_per_s_after_gone": round(after_gone / args.settle, 2),
    }


def verdict(result: dict[str, Any]) -> dict[str, bool]:
    phases, rss = result["phases"], result["rss"]

    def within(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    return {
        "create converged <= 60 s": within(phases["create"]["converged_s"], TARGETS["converge_s"]),
        "update converged <= 60 s": within(phases["update"]["converged_s"], TARGETS["converge_s"]),
        "delete gone <= 60 s": within(phases["delete"]["gone_s"], TARGETS["gone_s"]),
        "RSS peak <= 200 MiB": rss["peak_mib"] <= TARGETS["rss_peak_mib"],
        "RSS after within 20% of baseline": rss["after_mib"]
        <= rss["baseline_mib"] * TARGETS["rss_after_ratio"],
        "no flip-flop": not result["flip_flops"],
    }


def table(result: dict[str, Any]) -> str:
    columns = ("apply_s", "processed_s", "converged_s", "finalized_s", "gone_s")
    head = f"{'phase':<8} " + " ".join(f"{c[:-2] + ' s':>12}" for c in columns)
    head += f" {'CPU s':>7} {'requests':>9} {'req/res':>8}"
    lines = [head, "-" * len(head)]
    for name, phase in result["phases"].items():
        cells = " ".join(f"{'-' if phase.get(c) is None else phase[c]:>12}" for c in columns)
        lines.append(
            f"{name:<8} {cells} {phase['operator_cpu_s']:>7} {phase['api_requests']:>9} "
            f"{phase['api_requests_per_resource']:>8}"
        )
    rss = result["rss"]
    lines.append(
        f"operator RSS MiB: baseline {rss['baseline_mib']}, peak {rss['peak_mib']}, "
        f"after {rss['after_mib']} (every child gone "
        f"{result.get('children_gone_after_delete_s')} s after the delete phase); "
        f"requests/s once gone: {result['requests_per_s_after_gone']}; "
        f"flip-flops: {len(result['flip_flops'])}"
    )
    lines += [
        f"target {'met    ' if ok else 'NOT met'}  {name}" for name, ok in result["targets"].items()
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=int, default=200, help="KVClusters (default 200)")
    parser.add_argument("--pipelines", type=int, default=20, help="TracingPipelines (default 20)")
    parser.add_argument("--replicas", type=int, default=3, help="members per KVCluster (default 3)")
    parser.add_argument(
        "--phase-timeout",
        type=float,
        default=240.0,
        help="seconds before a phase (or the wait for the last child to go) gives up "
        "(default 240: a run ends within 20 minutes)",
    )
    parser.add_argument(
        "--resync-interval", type=float, default=60.0, help="the operator's drift timer"
    )
    parser.add_argument(
        "--apply-concurrency",
        type=int,
        default=16,
        help="requests the benchmark's own client sends at once (default 16)",
    )
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before and after")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the operator's allocations (FRAMES deep) and report what grew",
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the operator's process (repeatable), e.g. "
        "MALLOC_ARENA_MAX=2 to compare allocator settings",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    for flag in ("clusters", "pipelines", "replicas", "apply_concurrency"):
        if getattr(args, flag) < 1:
            parser.error(
                f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}"
            )
    for item in args.operator_env:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--operator-env must be NAME=VALUE, got {item!r}")
    if args.phase_timeout <= 0 or args.settle < 0:
        parser.error("--phase-timeout must be > 0 and --settle >= 0")
    return args


def interrupted(signum: int, frame: Any) -> None:
    """SIGTERM, or SIGINT (which a shell leaves ignored in a background job): stop the local
    cluster and the operator on the way out, not leave them running."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kvtrace-operator-scale-") as tmp:
        work = Path(tmp)
        audit_args = [
            f"--audit-policy-file={audit_policy(work / 'audit-policy.yaml')}",
            f"--audit-log-path={work / 'audit.log'}",
            "--audit-log-format=json",
        ]
        with LocalCluster(nodes=3, apiserver_args=audit_args) as cluster:
            result = measure(cluster, work, args)
    result = {
        "benchmark": "operator_scale",
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "load_at_start": load_at_start,
            "load_at_end": os.getloadavg(),
        },
        **result,
    }
    result["targets"] = verdict(result)
    document = json.dumps(result, indent=2)
    print(document)
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(document + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
