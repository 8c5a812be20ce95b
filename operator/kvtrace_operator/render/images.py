"""Default images: one place, shared by the defaults and the docs."""

KVNODE_IMAGE = "ghcr.io/kvtrace/kvnode:0.1.0"
COLLECTOR_IMAGE = "ghcr.io/kvtrace/otelcol-kvtrace:0.161.0"
JAEGER_IMAGE = "jaegertracing/jaeger:1.76.0"
