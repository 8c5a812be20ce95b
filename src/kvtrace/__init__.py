"""kvtrace: a Kubernetes operator for traced key-value clusters."""
