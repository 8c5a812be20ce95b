"""The TraceDelivery condition (render/canary.py, pure), how pipeline_status() carries it,
the canary's OTLP request, the operator's canary and tracing flags, and the operator's
tracing being free when off."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from kvtrace import canary as otlp_canary
from kvtrace_operator import cli, tracing
from kvtrace_operator.render.canary import (
    CanaryResult,
    canary_duration_ns,
    decide,
    delivery_status,
    lookup_bound_s,
)
from kvtrace_operator.render.status import find_condition, pipeline_status, workload_summary
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"
COLLECTOR = "http://traces-collector.ns1.svc.cluster.local:4318"
JAEGER = "http://traces-jaeger-query.ns1.svc.cluster.local:16686"
TRACE = "ab" * 16


def run(**fields: Any) -> CanaryResult:
    base: dict[str, Any] = {
        "trace_id": TRACE,
        "collector": COLLECTOR,
        "jaeger": JAEGER,
        "time": T1,
        "http_status": 200,
        "bound_s": 21.0,
    }
    return CanaryResult(**{**base, **fields})


class TestDecide:
    @pytest.mark.parametrize(
        ("result", "enabled", "status", "reason", "evidence"),
        [
            (None, False, "Unknown", "Disabled", "--canary-interval 0"),
            (None, True, "Unknown", "Pending", "within 60s"),
            (
                run(found=True, waited_s=1.25),
                True,
                "True",
                "Delivered",
                f"{TRACE} sent to {COLLECTOR} found in Jaeger at {JAEGER} after 1.2s",
            ),
            (
                run(http_status=None, send_error="[Errno 111] Connection refused"),
                True,
                "False",
                "CollectorUnreachable",
                f"could not be sent to {COLLECTOR}: [Errno 111] Connection refused",
            ),
            (
                run(http_status=401, http_body="missing or empty authorization header\n"),
                True,
                "False",
                "Rejected",
                "answered HTTP 401 to canary trace "
                + TRACE
                + " (the bearer token is missing or wrong): missing or "
                "empty authorization header",
            ),
            (run(http_status=503, http_body=""), True, "False", "Rejected", "memory limiter"),
            (
                run(
                    http_status=None,
                    credentials_error="Secret tok (spec.security.auth token) does not exist",
                ),
                True,
                "False",
                "CredentialsUnavailable",
                "Secret tok (spec.security.auth token) does not exist",
            ),
            (
                run(found=False, waited_s=21.0),
                True,
                "False",
                "NotFoundInJaeger",
                f"accepted by {COLLECTOR} but not found in Jaeger at {JAEGER} within 21s",
            ),
            (
                run(found=False, jaeger_error="[Errno 111] Connection refused"),
                True,
                "False",
                "NotFoundInJaeger",
                "last Jaeger query error: [Errno 111] Connection refused",
            ),
            (run(jaeger=None), True, "Unknown", "JaegerDisabled", "spec.jaeger.enabled is false"),
        ],
        ids=[
            "disabled",
            "pending",
            "delivered",
            "unreachable",
            "unauthorized",
            "refusing",
            "credentials",
            "not-found",
            "jaeger-down",
            "jaeger-disabled",
        ],
    )
    def test_status_reason_and_evidence(
        self, result: CanaryResult | None, enabled: bool, status: str, reason: str, evidence: str
    ) -> None:
        got = decide(result, enabled=enabled)
        assert got[:2] == (status, reason)
        assert evidence in got[2]

    @pytest.mark.parametrize(
        "result",
        [run(http_status=None, send_error="timed out"), run(http_status=500), run(found=False)],
        ids=["unreachable", "rejected", "not-found"],
    )
    def test_failures_say_when_a_canary_last_got_through(self, result: CanaryResult) -> None:
        assert decide(result, enabled=True, last_success=T0)[2].endswith(
            f"; last delivered at {T0}"
        )
        assert decide(result, enabled=True)[2].endswith("; no canary delivered yet")

    def test_a_long_error_body_is_cut_to_one_line(self) -> None:
        message = decide(run(http_status=400, http_body="x\n" * 500), enabled=True)[2]
        assert "\n" not in message and "x x" in message and len(message) < 450


class TestDeliveryRecord:
    def test_success_sets_last_success_and_latency(self) -> None:
        assert delivery_status(run(found=True, waited_s=2.04), None) == {
            "lastProbeTime": T1,
            "traceID": TRACE,
            "lastSuccessTime": T1,
            "latencySeconds": "2.0",
        }

    def test_failure_keeps_the_last_success(self) -> None:
        before = {
            "lastProbeTime": T0,
            "lastSuccessTime": T0,
            "traceID": "cd" * 16,
            "latencySeconds": "1.0",
        }
        assert delivery_status(run(found=False), before) == {
            "lastProbeTime": T1,
            "traceID": TRACE,
            "lastSuccessTime": T0,
        }
        assert delivery_status(None, before) == before


class TestBounds:
    def test_canary_outlasts_the_latency_threshold(self) -> None:
        spec = parse_pipeline({"sampling": {"latencyThreshold": "1s"}})
        assert canary_duration_ns(spec) == 1_100_000_000

    def test_lookup_waits_for_the_tail_sampling_decision(self) -> None:
        assert lookup_bound_s(parse_pipeline({}), 20.0) == 30.0  # decisionWait 10s
        assert lookup_bound_s(parse_pipeline({"sampling": {"decisionWait": "2s"}}), 5.0) == 7.0
        assert lookup_bound_s(parse_pipeline({"sampling": {"mode": "head"}}), 5.0) == 5.0


def pipeline(status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "ns1", "uid": "p1", "generation": 3},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


def deployment(name: str, component: str, ready: int) -> dict[str, Any]:
    return workload_summary(
        {
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "generation": 1,
                "labels": {"app.kubernetes.io/component": component},
            },
            "spec": {"replicas": 1},
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "readyReplicas": ready,
                "updatedReplicas": 1,
            },
        }
    )


HEALTHY = [deployment("traces-collector", "collector", 1), deployment("traces-jaeger", "jaeger", 1)]


class TestPipelineStatus:
    def test_trace_delivery_is_a_condition_and_ready_ignores_it(self) -> None:
        failed = decide(run(found=False), enabled=True)
        status = pipeline_status(
            pipeline(),
            workloads=HEALTHY,
            consumers=[],
            now=T1,
            trace_delivery=failed,
            delivery=delivery_status(run(found=False), None),
        )
        assert find_condition(status, "Ready")["status"] == "True"  # type: ignore[index]
        delivery = find_condition(status, "TraceDelivery")
        assert delivery is not None
        assert (delivery["status"], delivery["reason"], delivery["observedGeneration"]) == (
            "False",
            "NotFoundInJaeger",
            3,
        )
        assert status["traceDelivery"] == {"lastProbeTime": T1, "traceID": TRACE}

    def test_no_new_outcome_keeps_what_the_status_shows(self) -> None:
        first = pipeline_status(
            pipeline(),
            workloads=HEALTHY,
            consumers=[],
            now=T0,
            trace_delivery=decide(run(found=True), enabled=True),
            delivery=delivery_status(run(found=True), None),
        )
        again = pipeline_status(pipeline(first), workloads=HEALTHY, consumers=[], now=T1)
        assert find_condition(again, "TraceDelivery") == find_condition(first, "TraceDelivery")
        assert again["traceDelivery"] == first["traceDelivery"]

    def test_transition_time_moves_only_with_the_status(self) -> None:
        failing = pipeline_status(
            pipeline(),
            workloads=HEALTHY,
            consumers=[],
            now=T0,
            trace_delivery=decide(run(found=False), enabled=True),
        )
        still = pipeline_status(
            pipeline(failing),
            workloads=HEALTHY,
            consumers=[],
            now=T1,
            trace_delivery=decide(run(http_status=None, send_error="refused"), enabled=True),
        )
        assert find_condition(still, "TraceDelivery")["lastTransitionTime"] == T0  # type: ignore[index]
        healed = pipeline_status(
            pipeline(still),
            workloads=HEALTHY,
            consumers=[],
            now=T1,
            trace_delivery=decide(run(found=True), enabled=True),
        )
        assert find_condition(healed, "TraceDelivery")["lastTransitionTime"] == T1  # type: ignore[index]

    def test_an_invalid_spec_keeps_the_condition_too(self) -> None:
        status = pipeline_status(
            pipeline(),
            workloads=[],
            consumers=[],
            now=T0,
            spec_error="bad",
            trace_delivery=decide(None, enabled=False),
        )
        assert find_condition(status, "TraceDelivery")["reason"] == "Disabled"  # type: ignore[index]


class TestCanaryRequest:
    def test_one_root_span_of_its_own_service(self) -> None:
        request = otlp_canary.canary_request(
            TRACE,
            "cd" * 8,
            start_ns=1,
            end_ns=2,
            service="svc",
            name="n",
            attributes={"b": "2", "a": "1"},
        )
        (resource,) = request["resourceSpans"]
        assert resource["resource"]["attributes"] == [
            {"key": "service.name", "value": {"stringValue": "svc"}}
        ]
        (span,) = resource["scopeSpans"][0]["spans"]
        assert (span["traceId"], span["name"], span["startTimeUnixNano"], span["status"]) == (
            TRACE,
            "n",
            "1",
            {"code": 0},
        )
        assert [a["key"] for a in span["attributes"]] == ["a", "b"]
        assert "parentSpanId" not in span

    def test_urls(self) -> None:
        assert otlp_canary.traces_url("http://c:4318/") == "http://c:4318/v1/traces"
        assert otlp_canary.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
        with pytest.raises(ValueError, match="expected an http\\(s\\) URL"):
            otlp_canary.post("c:4318", {})


class TestFlags:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("60", 60.0),
            ("1.5", 1.5),
            ("90s", 90.0),
            ("5m", 300.0),
            ("0", 0.0),
            ("off", 0.0),
            ("OFF", 0.0),
        ],
    )
    def test_canary_interval(self, value: str, seconds: float) -> None:
        assert cli.seconds(value, "--canary-interval", allow_off=True) == seconds

    @pytest.mark.parametrize("value", ["soon", "-1", "", "inf", "10x"])
    def test_bad_interval_names_the_flag(self, value: str) -> None:
        with pytest.raises(
            ValueError,
            match=r"^--canary-interval: expected seconds or a duration such as 60s "
            r"or 5m, or 0/off to disable, got",
        ):
            cli.seconds(value, "--canary-interval", allow_off=True)

    def test_timeout_cannot_be_off(self) -> None:
        with pytest.raises(ValueError, match="--canary-timeout: expected seconds"):
            cli.seconds("0", "--canary-timeout")

    def parse(self, *argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="kvtrace", exit_on_error=False)
        cli.register(parser.add_subparsers(dest="command"))
        return parser.parse_args(["operator", "run", *argv])

    def test_defaults_and_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for env in (cli.CANARY_INTERVAL_ENV, cli.CANARY_TIMEOUT_ENV, cli.TRACE_PIPELINE_ENV):
            monkeypatch.delenv(env, raising=False)
        args = self.parse()
        assert (args.canary_interval, args.canary_timeout, args.trace_pipeline) == (
            60.0,
            20.0,
            None,
        )
        monkeypatch.setenv(cli.CANARY_INTERVAL_ENV, "off")
        monkeypatch.setenv(cli.TRACE_PIPELINE_ENV, "obs/traces")
        args = self.parse()
        assert (args.canary_interval, args.trace_pipeline) == (0.0, ("obs", "traces"))
        args = self.parse(
            "--canary-interval", "2s", "--trace-pipeline", "a/b"
        )  # flags win over env
        assert (args.canary_interval, args.trace_pipeline) == (2.0, ("a", "b"))

    @pytest.mark.parametrize("value", ["traces", "/traces", "ns/", "a/b/c"])
    def test_trace_pipeline_must_be_namespace_slash_name(self, value: str) -> None:
        with pytest.raises(
            ValueError, match=r"^--trace-pipeline: expected NAMESPACE/NAME of a TracingPipeline"
        ):
            tracing.parse_target(value)


def test_tracing_off_is_a_shared_no_op() -> None:
    assert tracing.target() is None and not tracing.enabled()
    with tracing.span("apply children", {"a": 1}) as step:
        step.set("kvtrace.children.created", 2)
    assert tracing.span("x") is tracing.span("y")  # one shared object: nothing allocated per call
    result = {"outcome": "success"}
    with tracing.reconcile("KVCluster", {"metadata": {"name": "kv"}}, result) as root:
        root.set("k", "v")
    tracing.export_to("http://c:4318")  # nothing to point: ignored


def test_canary_runs_are_counted_by_reason() -> None:
    from kvtrace_operator.handlers.metrics import Metrics

    metrics = Metrics()
    for reason in ("Delivered", "NotFoundInJaeger", "Delivered"):
        metrics.canary(reason)
    text = metrics.render()
    assert "# TYPE kvtrace_operator_canaries_total counter" in text
    assert 'kvtrace_operator_canaries_total{reason="Delivered"} 2.0\n' in text
    assert 'kvtrace_operator_canaries_total{reason="NotFoundInJaeger"} 1.0\n' in text


class TestOutcomeKeeping:
    """handlers/canary.py keeps the last outcome per pipeline (on the run's Runtime) for every
    status write."""

    @staticmethod
    def runtime(interval: float = 30.0) -> Any:
        from kvtrace_operator.handlers.runtime import Options, Runtime

        return Runtime(client=None, options=Options(canary_interval=interval))  # type: ignore[arg-type]

    def test_pending_then_the_last_run_then_forgotten(self) -> None:
        from kvtrace_operator.handlers import canary as handler

        body, runtime = pipeline(), self.runtime()
        assert handler.current(runtime, body) == (
            ("Unknown", "Pending", "the first canary trace is sent within 30s"),
            None,
        )
        handler.record(runtime, body, run(found=True, waited_s=1.0))
        failed = handler.record(runtime, body, run(found=False))
        assert handler.current(runtime, body) == failed
        assert failed[0][:2] == ("False", "NotFoundInJaeger") and failed[0][2].endswith(
            f"last delivered at {T1}"
        )
        assert failed[1]["lastSuccessTime"] == T1
        meta = body["metadata"]
        runtime.forget("TracingPipeline", meta["namespace"], meta["name"], meta.get("uid"))
        assert handler.current(runtime, body)[0][1] == "Pending"
        assert runtime.deliveries == {}

    def test_after_a_restart_the_status_shown_is_kept(self) -> None:
        from kvtrace_operator.handlers import canary as handler

        shown = pipeline_status(
            pipeline(),
            workloads=HEALTHY,
            consumers=[],
            now=T0,
            trace_delivery=decide(run(found=True), enabled=True),
            delivery=delivery_status(run(found=True), None),
        )
        condition, record = handler.current(self.runtime(), pipeline(shown))
        assert condition[:2] == ("True", "Delivered") and record == shown["traceDelivery"]

    def test_disabled_when_the_interval_is_zero(self) -> None:
        from kvtrace_operator.handlers import canary as handler

        assert handler.current(self.runtime(0.0), pipeline())[0][1] == "Disabled"
