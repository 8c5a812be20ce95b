"""The typed spec of each custom resource, below ``render`` in the operator's layers.

``parse_kvcluster`` and ``parse_pipeline`` apply the CRD schemas' defaults once
(``spec.defaults``, which a unit test derives from ``crds/*.yaml``) and read a spec into frozen
dataclasses (``spec.kvcluster``, ``spec.pipeline``); durations and quantities become
``Duration`` and ``Quantity``. A value of the wrong type is a ``SpecError`` naming its path.
The schema check itself (unknown fields, enums, CEL rules) stays in ``render.strict`` and
``render.validate``: what is parsed here has usually passed it.

Imports nothing of the operator but itself, no kopf, no Kubernetes client.
"""

from kvtrace_operator.spec.durations import Duration
from kvtrace_operator.spec.errors import SpecError
from kvtrace_operator.spec.kvcluster import KVClusterSpec, parse_kvcluster
from kvtrace_operator.spec.pipeline import PipelineSpec, parse_pipeline
from kvtrace_operator.spec.quantities import Quantity

# The spec of a resource that owns TLS Secrets and Certificates (render/tls.py).
OwnerSpec = KVClusterSpec | PipelineSpec

__all__ = [
    "Duration",
    "KVClusterSpec",
    "OwnerSpec",
    "PipelineSpec",
    "Quantity",
    "SpecError",
    "parse_kvcluster",
    "parse_pipeline",
]
