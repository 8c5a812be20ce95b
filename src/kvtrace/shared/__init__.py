"""What the product (operator, node, inspection commands, canary, query proxy) and the
development harness (:mod:`kvtrace.devstack`) both use: the API's names (:mod:`.api`), the
endpoint map (:mod:`.endpoints`) and the Jaeger query client (:mod:`.jaeger_client`).

Stdlib only. Never imports :mod:`kvtrace.devstack`, the operator, kopf or a Kubernetes
client (import-linter holds this), so every image can ship it.
"""
