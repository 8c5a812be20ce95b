"""Fixtures of the tracing dataplane tests: ``trace_stack(spec, ...)`` starts the whole chain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tracing_stack import (
    CLUSTER,
    NAMESPACE,
    PIPELINE,
    KVNode,
    RestartableCollector,
    RestartableJaeger,
    Stack,
    kvcluster,
    loopback_config,
    pipeline,
    start_kv_nodes,
    stop_kv_nodes,
)

from kvtrace.devstack.backends import Collector, Jaeger
from kvtrace.devstack.local_tls import local_tls
from kvtrace.devstack.otlp_token import local_token
from kvtrace.devstack.prometheus import Prometheus, kept_flags
from kvtrace.devstack.pytest_plugin import require_binaries
from kvtrace_operator.render import render_collector_config, render_jaeger_config, sampling
from kvtrace_operator.render.collector import LOADBALANCER_TIER, SAMPLING_TIER
from kvtrace_operator.render.metrics import (
    JOB_COLLECTOR,
    JOB_JAEGER,
    JOB_KVNODE,
    metrics_settings,
    prometheus_args,
    prometheus_config,
)
from kvtrace_operator.render.monitoring import rules_for
from kvtrace_operator.spec import parse_pipeline


@pytest.fixture
def trace_stack(tmp_path: Path, loopback_ip: Callable[[], str]) -> Iterator[Callable[..., Stack]]:
    """Factory ``trace_stack(spec, faults="", nodes=3, extra_env=None, stagger=0)``: Jaeger
    (``render_jaeger_config``), the collector tier(s) (``render_collector_config``) and KV nodes with the rendered OTel env, all
    from the TracingPipeline ``spec``; with ``collector.replicas > 1`` and tail sampling, a
    load-balancing collector in front of that many sampling collectors. With auth (the default)
    the edge tier reads a fresh token file and the nodes send that token; with TLS (the
    default) every hop serves and verifies certificates of a fresh local CA. ``prometheus=True``:
    the pipeline's rendered Prometheus (config and alert rules) receives the span metrics,
    scrapes the collector(s), Jaeger and the nodes, and Jaeger's Monitor tab reads it
    (``Stack.prometheus``); without it the span metrics go nowhere. Stopped afterwards."""
    require_binaries("otelcol-kvtrace", "jaeger")
    started: list[Any] = []
    node_sets: list[list[KVNode]] = []

    def make(
        spec: dict[str, Any],
        *,
        faults: str = "",
        nodes: int = 3,
        extra_env: dict[str, str] | None = None,
        stagger: float = 0.0,
        prometheus: bool = False,
    ) -> Stack:
        pipe = pipeline(**spec)
        root = tmp_path / f"stack{len(node_sets)}"
        root.mkdir()
        token = local_token(root / "otlp-token")
        tls = local_tls(root / "tls", pipe)
        parsed = parse_pipeline(pipe["spec"])
        prom = None
        if prometheus:  # the rendered config and rules; targets once everything listens
            prom = Prometheus(
                prometheus_config(pipe, parsed),
                rules_for(pipe, parsed),
                workdir=root / "prometheus",
                args=kept_flags(prometheus_args(metrics_settings(pipe, parsed))),
            )
            started.append(prom)
            prom.start()
        prometheus_url = {"prometheus_url": prom.url} if prom else {}
        jaeger = Jaeger(
            loopback_config(
                render_jaeger_config(pipe),
                badger_dir=root / "badger",
                tls=tls,
                leaf=tls.jaeger_leaf(),
                **prometheus_url,
            ),
            ca_file=tls.ca_file if tls.enabled else None,
            workdir=root / "jaeger",
            name="jaeger",
        )
        started.append(jaeger)
        jaeger.start()
        samplers: list[RestartableCollector] = []
        if sampling.two_tier(parsed):
            for i in range(parsed.collector.replicas):
                c = Collector(
                    loopback_config(
                        render_collector_config(pipe, SAMPLING_TIER),
                        jaeger_otlp_grpc=jaeger.otlp_grpc,
                        tls=tls,
                        leaf=tls.sampling_leaf(),
                        **prometheus_url,
                    ),
                    workdir=root / f"sampling-{i}",
                    name=f"collector-sampling-{i}",
                )
                started.append(c)
                samplers.append(RestartableCollector(c.start()))
            front = Collector(
                loopback_config(
                    render_collector_config(pipe, LOADBALANCER_TIER),
                    sampling_collectors=[s.backend.otlp_grpc for s in samplers],
                    token_file=token.file,
                    tls=tls,
                    leaf=tls.edge_leaf(),
                ),
                workdir=root / "collector",
                name="collector",
            )
        else:
            front = Collector(
                loopback_config(
                    render_collector_config(pipe, SAMPLING_TIER),
                    jaeger_otlp_grpc=jaeger.otlp_grpc,
                    token_file=token.file,
                    tls=tls,
                    leaf=tls.edge_leaf(),
                    **prometheus_url,
                ),
                workdir=root / "collector",
                name="collector",
            )
        started.append(front)
        front.start()
        stack = Stack(pipe, RestartableJaeger(jaeger), RestartableCollector(front), samplers)
        stack.nodes = start_kv_nodes(
            root,
            [loopback_ip() for _ in range(nodes)],
            kvcluster(nodes),
            pipe,
            front.otlp_http,
            faults=faults,
            extra=extra_env,
            stagger=stagger,
            secrets=token.secrets(pipe),
            tls=tls,
        )
        node_sets.append(stack.nodes)
        if prom is not None:
            stack.prometheus = prom
            collectors = [front, *(s.backend for s in samplers)]
            own = {"namespace": NAMESPACE, "instance_of": PIPELINE}
            prom.set_targets(
                {
                    JOB_COLLECTOR: {
                        c.endpoint("metrics"): {**own, "pod": c.name} for c in collectors
                    },
                    JOB_JAEGER: {jaeger.endpoint("metrics"): {**own, "pod": "jaeger"}},
                    JOB_KVNODE: {
                        f"{n.ip}:{n.client_port}": {
                            "namespace": NAMESPACE,
                            "instance_of": CLUSTER,
                            "pod": n.pod,
                        }
                        for n in stack.nodes
                    },
                }
            )
        return stack

    yield make
    for nodes in node_sets:
        stop_kv_nodes(nodes)
    for backend in reversed(started):
        backend.stop()
