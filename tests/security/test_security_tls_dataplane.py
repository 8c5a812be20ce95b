"""TLS on every telemetry hop with the operator-managed CA, through the real collector(s) and
the real Jaeger (docs/security.md "TLS").

The certificates are the ones the operator writes: ``rotation.rotate`` (the ``pki`` module)
and ``k8s.certificates.managed_secrets`` build the Secrets; their keys are written to
directories as the kubelet mounts them (``items`` only, atomically replaced on change). The
collector and Jaeger run the configurations rendered for the pipeline with only the mount
paths and addresses changed: an exporter to a Service gets ``127.0.0.1:PORT`` and still
verifies the Service's name (the rendered ``server_name_override``); the load-balancing
exporter resolves the sampling tier statically. The sender is the
OpenTelemetry SDK's OTLP/HTTP exporter configured by the environment rendered for a KV pod,
with the collector Service's name resolved to 127.0.0.1.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_security_telemetry_dataplane import COLLECTOR_DNS, NS, kvcluster, pod_env, use_pod_env

from kvtrace.devstack.otlp_token import LocalToken, local_token, use_token_file
from kvtrace_operator import pki, rotation
from kvtrace_operator.k8s.certificates import leaf_specs, managed_secrets, policy
from kvtrace_operator.render import render_collector_config, render_jaeger_config, tls
from kvtrace_operator.render.security import CLIENT_CA_DIR
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.dataplane

JAEGER_DNS = f"traces-jaeger-otlp.{NS}.svc.cluster.local"
# Short lives so that renewals fall due within the minute pki back-dates every certificate:
# leaves due 10s before their 40s end, the CA due 25s before its 75s end.
FAST = {
    "enabled": True,
    "duration": "40s",
    "renewBefore": "10s",
    "caDuration": "75s",
    "caRenewBefore": "25s",
}


def tp(tls_settings: dict[str, Any], **spec: Any) -> dict[str, Any]:
    base = {"sampling": {"mode": "head", "ratio": 1}}  # head: an accepted span is in Jaeger at once
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": NS, "uid": "u1"},
        "spec": {**base, **spec, "security": {"tls": tls_settings}},
    }


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Volumes:
    """Secret volumes as the kubelet mounts them: one directory per (pod, volume), the
    ``items`` of the rendered volume as files, replaced atomically when the Secret changes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, pod: str, volume: str) -> Path:
        path = self.root / pod / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, pod: str, volume: str, secret: dict[str, str], keys: list[str]) -> Path:
        directory = self.directory(pod, volume)
        for key in keys:
            staged = directory / f".{key}.new"
            staged.write_text(secret[key])
            os.replace(staged, directory / key)
        return directory


def secret_data(
    pipe: dict[str, Any], state: rotation.State, moment: datetime.datetime
) -> dict[str, dict[str, str]]:
    """What the operator's Secrets hold for ``state``: name -> decoded data."""
    spec = parse_pipeline(pipe["spec"])
    return {
        obj["metadata"]["name"]: tls.decoded(obj)
        for obj in managed_secrets(pipe, spec, state, moment)
    }


def issue(
    pipe: dict[str, Any], state: rotation.State, moment: datetime.datetime
) -> tuple[rotation.State, list[str]]:
    spec = parse_pipeline(pipe["spec"])
    return rotation.rotate(
        state, leaf_specs(pipe, spec), moment, policy(spec), "kvtrace store/traces CA"
    )


class Stack:
    """The pipeline's pods as processes: mounts written from the Secrets, configs localised
    (the edge's token file too: auth is on by default)."""

    def __init__(self, pipe: dict[str, Any], volumes: Volumes, collector: Any, jaeger: Any) -> None:
        self.pipe, self.volumes, self.collector_factory, self.jaeger_factory = (
            pipe,
            volumes,
            collector,
            jaeger,
        )
        self.token = local_token(volumes.root / "otlp-token")

    def mount(self, secrets: dict[str, dict[str, str]]) -> None:
        """Every pod's TLS volumes from the current Secrets (what the kubelet syncs)."""
        trust = secrets["traces-tls-trust"]
        for pod in ("collector", "collector-sampling", "jaeger"):
            leaf = secrets.get(f"traces-{pod}-tls")
            if leaf:
                self.volumes.write(pod, "serving-cert", leaf, ["tls.crt", "tls.key"])
            self.volumes.write(pod, "telemetry-ca", trust, ["ca.crt"])
        self.volumes.write("kv", "telemetry-ca", trust, ["ca.crt"])

    def localise(self, config: dict[str, Any], pod: str) -> dict[str, Any]:
        text = yaml.safe_dump(config)
        for mount, volume in (
            (tls.SERVING_DIR, "serving-cert"),
            (tls.JAEGER_SERVING_DIR, "serving-cert"),
            (tls.TRUST_DIR, "telemetry-ca"),
        ):
            text = text.replace(mount, str(self.volumes.directory(pod, volume)))
        return dict(yaml.safe_load(text))

    def query(self, jaeger: Any, ca_pem: str | None = None) -> Any:
        """Jaeger's query API over its TLS port, verified for the query Service's name (the
        Jaeger leaf names it) with ``ca_pem``, by default the pods' trust bundle."""
        trust = ca_pem or (self.volumes.directory("jaeger", "telemetry-ca") / "ca.crt").read_text()
        return jaeger.client(ca_pem=trust, server_hostname=f"traces-jaeger-query.{NS}.svc")

    def start_jaeger(self) -> Any:
        """Its query port serves the Jaeger leaf too: queries trust the bundle (the client's
        mount) and verify the query Service's name."""
        return self.jaeger_factory(
            self.localise(render_jaeger_config(self.pipe), "jaeger"),
            ca_file=self.volumes.directory("kv", "telemetry-ca") / "ca.crt",
            server_name=f"traces-jaeger-query.{NS}.svc.cluster.local",
        )

    def start_collector(self, tier: str, pod: str, jaeger: Any = None, sampling: Any = None) -> Any:
        config = use_token_file(
            self.localise(render_collector_config(self.pipe, tier), pod), self.token.file
        )
        exporters = config["exporters"]
        if "otlp_grpc/jaeger" in exporters:
            exporters["otlp_grpc/jaeger"]["endpoint"] = jaeger.otlp_grpc
            assert exporters["otlp_grpc/jaeger"]["tls"]["server_name_override"] == JAEGER_DNS
        if "load_balancing" in exporters:
            exporters["load_balancing"]["resolver"] = {
                "static": {"hostnames": [sampling.otlp_grpc]}
            }
        return self.collector_factory(config)


@pytest.fixture
def cluster_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Services' names resolve to 127.0.0.1 in this process (what cluster DNS does for a pod)."""
    original = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".svc.cluster.local"):
            host = "127.0.0.1"
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


class Client:
    """A KV pod's exporter: configured by the rendered environment, trusting the mounted bundle;
    a new Client is a restarted pod (it reads the CA file when it starts)."""

    def __init__(
        self,
        pipe: dict[str, Any],
        cluster: dict[str, Any],
        collector: Any,
        ca_dir: Path,
        token: LocalToken,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        port = collector.endpoint("otlp/http").rsplit(":", 1)[1]
        env = pod_env(
            cluster, pipe, token.secrets(pipe), f"{COLLECTOR_DNS}:{port}", {CLIENT_CA_DIR: ca_dir}
        )
        use_pod_env(env, monkeypatch)
        self.exporter = OTLPSpanExporter()
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create())
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))

    def send(self) -> tuple[str, SpanExportResult]:
        """One span in a trace of its own: (trace id, export result)."""
        self.memory.clear()
        with self.provider.get_tracer("tls-test").start_as_current_span("kv.put") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
        return trace_id, self.exporter.export(self.memory.get_finished_spans())

    def close(self) -> None:
        self.exporter.shutdown()
        self.provider.shutdown()


def served_fingerprint(address: str, server_name: str, ca_file: Path) -> str:
    """sha256 of the certificate the server presents to a client verifying ``server_name``
    against ``ca_file`` (a new TLS connection: what a reconnecting client gets)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return pki.info(ssl.DER_cert_to_PEM_cert(der)).fingerprint


def all_arrive(client: Any, poll: Any, service: str, trace_ids: set[str]) -> None:

    def missing() -> set[str]:
        found = {trace.trace_id for trace in client.find_traces(service, limit=len(trace_ids) + 50)}
        return trace_ids - found

    poll(
        lambda: not missing(),
        timeout=60,
        message=f"all {len(trace_ids)} traces of {service} in Jaeger",
    )
    assert not missing()


# ---- every hop over TLS ---------------------------------------------------------------------


def test_two_tiers_spans_flow_over_tls_on_every_hop(
    collector: Any,
    jaeger: Any,
    poll: Any,
    tmp_path: Path,
    cluster_dns: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client -> load-balancing tier -> sampling tier -> Jaeger, each hop verified TLS."""
    pipe = tp(
        {"enabled": True},
        sampling={"mode": "production", "ratio": 1, "decisionWait": "2s"},
        collector={"replicas": 2},
    )
    state, actions = issue(pipe, rotation.State(), now())
    assert len(actions) == 4  # the CA and three leaves
    stack = Stack(pipe, Volumes(tmp_path / "pods"), collector, jaeger)
    stack.mount(secret_data(pipe, state, now()))
    backend = stack.start_jaeger()
    back = stack.start_collector("sampling", "collector-sampling", jaeger=backend)
    front = stack.start_collector("loadbalancer", "collector", sampling=back)
    trust = stack.volumes.directory("kv", "telemetry-ca") / "ca.crt"
    # Every server presents the leaf the operator made for its Service's names.
    for server, name, secret in (
        (front.endpoint("otlp/http"), COLLECTOR_DNS, "traces-collector-tls"),
        (
            back.otlp_grpc,
            f"traces-collector-sampling.{NS}.svc.cluster.local",
            "traces-collector-sampling-tls",
        ),
        (backend.otlp_grpc, JAEGER_DNS, "traces-jaeger-tls"),
    ):
        assert (
            served_fingerprint(server, name, trust)
            == pki.info(state.leaves[secret].cert_pem).fingerprint
        )
    cluster = kvcluster()
    client = Client(
        pipe,
        cluster,
        front,
        stack.volumes.directory("kv", "telemetry-ca"),
        stack.token,
        monkeypatch,
    )
    sent = set()
    for _ in range(5):
        trace_id, result = client.send()
        assert result == SpanExportResult.SUCCESS
        sent.add(trace_id)
    client.close()
    all_arrive(stack.query(backend), poll, cluster["metadata"]["name"], sent)


# ---- refused --------------------------------------------------------------------------------


def test_a_client_trusting_another_ca_or_facing_an_expired_certificate_is_refused(
    collector: Any, jaeger: Any, tmp_path: Path, cluster_dns: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = tp({"enabled": True})
    moment = now()
    state, _ = issue(pipe, rotation.State(), moment)
    stack = Stack(pipe, Volumes(tmp_path / "pods"), collector, jaeger)
    stack.mount(secret_data(pipe, state, moment))
    backend = stack.start_jaeger()
    edge = stack.start_collector("sampling", "collector", jaeger=backend)
    # Another CA (another pipeline's, say): the handshake fails, the SDK export fails.
    stranger_ca = pki.make_ca("another CA", moment, datetime.timedelta(hours=1))
    other = Volumes(tmp_path / "other").write(
        "kv", "telemetry-ca", {"ca.crt": stranger_ca.cert_pem}, ["ca.crt"]
    )
    with pytest.raises(
        ssl.SSLCertVerificationError, match="unable to get local issuer certificate"
    ):
        served_fingerprint(edge.endpoint("otlp/http"), COLLECTOR_DNS, other / "ca.crt")
    stranger = kvcluster()
    client = Client(pipe, stranger, edge, other, stack.token, monkeypatch)
    assert client.send()[1] == SpanExportResult.FAILURE
    client.close()
    assert stranger["metadata"]["name"] not in stack.query(backend).services()

    # An expired leaf (issued by the right CA an hour ago, valid 10 minutes) is refused too.
    expired = pki.issue(
        state.ca,
        "traces-collector",
        list(tls.dns_names("traces-collector", NS)),
        moment - datetime.timedelta(hours=1),
        datetime.timedelta(minutes=10),
    )
    stack.volumes.write(
        "collector",
        "serving-cert",
        {"tls.crt": expired.cert_pem, "tls.key": expired.key_pem},
        ["tls.crt", "tls.key"],
    )
    stale = stack.start_collector("sampling", "collector", jaeger=backend)
    trust = stack.volumes.directory("kv", "telemetry-ca") / "ca.crt"
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        served_fingerprint(stale.endpoint("otlp/http"), COLLECTOR_DNS, trust)


def test_the_collector_refuses_a_jaeger_certificate_from_another_ca(
    collector: Any,
    jaeger: Any,
    poll: Any,
    tmp_path: Path,
    cluster_dns: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = tp({"enabled": True})
    moment = now()
    state, _ = issue(pipe, rotation.State(), moment)
    impostor, _ = issue(pipe, rotation.State(), moment)  # a second CA and its own leaves
    stack = Stack(pipe, Volumes(tmp_path / "pods"), collector, jaeger)
    stack.mount(secret_data(pipe, state, moment))
    impostor_secrets = secret_data(pipe, impostor, moment)
    stack.volumes.write(
        "jaeger", "serving-cert", impostor_secrets["traces-jaeger-tls"], ["tls.crt", "tls.key"]
    )
    backend = stack.start_jaeger()
    edge = stack.start_collector("sampling", "collector", jaeger=backend)
    cluster = kvcluster()
    client = Client(
        pipe, cluster, edge, stack.volumes.directory("kv", "telemetry-ca"), stack.token, monkeypatch
    )
    assert client.send()[1] == SpanExportResult.SUCCESS  # the edge accepts ...
    client.close()
    poll(
        lambda: "certificate signed by unknown authority" in edge.tail(200),
        timeout=30,
        message="the collector's exporter refusing Jaeger's certificate",
    )
    # ... Jaeger (asked over its query port, which serves the impostor leaf too) never gets it
    assert (
        cluster["metadata"]["name"]
        not in stack.query(backend, impostor_secrets["traces-tls-trust"]["ca.crt"]).services()
    )


# ---- rotation -------------------------------------------------------------------------------


def stream(
    client: Client,
    sent: set[str],
    until: Callable[[], bool],
    *,
    limit: int = 400,
    interval: float = 0.05,
) -> int:
    """Send spans until ``until()`` (checked between spans) or ``limit``; every export must
    succeed. Returns how many were sent."""
    count = 0
    while count < limit:
        trace_id, result = client.send()
        assert result == SpanExportResult.SUCCESS, f"span {len(sent) + 1} was refused"
        sent.add(trace_id)
        count += 1
        if until():
            return count
        time.sleep(interval)
    raise AssertionError(f"condition not met within {limit} spans")


def at_least(moment: datetime.datetime) -> Callable[[], bool]:
    return lambda: now() >= moment


@pytest.fixture
def rotation_stack(
    collector: Any, jaeger: Any, tmp_path: Path, cluster_dns: None
) -> Iterator[Stack]:
    yield Stack(tp(FAST), Volumes(tmp_path / "pods"), collector, jaeger)


def test_leaf_and_ca_rotation_lose_no_span(
    rotation_stack: Stack, poll: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounded stream of spans (each its own trace) runs while the leaves are renewed (the
    servers reload them: no restart), then the CA is rotated (the bundle gains the new CA,
    the collector and the client roll; leaves move to the new CA; servers reload): every
    trace sent is in Jaeger, and every export succeeded."""
    stack, pipe = rotation_stack, rotation_stack.pipe
    start = now()
    state, _ = issue(pipe, rotation.State(), start)
    stack.mount(secret_data(pipe, state, start))
    backend = stack.start_jaeger()
    edge = stack.start_collector("sampling", "collector", jaeger=backend)
    trust = stack.volumes.directory("kv", "telemetry-ca") / "ca.crt"
    cluster = kvcluster()
    client = Client(pipe, cluster, edge, trust.parent, stack.token, monkeypatch)
    sent: set[str] = set()
    stream(client, sent, lambda: len(sent) >= 20)

    def serving(server: Any, name: str, secret: str, current: rotation.State) -> Callable[[], bool]:
        address = server.endpoint("otlp/http") if name == COLLECTOR_DNS else server.otlp_grpc
        want = pki.info(current.leaves[secret].cert_pem).fingerprint
        return lambda: served_fingerprint(address, name, trust) == want

    # 1. Leaves within renewBefore (5s of 40s left): renewed by the same CA, up to the CA's
    #    end; the collector and Jaeger pick them up by reloading (reload_interval: renewBefore / 4).
    renewed, actions = issue(pipe, state, start + datetime.timedelta(seconds=35))
    assert actions == [
        "certificate traces-collector-tls: expiring",
        "certificate traces-jaeger-tls: expiring",
    ]
    assert renewed.ca == state.ca
    stack.mount(secret_data(pipe, renewed, now()))
    stream(client, sent, serving(edge, COLLECTOR_DNS, "traces-collector-tls", renewed))
    stream(client, sent, serving(backend, JAEGER_DNS, "traces-jaeger-tls", renewed))

    # 2. The CA within caRenewBefore (25s of 75s left): a new CA joins the bundle; the leaves
    #    stay with the old one. The bundle's consumers roll: a new collector pod takes over
    #    (the old one drains on SIGTERM), the KV pod restarts with the new bundle.
    rotated, actions = issue(pipe, renewed, start + datetime.timedelta(seconds=51))
    assert actions == ["CA kvtrace store/traces CA: expiring"]
    assert rotated.previous_ca == state.ca and rotated.leaves == renewed.leaves
    stack.mount(secret_data(pipe, rotated, now()))
    assert len(pki.bundle_info(trust.read_text())) == 2
    rolled = stack.start_collector("sampling", "collector", jaeger=backend)
    old_client, client = (
        client,
        Client(pipe, cluster, rolled, trust.parent, stack.token, monkeypatch),
    )
    old_client.close()
    edge.stop()
    stream(client, sent, lambda: len(sent) >= 120)

    # 3. Half-way through caRenewBefore (12.5s after the new CA's notBefore, back-dated 1m)
    #    the new CA signs: leaves (11s left, not yet due) re-issued by it, reloaded.
    moved_at = start + datetime.timedelta(seconds=64)
    stream(
        client, sent, at_least(moved_at - datetime.timedelta(seconds=59))
    )  # its leaves' notBefore is past
    moved, actions = issue(pipe, rotated, moved_at)
    assert actions == [
        "certificate traces-collector-tls: issuer",
        "certificate traces-jaeger-tls: issuer",
    ]
    assert all(pki.signed_by(leaf.cert_pem, rotated.ca.cert_pem) for leaf in moved.leaves.values())
    stack.mount(secret_data(pipe, moved, now()))
    stream(client, sent, serving(rolled, COLLECTOR_DNS, "traces-collector-tls", moved))
    stream(client, sent, serving(backend, JAEGER_DNS, "traces-jaeger-tls", moved))
    stream(client, sent, lambda: True)
    client.close()

    assert now() < start + datetime.timedelta(seconds=70), (
        "the first leaves and CA must outlive the test"
    )
    all_arrive(stack.query(backend), poll, cluster["metadata"]["name"], sent)


# ---- the real binaries accept every TLS configuration ------------------------------------------

VALIDATED = {
    "managed-one-tier": tp({"enabled": True}),
    "managed-two-tiers": tp(
        {"enabled": True},
        sampling={"mode": "production"},
        collector={"replicas": 3},
        receivers={"zipkin": {"enabled": True}, "jaeger": {"enabled": True}},
    ),
    "cert-manager-two-tiers": tp(
        {"enabled": True, "mode": "certManager", "issuerRef": {"name": "ca"}},
        sampling={"mode": "production"},
        collector={"replicas": 2},
    ),
    "secret-two-tiers": tp(
        {"enabled": True, "secretName": "mine"},
        sampling={"mode": "production"},
        collector={"replicas": 2},
    ),
    "fast-renewal": tp(FAST),
}


@pytest.mark.parametrize("pipe", list(VALIDATED.values()), ids=list(VALIDATED))
def test_tls_configs_pass_otelcol_and_jaeger_validate(pipe: dict[str, Any], tmp_path: Path) -> None:
    from kvtrace.devstack.backends import validate_config
    from kvtrace.devstack.pytest_plugin import require_binaries

    require_binaries("otelcol-kvtrace", "jaeger")
    spec = parse_pipeline(pipe["spec"])
    tiers = ["loadbalancer", "sampling"] if spec.collector.replicas > 1 else ["sampling"]
    for tier in tiers:
        proc = validate_config(render_collector_config(pipe, tier), workdir=tmp_path)
        assert proc.returncode == 0, f"{tier}: {proc.stderr}"
    proc = validate_config(render_jaeger_config(pipe), binary="jaeger", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
