"""The error types of the render layer: a spec the operator cannot render (SpecError, defined
beside the typed spec in ``kvtrace_operator.spec.errors``), and one finding of strict validation
against the CRD schema (FieldError)."""

from __future__ import annotations

from dataclasses import dataclass

from kvtrace_operator.spec.errors import SpecError

__all__ = ["FieldError", "SpecError"]


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
