"""Reading one input document (YAML or JSON) with limits, so that no file can hang or crash fmplan.

Before parsing: the path must be a regular file (a directory, FIFO, socket or `/dev/zero` is
refused without opening it: opening a FIFO blocks), at most `MAX_DOCUMENT_BYTES`, UTF-8 text
without NUL bytes. While parsing YAML: at most `MAX_DEPTH` levels of nesting, and at most
`MAX_NODES` values once aliases are expanded (a "billion laughs" document is 9 aliases per level
over 9 levels: tiny on disk, 10^9 values in memory), no recursive aliases. JSON gets the same
depth and size checks after parsing (Python's parser is iterative in C up to its recursion limit).
The limits and their reasons live in planner/limits.py.
"""
from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

try:
    from yaml.cyaml import CParser
except ImportError:  # PyYAML built without libyaml
    CParser = None

from planner.errors import InputError
from planner.limits import MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES

DEFAULT_MISSING_HINT = "give a path to a YAML file or a preset name (`fmplan presets`)"


class _LimitExceeded(Exception):
    """A document limit broken while parsing (turned into an InputError with the file name)."""


def read_mapping(path: Path, *, what: str = "file", missing_hint: str = DEFAULT_MISSING_HINT) -> Any:
    """Parse a YAML or JSON file (JSON when its suffix is .json) within the document limits;
    every problem (missing, not a regular file, too large, binary, syntax, too deep, too many
    aliased values) is an InputError naming the file."""
    source = str(path)
    text = read_text(Path(path), what=what, missing_hint=missing_hint)
    try:
        if Path(path).suffix == ".json":
            data = json.loads(text)
            _check_tree(data)
            return data
        return _load_yaml(text)
    except _LimitExceeded as exc:
        raise InputError(str(exc), source=source) from None
    except RecursionError:
        raise InputError(f"nested more than {MAX_DEPTH} levels deep", source=source) from None
    except (yaml.YAMLError, ValueError) as exc:
        # ValueError: json's own errors, and integers longer than Python's 4300-digit limit.
        raise InputError(f"cannot parse: {_first_line(exc)}", source=source) from None


def read_text(path: Path, *, what: str = "file", missing_hint: str = DEFAULT_MISSING_HINT) -> str:
    """The UTF-8 text of a regular file of at most MAX_DOCUMENT_BYTES, checked before reading."""
    source = str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} not found", source=source, hint=missing_hint) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", source=source) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"expected a {what}, got a directory", source=source,
                         hint="give the path of a file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"expected a regular {what}, got a FIFO, socket or device", source=source)
    if info.st_size > MAX_DOCUMENT_BYTES:
        raise _too_large(source)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", source=source) from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise _too_large(source)
    nul = raw.find(b"\0")
    if nul >= 0:
        raise InputError(f"a binary file (NUL byte at offset {nul}), not a text {what}",
                         source=source)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (invalid byte at offset {exc.start})", source=source,
                         hint="save the file as UTF-8") from None


def _too_large(source: str) -> InputError:
    return InputError(f"larger than {MAX_DOCUMENT_BYTES // 2 ** 20} MiB: not an fmplan input "
                      "(the largest real ones, full profiles, are < 1 MB)", source=source)


class _BoundedComposer(Composer):
    """PyYAML's composer (events -> nodes) with a nesting-depth limit and a limit on expanded
    values; the events come from libyaml's C parser when it is installed (6x faster)."""

    def __init__(self):
        Composer.__init__(self)
        self._depth = 0
        self._values = 0
        """Values composed so far, each alias counted as the values it stands for."""
        self._sizes: dict[int, int] = {}
        """id(node) -> values below it with aliases expanded, for every finished node."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:
                raise _LimitExceeded(f"line {line}: alias *{event.anchor} refers to a value that "
                                     "contains it (a recursive document)")
            self._count(self._sizes.get(id(target), 1), line)
            return super().compose_node(parent, index)
        self._count(1, line)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _LimitExceeded(f"line {line}: nested more than {MAX_DEPTH} levels deep")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in _children(node))
        return node

    def _count(self, values: int, line: int) -> None:
        self._values += values
        if self._values > MAX_NODES:
            raise _LimitExceeded(f"line {line}: more than {MAX_NODES:,} values once aliases are "
                                 "expanded")


if CParser is not None:
    class _BoundedLoader(_BoundedComposer, CParser, SafeConstructor, Resolver):
        """libyaml's parser, the bounded composer, PyYAML's safe constructor."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            _BoundedComposer.__init__(self)
else:
    class _BoundedLoader(_BoundedComposer, yaml.SafeLoader):
        """PyYAML's pure-Python safe loader with the bounded composer."""

        def __init__(self, stream: str):
            yaml.SafeLoader.__init__(self, stream)
            _BoundedComposer.__init__(self)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _load_yaml(text: str) -> Any:
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check_tree(data: Any) -> None:
    """Depth and value count of a parsed JSON document, without recursion."""
    stack, count = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise _LimitExceeded(f"nested more than {MAX_DEPTH} levels deep")
        if count > MAX_NODES:
            raise _LimitExceeded(f"more than {MAX_NODES:,} values")
        children = value.values() if isinstance(value, dict) else value if isinstance(
            value, list) else ()
        stack.extend((child, depth + 1) for child in children)


def _first_line(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]
