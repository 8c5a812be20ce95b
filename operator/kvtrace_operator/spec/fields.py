"""``Fields``: reads one object of an already-defaulted spec into typed values, so that a value
of the wrong type is a SpecError naming its path and what was expected, never a KeyError or
TypeError deep in a builder."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kvtrace_operator.spec.durations import Duration
from kvtrace_operator.spec.errors import SpecError
from kvtrace_operator.spec.quantities import Quantity


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


class Fields:
    """One object of a spec at ``path`` (``spec.security.tls``). Getters for the fields the
    defaults fill take the value as it is; ``opt_*`` getters return None for an absent (or
    null) field."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, Mapping):
            raise SpecError(path, f"expected an object, got {_kind(value)}")
        self._value: Mapping[str, Any] = value
        self.path = path

    def at(self, name: str) -> str:
        return f"{self.path}.{name}"

    def _present(self, name: str) -> Any:
        value = self._value.get(name)
        if value is None:
            raise SpecError(self.at(name), "expected a value, the field is missing")
        return value

    def _check(self, name: str, value: Any, wanted: type | tuple[type, ...], what: str) -> Any:
        if not isinstance(value, wanted) or (isinstance(value, bool) and wanted is not bool):
            raise SpecError(self.at(name), f"expected {what}, got {_kind(value)} {value!r}")
        return value

    def obj(self, name: str) -> Fields:
        return Fields(self._value.get(name, {}), self.at(name))

    def opt_obj(self, name: str) -> Fields | None:
        value = self._value.get(name)
        return None if value is None else Fields(value, self.at(name))

    def integer(self, name: str) -> int:
        return int(self._check(name, self._present(name), int, "an integer"))

    def number(self, name: str) -> float:
        return float(self._check(name, self._present(name), (int, float), "a number"))

    def boolean(self, name: str) -> bool:
        return bool(self._check(name, self._present(name), bool, "true or false"))

    def opt_boolean(self, name: str) -> bool | None:
        return None if self._value.get(name) is None else self.boolean(name)

    def string(self, name: str) -> str:
        return str(self._check(name, self._present(name), str, "a string"))

    def text(self, name: str) -> str:
        """A string the CRD requires whose absence ``render.validate`` explains in its own
        words (an exporter's ``endpoint``, a Secret reference's ``key``): "" when absent."""
        return "" if self._value.get(name) is None else self.string(name)

    def opt_string(self, name: str) -> str | None:
        return None if self._value.get(name) is None else self.string(name)

    def duration(self, name: str) -> Duration:
        return Duration.parse(self._present(name), self.at(name))

    def quantity(self, name: str) -> Quantity:
        return Quantity.parse(self._present(name), self.at(name))

    def _list(self, name: str) -> list[Any]:
        value = self._value.get(name)
        return [] if value is None else list(self._check(name, value, list, "a list"))

    def strings(self, name: str) -> tuple[str, ...]:
        """A list of strings; () when absent."""
        items = self._list(name)
        for index, item in enumerate(items):
            self._check(f"{name}[{index}]", item, str, "a string")
        return tuple(items)

    def items(self, name: str) -> list[Fields]:
        """The objects of a list field; [] when absent."""
        return [Fields(item, f"{self.at(name)}[{i}]") for i, item in enumerate(self._list(name))]

    def kubernetes(self, name: str) -> Any:
        """A Kubernetes value the operator copies into its objects verbatim (``affinity``,
        ``tolerations``, ``resources``): a deep copy, or None when absent."""
        value = self._value.get(name)
        return None if value is None else copy.deepcopy(value)

    def string_map(self, name: str) -> dict[str, str] | None:
        value = self._value.get(name)
        if value is None:
            return None
        for key, item in self._check(name, value, dict, "an object of strings").items():
            self._check(f"{name}.{key}", item, str, "a string")
        return dict(value)

    def enum(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.string(name)
        if value not in allowed:
            raise SpecError(self.at(name), f"expected one of {', '.join(allowed)}, got {value!r}")
        return value
