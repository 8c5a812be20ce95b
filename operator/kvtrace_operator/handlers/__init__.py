"""Layer 3: kopf handlers, one module per custom resource, plus the watch on our children.

Level-based: resume, create and update of a resource call one idempotent ``reconcile``; a
timer re-runs it (a child deleted or edited by hand is repaired); a child's deletion triggers
it at once; a child workload's status change refreshes the owner's status. ``register()``
adds every handler to a kopf registry with the given options.
"""

from __future__ import annotations

import kopf

from kvtrace_operator.handlers import children, common, kvcluster, pipeline, secret_watch
from kvtrace_operator.handlers.common import Options


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    common.configure(options)
    kvcluster.register(registry, options)
    pipeline.register(registry, options)
    children.register(registry, options)
    secret_watch.register(registry, options)


__all__ = ["Options", "register"]
