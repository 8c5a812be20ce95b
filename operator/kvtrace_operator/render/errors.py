"""The error types of the render layer: a spec the operator cannot render (SpecError), and
one finding of strict validation against the CRD schema (FieldError)."""

from __future__ import annotations

from dataclasses import dataclass


class SpecError(ValueError):
    """A custom resource's spec is wrong in a way the renderer can name precisely.

    ``field`` is the path of the offending field (``spec.sampling.keepErrors``), ``message``
    says what was expected. Handlers turn it into a condition; ``kvtrace render`` prints it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class FieldError:
    """One finding of strict validation (``render.strict``): ``field`` the path, ``message``
    in the API server's words; ``blocking`` marks a type error, after which the API server
    (and so ``render.strict``) does not evaluate the CEL rules."""

    field: str
    message: str
    blocking: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"
