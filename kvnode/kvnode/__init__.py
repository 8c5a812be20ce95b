"""kvnode: a replicated, durable, traced key-value node (the workload of every KVCluster).

Layers, bottom to top (enforced by import-linter): ``storage`` (commit log + SQLite index, hints)
→ ``replication`` (ring, clocks, quorum, hints, repair, anti-entropy, rebalance)
→ ``transport`` (client HTTP API, binary peer protocol) → ``process`` (config, signals,
tracing setup). ``metrics``, ``telemetry``, ``faults``, ``keys`` and ``running`` are leaf
helpers any layer may use; ``cli``, ``client`` and ``bench`` sit outside the layers.

The hot path's modules are compiled by mypyc at install time; ``KVNODE_PURE_PYTHON=1`` runs
their pure-Python sources instead (``kvnode.implementation``, selected here, before any other
kvnode module loads).
"""

from kvnode import implementation

implementation.select()
