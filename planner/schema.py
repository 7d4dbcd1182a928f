"""Reading user mappings (YAML/JSON) field by field with errors that name the file and key path.

Every loader goes through `Fields`: it knows the allowed keys of one mapping, reports unknown keys
with a "did you mean" suggestion, and checks each value's type and range.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from planner.errors import InputError
from planner.limits import MAX_ITEMS, MAX_STRING_CHARS, out_of_bounds

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
                name = str(key)[:60]
                raise InputError(f"unknown key `{name}`", source=source, key_path=self._at(name),
                                 hint=suggest(name, allowed))

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

    def int(self, key: str, default: Any = _MISSING, *, quantity: str | None = None) -> int:
        """An integer within the bound of `quantity` (default: the key) in planner.limits."""
        return self.check_int(key, self.raw(key, default), quantity=quantity)

    def check_int(self, key: str, value: Any, *, quantity: str | None = None) -> int:
        """`value` (read at `key`) as an integer within its bound."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_short(value)}")
        problem = out_of_bounds(quantity or key, value)
        if problem:
            raise self.error(key, problem)
        return value

    def number(self, key: str, default: Any = _MISSING, *, quantity: str | None = None,
               strictly_positive: bool = True) -> float:
        """A finite real number within the bound of `quantity` (default: the key), > 0 when
        strictly_positive."""
        return self.check_number(key, self.raw(key, default), quantity=quantity,
                                 strictly_positive=strictly_positive)

    def check_number(self, key: str, value: Any, *, quantity: str | None = None,
                     strictly_positive: bool = True) -> float:
        """`value` (read at `key`) as a float within its bound."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {_short(value)}")
        problem = out_of_bounds(quantity or key, value)
        if problem is None and strictly_positive and value <= 0:
            problem = f"expected a number > 0, got {value}"
        if problem:
            raise self.error(key, problem)
        return float(value)

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        """A boolean (true/false)."""
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_short(value)}")
        return value

    def str(self, key: str, default: Any = _MISSING) -> str:
        """A non-empty string."""
        value = self.raw(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {_short(value)}")
        if len(value) > MAX_STRING_CHARS:
            raise self.error(key, f"a string of {len(value)} characters; at most "
                                  f"{MAX_STRING_CHARS} are allowed")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        """One of `choices` (case-insensitive)."""
        value = self.raw(key, default)
        if not isinstance(value, str) or value.lower() not in choices:
            hint = suggest(str(value), list(choices)) if isinstance(value, str) else None
            raise self.error(key, f"expected one of {', '.join(choices)}, got {_short(value)}", hint)
        return value.lower()

    def sub(self, key: str, allowed: list[str], default: Any = _MISSING) -> "Fields":
        """The nested mapping at `key`."""
        return Fields(self.raw(key, default), source=self.source, path=self._at(key), allowed=allowed)

    def list(self, key: str, default: Any = _MISSING) -> list:
        """A list of at most MAX_ITEMS items."""
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_short(value)}")
        if len(value) > MAX_ITEMS:
            raise self.error(key, f"a list of {len(value)} items; at most {MAX_ITEMS} are allowed")
        return value

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        """A list of strings (e.g. source citations)."""
        items = self.list(key, default)
        for i, item in enumerate(items):
            if not isinstance(item, str) or len(item) > MAX_STRING_CHARS:
                raise self.error(f"{key}[{i}]", f"expected a string of at most {MAX_STRING_CHARS} "
                                                f"characters, got {_short(item)}")
        return tuple(items)


def _short(value: Any) -> str:
    """repr of a value, cut to 60 characters (a fuzzed value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
