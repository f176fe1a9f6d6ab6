"""`Record`: a frozen dataclass that is one JSON row on the wire, read back with type checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Self

__all__ = ["Record"]


def _int(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"field {name} must be an integer")


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind.startswith("int"):
        return _int(name, value)
    if kind.startswith("str"):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"field {name} must be a string")
        return str(value)
    if kind == "bool":
        return bool(value)
    if not isinstance(value, list):
        raise ValueError(f"field {name} must be a list")
    return tuple(value)


class Record:
    """Base of wire records: `to_wire` gives the row (fields by name), `from_wire` reads one.

    `from_wire` raises ValueError naming a missing or mistyped field; a field with a default
    may be absent. Field types are read from the annotations: int, str, bool, or a list.
    """

    def to_wire(self) -> dict[str, Any]:
        """The row; a field that is None is left out (`expected_available?`, `error_code?`)."""
        row = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {name: value for name, value in row.items() if value is not None}

    @classmethod
    def from_wire(cls, row: Any) -> Self:
        """Read a row; ValueError names a missing or mistyped field."""
        return cls._read(row)

    @classmethod
    def _read(cls, row: Any) -> Self:
        if not isinstance(row, Mapping):
            raise ValueError("row must be an object")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = row.get(field.name)
            if value is None:
                if field.default is dataclasses.MISSING:
                    raise ValueError(f"missing field {field.name}")
                continue
            values[field.name] = _coerce(field.name, str(field.type), value)
        return cls(**values)
