"""The names of kvtrace's Kubernetes API (docs/design.md section 1), defined once.

The operator (render, k8s, handlers), the inspection commands and the development harness
all read them here. Constants only: imports nothing.
"""

from __future__ import annotations

GROUP = "kvtrace.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

KVCLUSTER = "KVCluster"
KVCLUSTER_PLURAL = "kvclusters"
PIPELINE = "TracingPipeline"
PIPELINE_PLURAL = "tracingpipelines"
PLURALS = {KVCLUSTER: KVCLUSTER_PLURAL, PIPELINE: PIPELINE_PLURAL}

# Who manages what the operator creates: the app.kubernetes.io/managed-by label's value and
# the server-side apply field manager (also the component of the Events it posts).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kvtrace-operator"
FIELD_MANAGER = MANAGED_BY
