"""Checks the schema cannot express, and the schema's own rules again for ``kvtrace render``
(files never went through the API server). Every SpecError names the field path.

The shape of a spec (types, unknown fields, the CEL rules) is checked in one place, against the
CRD itself: by the API server for the operator, by ``render.strict`` for ``kvtrace render``
before anything renders. What reaches this module has that shape."""

from __future__ import annotations

import re
from typing import Any

from kvtrace_operator.render import (
    consumer_tokens,
    environment,
    kvsecurity,
    query_access,
    sampling,
    tls,
)
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.spec.defaults import apply_defaults_kvcluster, apply_defaults_pipeline
from kvtrace_operator.spec.durations import parse_duration

# StatefulSet pods get a controller-revision-hash label "NAME-<10 chars>" (<= 63).
MAX_KVCLUSTER_NAME = 52
MAX_PIPELINE_NAME = 40  # "-collector-sampling" and friends must still fit in 63
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
CONSISTENCY_LEVELS = ("one", "quorum", "all")
MAX_BUFFER_AGE_NS = 60 * 10**9  # spec.sampling.retroactive.bufferAge, as the CRD says
# The same minimums as the CRDs' CEL rules (a unit test compares them).
MIN_DURATIONS = {
    "spec.antiEntropy.interval": "1s",
    "spec.sampling.latencyThreshold": "1ms",
    "spec.sampling.decisionWait": "1s",
    "spec.sampling.retroactive.bufferAge": "100ms",
    "spec.collector.resourceDetection.timeout": "100ms",
    "spec.jaeger.storage.retention": "1m",
    "spec.jaeger.archive.retention": "1m",
    "spec.metrics.prometheus.retention": "1h",
    "spec.metrics.prometheus.scrapeInterval": "1s",
    **{
        f"spec.security.tls.{field}": "1s"
        for field in ("duration", "renewBefore", "caDuration", "caRenewBefore")
    },
}


def _duration(spec: dict[str, Any], field: str) -> None:
    value: Any = spec
    for key in field.split(".")[1:]:
        value = value[key]
    parse_duration(value, field, MIN_DURATIONS.get(field))


def _spec(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource's spec, ``{}`` when it has none."""
    return dict(resource.get("spec") or {})


def _name(resource: dict[str, Any], limit: int) -> None:
    name = resource.get("metadata", {}).get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > limit:
        raise SpecError(
            "metadata.name",
            f"expected a DNS label (lower-case letters, digits, '-', "
            f"starting with a letter) of at most {limit} characters, got {name!r}",
        )


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(field, f"expected an integer from {low} to {high}, got {value!r}")
    return value


def _enum(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(field, f"expected one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _quantity(value: Any, field: str) -> None:
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise SpecError(field, f"expected a storage quantity such as 1Gi or 500Mi, got {value!r}")


def validate_kvcluster(cluster: dict[str, Any]) -> None:
    spec = apply_defaults_kvcluster(_spec(cluster))
    _name(cluster, MAX_KVCLUSTER_NAME)
    replicas = _integer(spec["replicas"], "spec.replicas", 1, 100)
    factor = _integer(spec["replicationFactor"], "spec.replicationFactor", 1, 7)
    if factor > replicas:
        raise SpecError(
            "spec.replicationFactor",
            f"must be at most spec.replicas ({replicas}): "
            f"each key needs {factor} distinct members, got {factor}",
        )
    for level in ("read", "write"):
        _enum(spec["consistency"][level], f"spec.consistency.{level}", CONSISTENCY_LEVELS)
    _duration(spec, "spec.antiEntropy.interval")
    _quantity(spec["storage"]["size"], "spec.storage.size")
    _enum(
        spec["scheduling"]["podAntiAffinity"],
        "spec.scheduling.podAntiAffinity",
        ("preferred", "required", "none"),
    )
    _enum(
        spec["networkPolicy"]["clientAccess"],
        "spec.networkPolicy.clientAccess",
        ("all", "labelled"),
    )
    kvsecurity.validate(spec)


def _validate_sampling(spec: dict[str, Any]) -> None:
    values = spec["sampling"]
    mode = _enum(values["mode"], "spec.sampling.mode", sampling.MODES)
    ratio = values["ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise SpecError("spec.sampling.ratio", f"expected a number from 0 to 1, got {ratio!r}")
    if mode == sampling.HEAD and values.get("keepErrors") is True:
        raise SpecError(
            "spec.sampling.keepErrors",
            "head sampling decides at the root span, before "
            "any error happens, so it cannot keep every error: use mode production "
            "(tail sampling) or leave keepErrors unset/false",
        )
    _duration(spec, "spec.sampling.latencyThreshold")
    _duration(spec, "spec.sampling.decisionWait")
    if sampling.uses_tail_sampling(spec):
        _decision_wait(spec)
    _validate_retroactive(spec)


def _validate_retroactive(spec: dict[str, Any]) -> None:
    """The nodes' buffer bounds (the same as the CRD's and `kvtrace node serve`'s); in
    retroactive mode the buffer must hold a trace past the latency threshold."""
    values = spec["sampling"]
    retro = values["retroactive"]
    _integer(retro["bufferBytes"], "spec.sampling.retroactive.bufferBytes", 1 << 20, 1 << 30)
    _duration(spec, "spec.sampling.retroactive.bufferAge")
    age = parse_duration(retro["bufferAge"], "spec.sampling.retroactive.bufferAge")
    if age > MAX_BUFFER_AGE_NS:
        raise SpecError(
            "spec.sampling.retroactive.bufferAge",
            f"expected at most 60s, got {retro['bufferAge']!r}",
        )
    if values["mode"] != sampling.RETROACTIVE:
        return
    if values.get("keepErrors") is False:
        raise SpecError(
            "spec.sampling.keepErrors",
            "retroactive mode always keeps every failed operation's trace: leave keepErrors "
            "unset/true, or use mode head to sample errors at ratio",
        )
    threshold = parse_duration(values["latencyThreshold"], "spec.sampling.latencyThreshold")
    if age <= threshold:
        raise SpecError(
            "spec.sampling.retroactive.bufferAge",
            f"expected more than spec.sampling.latencyThreshold ({values['latencyThreshold']}), "
            f"got {retro['bufferAge']!r}: a replica's spans of an operation just over the "
            "threshold would expire before its coordinator keeps them",
        )


def _decision_wait(spec: dict[str, Any]) -> None:
    """Tail sampling judges whole traces only if decisionWait leaves room for a slow trace to
    end and reach the sampler (sampling.min_decision_wait_ns explains the bound)."""
    wait = parse_duration(spec["sampling"]["decisionWait"], "spec.sampling.decisionWait")
    minimum = sampling.min_decision_wait_ns(spec)
    if wait < minimum:
        raise SpecError(
            "spec.sampling.decisionWait",
            (
                f"expected at least 2 x (spec.sampling.latencyThreshold + spec.collector.batch.timeout) = "
                f"{minimum / 1e9:g}s with tail sampling, got {spec['sampling']['decisionWait']!r}: the "
                f"sampler would decide before a trace just over the latency threshold has reached it"
            ),
        )


def _validate_destinations(spec: dict[str, Any]) -> None:
    exporters = spec["exporters"].get("otlp") or []
    seen: set[str] = set()
    for index, exporter in enumerate(exporters):
        field = f"spec.exporters.otlp[{index}]"
        name = exporter.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            raise SpecError(f"{field}.name", f"expected a lower-case name, got {name!r}")
        if name in seen:
            raise SpecError(f"{field}.name", f"duplicate exporter name {name!r}")
        seen.add(name)
        if not exporter.get("endpoint"):
            raise SpecError(f"{field}.endpoint", "expected the OTLP endpoint (host:port or URL)")
        _enum(exporter["protocol"], f"{field}.protocol", ("grpc", "http"))
        _validate_secret_refs(exporter, field)
    if not (spec["jaeger"]["enabled"] or exporters or sampling.debug_exporter_on(spec)):
        raise SpecError(
            "spec.exporters",
            "traces have nowhere to go: enable spec.jaeger, add "
            "spec.exporters.otlp or enable spec.exporters.debug",
        )


def _secret_ref(ref: Any, field: str) -> None:
    if not isinstance(ref, dict) or not all(
        isinstance(ref.get(key), str) and ref[key] for key in ("name", "key")
    ):
        raise SpecError(field, f"expected {{name: SECRET, key: KEY}}, got {ref!r}")


def _validate_secret_refs(exporter: dict[str, Any], field: str) -> None:
    if exporter["tls"].get("caSecret") is not None:
        _secret_ref(exporter["tls"]["caSecret"], f"{field}.tls.caSecret")
    seen: set[str] = set()
    for index, header in enumerate(exporter.get("secretHeaders") or []):
        where = f"{field}.secretHeaders[{index}]"
        name = header.get("name") if isinstance(header, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9-]+", name):
            raise SpecError(f"{where}.name", f"expected a header name, got {name!r}")
        if name.lower() in seen:
            raise SpecError(f"{where}.name", f"duplicate header {name!r}")
        seen.add(name.lower())
        _secret_ref(header.get("secretKeyRef"), f"{where}.secretKeyRef")


def _validate_jaeger(spec: dict[str, Any]) -> None:
    jaeger = spec["jaeger"]
    storage = jaeger["storage"]
    _enum(storage["type"], "spec.jaeger.storage.type", ("memory", "badger"))
    _integer(storage["maxTraces"], "spec.jaeger.storage.maxTraces", 1, 10_000_000)
    _duration(spec, "spec.jaeger.storage.retention")
    _quantity(storage["size"], "spec.jaeger.storage.size")
    _validate_archive(spec)
    tenancy = jaeger["tenancy"]
    if tenancy["enabled"] and not tenancy.get("tenants"):
        raise SpecError(
            "spec.jaeger.tenancy.tenants", "expected at least one tenant when tenancy is enabled"
        )
    query_access.validate(spec)
    if (ref := jaeger["query"]["auth"].get("credentialsSecretRef")) is not None:
        _secret_ref(ref, f"{query_access.FIELD}.credentialsSecretRef")


def _validate_archive(spec: dict[str, Any]) -> None:
    archive, storage = spec["jaeger"]["archive"], spec["jaeger"]["storage"]
    _integer(archive["maxTraces"], "spec.jaeger.archive.maxTraces", 1, 10_000_000)
    _duration(spec, "spec.jaeger.archive.retention")
    if not archive["enabled"] or storage["type"] != "badger":
        return
    longer = parse_duration(archive["retention"], "spec.jaeger.archive.retention")
    if longer <= parse_duration(storage["retention"], "spec.jaeger.storage.retention"):
        raise SpecError(
            "spec.jaeger.archive.retention",
            f"expected a duration longer than spec.jaeger.storage.retention "
            f"({storage['retention']}) with badger storage: the archive keeps what the primary "
            f"store lets expire, got {archive['retention']!r}",
        )


_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")


def _validate_metrics(spec: dict[str, Any]) -> None:
    prometheus = spec["metrics"]["prometheus"]
    _duration(spec, "spec.metrics.prometheus.retention")
    _duration(spec, "spec.metrics.prometheus.scrapeInterval")
    _quantity(prometheus["storageSize"], "spec.metrics.prometheus.storageSize")
    external = spec["metrics"].get("external")
    if external is None:
        return
    if not spec["metrics"]["enabled"]:
        raise SpecError(
            "spec.metrics.external",
            "external needs enabled: true (the span metrics are what is sent there)",
        )
    for key in ("url", "otlpEndpoint"):
        value = external.get(key)
        if (value is not None or key == "url") and not (
            isinstance(value, str) and _URL.match(value)
        ):
            raise SpecError(
                f"spec.metrics.external.{key}",
                f"expected an http(s) URL such as http://prometheus.monitoring:9090, got {value!r}",
            )


def _validate_security(spec: dict[str, Any]) -> None:
    ref = spec["security"]["auth"].get("tokenSecretRef")
    if spec["security"]["auth"]["enabled"] and ref is not None:  # None: the operator makes one
        _secret_ref(ref, "spec.security.auth.tokenSecretRef")
    consumer_tokens.validate(spec["security"]["auth"])
    tls.validate(spec)


def validate_pipeline(pipeline: dict[str, Any]) -> None:
    spec = apply_defaults_pipeline(_spec(pipeline))
    _name(pipeline, MAX_PIPELINE_NAME)
    _validate_sampling(spec)
    _integer(spec["collector"]["replicas"], "spec.collector.replicas", 1, 20)
    _duration(spec, "spec.collector.resourceDetection.timeout")
    environment.environment(pipeline, spec)
    _validate_jaeger(spec)
    _validate_destinations(spec)
    _validate_metrics(spec)
    _enum(
        spec["networkPolicy"]["queryAccess"],
        "spec.networkPolicy.queryAccess",
        ("namespace", "labelled"),
    )
    _validate_security(spec)
    hashed = spec["redaction"].get("hashAttributes") or []
    if "kvstore.key" not in hashed and sampling.mode(spec) != sampling.DEVELOPMENT:
        raise SpecError(
            "spec.redaction.hashAttributes",
            "must contain kvstore.key: raw keys are "
            "kept only by a development pipeline that asks for it explicitly",
        )
