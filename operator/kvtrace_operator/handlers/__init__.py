"""Layer 3: kopf handlers, one module per custom resource, plus the watches on our children
and on Secrets.

Level-based: resume, create and update of a resource call one idempotent ``reconcile``; a
timer re-runs it (a child deleted or edited by hand is repaired); a child's deletion triggers
it at once; a child workload's status change refreshes the owner's status. Handlers of one
resource never call another's reconcile: they ask for it (``Runtime.request``, coalesced).
``register()`` adds every handler to a kopf registry with the given options; ``start()``
makes the run's Runtime (kept on kopf's memo) with the runners of the requests.

Every handler and index function is ``async``: kopf runs sync ones in its thread pool (4
workers), where every Secret and child event would queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from lightkube import AsyncClient

from kvtrace.shared.api import KVCLUSTER, PIPELINE
from kvtrace_operator import k8s
from kvtrace_operator.handlers import (
    children,
    consumers,
    kvcluster,
    pipeline,
    secret_watch,
    webhook,
)
from kvtrace_operator.handlers.metrics import METRICS
from kvtrace_operator.handlers.runtime import (
    CHILDREN_INDICES,
    OBJECTS_INDICES,
    SECRETS_INDEX,
    Options,
    Runtime,
)

# kopf's indices the runtime reads (kopf hands them, live, to the startup handler too).
INDICES = (
    *consumers.SOURCES,
    secret_watch.INDEX,
    secret_watch.CLIENT_INDEX,
    *CHILDREN_INDICES,
    SECRETS_INDEX,
    *OBJECTS_INDICES.values(),
)


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    consumers.register(registry)
    kvcluster.register(registry, options)
    pipeline.register(registry, options)
    children.register(registry, options)
    secret_watch.register(registry, options)
    webhook.register(registry, options)


def start(client: AsyncClient, options: Options, indices: Mapping[str, Any]) -> Runtime:
    """The Runtime of one operator run: ``indices`` are kopf's (the startup handler's kwargs)."""
    k8s.count_requests(client, METRICS.api_request)
    for api_version, kind in k8s.PRUNABLE_KINDS:  # loaded now: the baseline memory holds them
        k8s.resource_class(api_version, kind)
    runtime = Runtime(
        client, options, indices={key: indices[key] for key in INDICES if key in indices}
    )
    runtime.requests.runners.update(
        {KVCLUSTER: kvcluster.run_requested, PIPELINE: pipeline.run_requested}
    )
    return runtime


__all__ = ["INDICES", "Options", "Runtime", "register", "start"]
