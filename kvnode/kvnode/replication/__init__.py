"""Replication layer: placement, clocks, quorums, hints, repair, anti-entropy, rebalancing."""
