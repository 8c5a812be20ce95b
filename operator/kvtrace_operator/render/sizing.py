"""Default compute resources of a pipeline's collector and Jaeger containers, derived from
the pipeline, so nothing runs unbounded unless the user says so (a finding of the Checkov scanner).

One memory model, shared with ``kvtrace doctor``'s resources check: a span takes
``SPAN_BYTES`` in memory; a KV trace has ``SPANS_PER_TRACE`` spans (the coordinator's and
one per replica call at the default replication factor 3).

- The collector holds its process, one batch (``batch.sendBatchSize`` spans) and, in the
  tier that tail-samples, ``sampling.numTraces`` traces while deciding. That working set is
  the memory request; the memory limit is sized so that the working set fits under the
  memory_limiter's soft limit (``limitPercentage - spikeLimitPercentage`` of the container
  limit, which the limiter measures against) and one batch fits in its spike allowance.
  In ``head`` and ``retroactive`` modes no tier tail-samples: the retroactive KV nodes hold
  their undecided spans themselves (``sampling.retroactive.bufferBytes`` each, outside the
  collector), so the collector's request drops by ``numTraces`` x ``SPANS_PER_TRACE`` x
  ``SPAN_BYTES`` (~195 MiB at the defaults; ``tail_sampling_bytes``).
- Jaeger's memory store is bounded by ``storage.maxTraces`` traces: request those plus the
  process, limit 50% above (Jaeger has no memory limiter); badger keeps its tables on the
  volume and caches a fixed amount.
- CPU gets a request only: a CPU limit throttles a busy collector into refusing spans.

A resource the user names in ``resources`` (as a request or a limit) is entirely the user's;
the others keep these defaults.

Pure: imports nothing but the render layer.
"""

from __future__ import annotations

import math
from typing import Any

from kvtrace_operator.render import sampling
from kvtrace_operator.spec import PipelineSpec

MI = 1024 * 1024
SPAN_BYTES = 1024  # one span in memory, attributes included
SPANS_PER_TRACE = 4  # 1 + replication factor 3
# The collector or Jaeger process itself: otelcol-kvtrace 0.161.0 idles at 67 MiB RSS with a
# minimal config (measured); twice that leaves room for the full config and the Go heap.
PROCESS_BYTES = 128 * MI
BADGER_BYTES = 512 * MI  # badger's memtables and block cache
CPU_REQUEST = "100m"
JAEGER_LIMIT_FACTOR = 1.5


def _mebibytes(size: float) -> str:
    return f"{math.ceil(size / MI)}Mi"


def tail_sampling_bytes(spec: PipelineSpec) -> int:
    """What the tail sampler holds while deciding, at ``numTraces`` (the memory model above)."""
    return spec.sampling.num_traces * SPANS_PER_TRACE * SPAN_BYTES


def collector_working_set(spec: PipelineSpec, samples: bool) -> int:
    """Bytes the collector of a tier holds: process + one batch (+ tail-sampling buffer)."""
    size = PROCESS_BYTES + spec.collector.send_batch_size * SPAN_BYTES
    if samples and sampling.uses_tail_sampling(spec):
        size += tail_sampling_bytes(spec)
    return size


def collector_memory_limit(spec: PipelineSpec, working_set: int) -> int:
    """The smallest limit whose soft limit holds ``working_set`` and whose spike allowance
    holds one batch."""
    collector = spec.collector
    soft = (collector.limit_percentage - collector.spike_limit_percentage) / 100
    spike = collector.spike_limit_percentage / 100
    batch = collector.send_batch_size * SPAN_BYTES
    return int(max(math.ceil(working_set / soft), math.ceil(batch / spike)))


def collector_resources(spec: PipelineSpec, samples: bool) -> dict[str, Any]:
    """The collector container's resources (``samples``: this tier runs the tail sampler)."""
    working = collector_working_set(spec, samples)
    defaults = {
        "requests": {"cpu": CPU_REQUEST, "memory": _mebibytes(working)},
        "limits": {"memory": _mebibytes(collector_memory_limit(spec, working))},
    }
    return merged(spec.collector.resources, defaults)


def jaeger_resources(spec: PipelineSpec) -> dict[str, Any]:
    """Jaeger's container resources, from its storage (and a memory archive's traces)."""
    storage, archive = spec.jaeger.storage, spec.jaeger.archive
    if storage.type == "badger":  # an archive is a second badger database
        working = PROCESS_BYTES + BADGER_BYTES * (2 if archive.enabled else 1)
    else:
        traces = storage.max_traces + (archive.max_traces if archive.enabled else 0)
        working = PROCESS_BYTES + traces * SPANS_PER_TRACE * SPAN_BYTES
    defaults = {
        "requests": {"cpu": CPU_REQUEST, "memory": _mebibytes(working)},
        "limits": {"memory": _mebibytes(working * JAEGER_LIMIT_FACTOR)},
    }
    return merged(spec.jaeger.resources, defaults)


def merged(user: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` for every resource (cpu, memory, ...) ``user`` names neither as a request
    nor as a limit, and ``user``'s own values as given."""
    user = user or {}
    taken = set(user.get("requests") or {}) | set(user.get("limits") or {})
    result = dict(user)
    for part in ("requests", "limits"):
        values = {
            name: value for name, value in defaults.get(part, {}).items() if name not in taken
        }
        values.update(user.get(part) or {})
        if values:
            result[part] = values
    return result
