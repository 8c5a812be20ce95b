"""Stable checksums of configuration, for pod-template annotations that roll pods."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def checksum(obj: Any) -> str:
    """sha256 (hex) of ``obj`` serialised canonically: key order never matters."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
