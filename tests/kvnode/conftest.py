"""Fixtures for the KV node tests; the harness itself is in kvharness.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kvharness import Harness
from tracing_receiver import receiver as receiver  # the OTLP receiver fixture, re-exported


@pytest.fixture
def kv_cluster(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Factory: `kv_cluster(3, KVNODE_ANTI_ENTROPY_INTERVAL="1s")` starts 3 nodes
    (`own_peers_files=True`: each node reads its own peers file, see Harness.write_peers)."""
    made: list[Harness] = []

    def make(count: int = 3, own_peers_files: bool = False, **env: str) -> Harness:
        defaults = {
            "KVNODE_PEER_TIMEOUT": "5s",
            "KVNODE_ANTI_ENTROPY_INTERVAL": "0",
            "KVNODE_HINT_INTERVAL": "200ms",
            "KVNODE_PEERS_FILE_INTERVAL": "200ms",
            "KVNODE_SHUTDOWN_TIMEOUT": "5s",
        }
        harness = Harness(tmp_path / f"cluster{len(made)}", {**defaults, **env}, own_peers_files)
        harness.root.mkdir()
        made.append(harness)
        harness.start(count)
        return harness

    yield make
    for harness in made:
        harness.stop()
