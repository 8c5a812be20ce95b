"""Kubernetes quantities (``1Gi``, ``500Mi``, ``10G``, ``1e9``, ``250m``), and ``Quantity``, the
typed value a parsed spec holds for each size field."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvtrace_operator.spec.errors import SpecError

# The CRDs' pattern of a size field (storage.size, jaeger.storage.size, storageSize).
STORAGE_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(?:e([0-9]+))?([KMGTPE]i?|k|m)?$")
_UNITS = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": 10**-3,
}


def quantity_value(value: object) -> float | None:
    """The number a Kubernetes quantity stands for (``512Mi`` -> 536870912.0, ``250m`` ->
    0.25; a plain number as it is); None when it is not a quantity."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    number = float(match.group(1)) * (10 ** int(match.group(2) or 0))
    return float(number * _UNITS[match.group(3) or ""])


@dataclass(frozen=True)
class Quantity:
    """A size field of a spec: ``text`` as written (what a PVC repeats), ``bytes`` its size."""

    text: str
    bytes: float

    @classmethod
    def parse(cls, value: object, field: str) -> Quantity:
        """SpecError naming ``field`` unless ``value`` is a storage size (the CRDs' pattern)."""
        size = quantity_value(value) if isinstance(value, str) else None
        if size is None or not STORAGE_PATTERN.match(str(value)):
            raise SpecError(
                field, f"expected a storage quantity such as 1Gi or 500Mi, got {value!r}"
            )
        return cls(str(value), size)

    def __str__(self) -> str:
        return self.text
