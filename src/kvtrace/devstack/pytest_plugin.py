"""pytest fixtures for the local stack (cluster, namespaces, tracing backends, pod runner)."""
