"""kvnode: a replicated, durable, traced key-value node (the workload of every KVCluster).

Layers, bottom to top (enforced by import-linter): ``storage`` (commit log + SQLite index, hints)
→ ``replication`` (ring, clocks, quorum, hints, repair, anti-entropy, rebalance)
→ ``transport`` (client HTTP API, binary peer protocol) → ``process`` (config, signals,
tracing setup). ``metrics``, ``telemetry``, ``faults`` and ``keys`` are leaf helpers any
layer may use; ``cli``, ``client`` and ``bench`` sit outside the layers.
"""
