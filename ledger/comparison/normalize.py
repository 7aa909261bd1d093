"""The compatibility layer: turn each pool's native answer into the canonical form compared.

V1 and V2 shape their results and errors differently. A ``PoolNormalizer`` (one per pool,
configured in the rules file) unwraps the part of the result that carries the answer, renames
keys to the canonical names, and maps the pool's native error types onto the canonical error
taxonomy, so that a V1 ``pool_timeout`` and a V2 ``checkout_timeout`` are both ``timeout``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from ledger.events import OperationError

__all__ = [
    "CANONICAL_ERRORS",
    "STRING_STEPS",
    "ErrorMapping",
    "PoolNormalizer",
    "compile_string_steps",
]

# The V2 pool's own error categories: the default canonical taxonomy.
CANONICAL_ERRORS: tuple[str, ...] = (
    "initialization",
    "connection",
    "communication",
    "timeout",
    "resource",
    "health_check",
    "session",
    "python",
    "system",
)


def _collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


STRING_STEPS: Mapping[str, Callable[[str], str]] = {
    "strip": str.strip,
    "casefold": str.casefold,
    "collapse_whitespace": _collapse_whitespace,
    "nfc": _nfc,
    "nfkc": _nfkc,
}


def compile_string_steps(steps: Sequence[str]) -> Callable[[str], str] | None:
    """One function applying the named normalisation steps in order (None when there are none)."""
    functions = [STRING_STEPS[step] for step in steps]
    if not functions:
        return None
    if len(functions) == 1:
        return functions[0]

    def normalise(text: str) -> str:
        for function in functions:
            text = function(text)
        return text

    return normalise


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """Native error type -> canonical type: exact names first, then globs in file order."""

    exact: Mapping[str, str] = field(default_factory=dict)
    globs: tuple[tuple[re.Pattern[str], str], ...] = ()
    type_field: str = "type"
    category_field: str | None = None
    unmapped: str = "system"
    taxonomy: frozenset[str] = frozenset(CANONICAL_ERRORS)

    def canonical(self, error: OperationError) -> str:
        """The canonical type of one native error.

        An explicit mapping wins; then a category the pool itself attached (V2 errors carry
        one); then a native type that already is a canonical name; else ``unmapped``.
        """
        native = _native_type(error, self.type_field)
        mapped = self.exact.get(native)
        if mapped is not None:
            return mapped
        for pattern, target in self.globs:
            if pattern.fullmatch(native):
                return target
        if self.category_field is not None:
            category = _extra(error, self.category_field)
            if isinstance(category, str) and category in self.taxonomy:
                return category
        lowered = native.lower()
        if lowered in self.taxonomy:
            return lowered
        return self.unmapped


def _extra(error: OperationError, name: str) -> object:
    if name in ("type", "message"):
        return getattr(error, name)
    extra = error.model_extra or {}
    return extra.get(name)


def _native_type(error: OperationError, type_field: str) -> str:
    value = _extra(error, type_field) if type_field != "type" else error.type
    return value if isinstance(value, str) and value else error.type


_MISSING = object()


@dataclass(frozen=True, slots=True)
class PoolNormalizer:
    """How one pool's results and errors become canonical."""

    unwrap: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    errors: ErrorMapping = field(default_factory=ErrorMapping)

    @property
    def changes_results(self) -> bool:
        """Whether ``result`` can change anything (most V2 normalizers cannot)."""
        return bool(self.unwrap or self.rename)

    def result(self, value: JsonValue) -> JsonValue:
        """The canonical result: the unwrapped part, with keys renamed at every depth.

        A result that lacks the unwrap path is compared as it is (so the difference shows).
        """
        for key in self.unwrap:
            if not isinstance(value, dict):
                break
            inner = value.get(key, _MISSING)
            if inner is _MISSING:
                break
            value = inner  # type: ignore[assignment]
        if self.rename:
            value = _rename_keys(value, self.rename)
        return value


def _rename_keys(value: JsonValue, rename: Mapping[str, str]) -> JsonValue:
    """Copy ``value`` with keys renamed, iteratively (a very deep result must not recurse)."""
    if not isinstance(value, dict | list):
        return value
    root: list[JsonValue] = [None]
    # Each task fills slot ``index`` of ``target`` (a list or dict) with a copy of ``source``.
    tasks: list[tuple[JsonValue, list[JsonValue] | dict[str, JsonValue], int | str]] = [
        (value, root, 0)
    ]
    while tasks:
        source, target, slot = tasks.pop()
        if isinstance(source, dict):
            copy: dict[str, JsonValue] = {}
            for key, item in source.items():
                new_key = rename.get(key, key)
                if isinstance(item, dict | list):
                    copy[new_key] = None
                    tasks.append((item, copy, new_key))
                else:
                    copy[new_key] = item
            target[slot] = copy  # type: ignore[index]
        elif isinstance(source, list):
            items: list[JsonValue] = list(source)
            for position, item in enumerate(source):
                if isinstance(item, dict | list):
                    tasks.append((item, items, position))
            target[slot] = items  # type: ignore[index]
    return root[0]
