"""Reading user mappings (YAML/JSON) field by field with errors that name the file and key path.

Every loader goes through `Fields`: it knows the allowed keys of one mapping, reports unknown keys
with a "did you mean" suggestion, and checks each value's type and range.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from planner.errors import InputError

_MISSING = object()


def suggest(key: str, allowed: list[str]) -> str | None:
    """The closest allowed key to `key`, for a "did you mean" hint, or None."""
    match = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else f"allowed keys: {', '.join(sorted(allowed))}"


class Fields:
    """Typed access to one mapping of a user file, at key path `path` in file `source`."""

    def __init__(self, data: Any, *, source: str, path: str, allowed: list[str]):
        if not isinstance(data, Mapping):
            raise InputError(f"expected a mapping, got {type(data).__name__}", source=source,
                             key_path=path or "(top level)")
        self.data, self.source, self.path, self.allowed = data, source, path, allowed
        for key in data:
            if key not in allowed:
                raise InputError(f"unknown key `{key}`", source=source, key_path=self._at(str(key)),
                                 hint=suggest(str(key), allowed))

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str, hint: str | None = None) -> InputError:
        """An InputError located at `key` of this mapping."""
        return InputError(message, source=self.source, key_path=self._at(key), hint=hint)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value at `key`, or `default`; missing without a default is an error."""
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "missing required key")
        return default

    def int(self, key: str, default: Any = _MISSING, *, minimum: int = 1) -> int:
        """An integer >= minimum."""
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, minimum: float = 0.0,
               maximum: float | None = None, strictly_positive: bool = True) -> float:
        """A real number in range (> minimum when strictly_positive, else >= minimum)."""
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {value!r}")
        low_ok = value > minimum if strictly_positive else value >= minimum
        if not low_ok or (maximum is not None and value > maximum):
            bound = f"> {minimum}" if strictly_positive else f">= {minimum}"
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise self.error(key, f"expected a number {bound}{upper}, got {value}")
        return float(value)

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        """A boolean (true/false)."""
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def str(self, key: str, default: Any = _MISSING) -> str:
        """A non-empty string."""
        value = self.raw(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        """One of `choices` (case-insensitive)."""
        value = self.raw(key, default)
        if not isinstance(value, str) or value.lower() not in choices:
            hint = suggest(str(value), list(choices)) if isinstance(value, str) else None
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}", hint)
        return value.lower()

    def sub(self, key: str, allowed: list[str], default: Any = _MISSING) -> "Fields":
        """The nested mapping at `key`."""
        return Fields(self.raw(key, default), source=self.source, path=self._at(key), allowed=allowed)
