"""Default images: one place, shared by the defaults, the docs, the Makefile (`make images`,
`make kind-up` read these lines) and the chart (its image is checked against OPERATOR_IMAGE).

Jaeger: the Go module tag v1.76.0 is the release "v1.76.0 / v2.13.0"; Jaeger v2 images are
tagged with the v2 version.
"""

OPERATOR_IMAGE = "ghcr.io/kvtrace/kvtrace-operator:0.1.0"
KVNODE_IMAGE = "ghcr.io/kvtrace/kvnode:0.1.0"
COLLECTOR_IMAGE = "ghcr.io/kvtrace/otelcol-kvtrace:0.161.0"
JAEGER_IMAGE = "jaegertracing/jaeger:2.13.0"
# Language agents of injected pods (render/injection.py): images built in this repository
# (instrumentation/), each copying its agent into an emptyDir from an init container.
PYTHON_AGENT_IMAGE = "ghcr.io/kvtrace/autoinstrumentation-python:0.66b1"
JAVA_AGENT_IMAGE = "ghcr.io/kvtrace/autoinstrumentation-java:2.22.0"
PROMETHEUS_IMAGE = "prom/prometheus:v3.16.0"  # the release of Go module v0.316.0 (the local build)
