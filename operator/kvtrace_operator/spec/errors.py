"""The error of a spec that cannot be read or rendered: ``SpecError`` names the field path.

Imports nothing of the operator (the bottom of its layers)."""

from __future__ import annotations


class SpecError(ValueError):
    """A custom resource's spec is wrong in a way the operator can name precisely.

    ``field`` is the path of the offending field (``spec.sampling.keepErrors``), ``message``
    says what was expected. Handlers turn it into a condition; ``kvtrace render`` prints it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
