"""The kvtrace operator (kopf): KVCluster and TracingPipeline reconciliation.

Layers, bottom to top (kept by import-linter contracts in pyproject.toml):
render (pure) -> k8s (server-side apply, reading children) -> handlers (kopf) -> main.
"""
