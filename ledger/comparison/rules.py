"""Comparison rules: a TOML file, validated with line numbers, compiled once into fast checks.

The file says, globally (``[compare]``) and per operation (``[operations.NAME]``), which paths
to ignore, which lists are unordered, numeric tolerances, string normalisation and int/float
leniency, and per pool (``[pools.v1]``, ``[pools.v2]``) how results are unwrapped and renamed
and how native errors map onto the canonical taxonomy. ``load_rules`` reads and checks it;
every problem is a ``RulesError`` naming the file, the line and what is wrong.

Compilation builds one path automaton per operation named in the file (plus one for all
others), so comparing a pair never re-reads or re-interprets the rules.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from ledger.comparison.normalize import (
    CANONICAL_ERRORS,
    STRING_STEPS,
    ErrorMapping,
    PoolNormalizer,
    compile_string_steps,
)
from ledger.comparison.paths import Automaton, Defaults, MatchState, PathRule, parse_pattern
from ledger.errors import RulesError
from ledger.events import OperationError

__all__ = [
    "TIMING_FIELDS",
    "CompiledRules",
    "RuleSet",
    "load_rules",
    "parse_rules",
]

# Never compared as results, whatever a rules file says: they measure the run, not the answer.
TIMING_FIELDS: tuple[str, ...] = (
    "duration_ms",
    "elapsed_ms",
    "latency_ms",
    "started_at",
    "finished_at",
    "worker_id",
)

_POOLS = ("v1", "v2")

_COMPARE_KEYS: dict[str, str] = {
    "ignore": "list of path patterns whose differences are ignored",
    "unordered": "list of path patterns of lists compared as multisets",
    "abs_tolerance": "number >= 0: numbers this close are equal",
    "rel_tolerance": "number >= 0: numbers within this fraction of the larger are equal",
    "strings": f"list of string normalisation steps ({', '.join(STRING_STEPS)})",
    "int_float_equal": "boolean: 1 equals 1.0",
    "max_differences": "integer >= 1: differences recorded per comparison",
    "max_value_chars": "integer >= 16: characters kept of a differing value",
    "paths": 'table of path pattern -> options, e.g. [compare.paths."**.score"]',
}
_PATH_KEYS: dict[str, str] = {
    "ignore": "boolean",
    "unordered": "boolean",
    "abs_tolerance": "number >= 0",
    "rel_tolerance": "number >= 0",
    "strings": "list of string normalisation steps",
}
_POOL_KEYS: dict[str, str] = {
    "unwrap": 'dotted key of the result part to compare, e.g. "data"',
    "rename": "table of native key -> canonical key (applied at every depth)",
    "errors": "table of native error type (or glob) -> canonical error type",
    "error_type_field": "the native error's field naming its type (default 'type')",
    "error_category_field": "a native error field that already holds a canonical type",
    "unmapped_error": "canonical type of native errors no mapping names (default 'system')",
}
_TOP_KEYS: dict[str, str] = {
    "version": "string recorded in every comparison",
    "taxonomy": "list of canonical error types",
    "compare": "table of global comparison rules",
    "operations": "table of per-operation comparison rules",
    "pools": "table of per-pool normalizers (v1, v2)",
}


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """The rules for one operation, ready for the differ."""

    root: MatchState
    max_differences: int
    max_value_chars: int


@dataclass(frozen=True, slots=True)
class _Options:
    ignore: tuple[str, ...] = ()
    unordered: tuple[str, ...] = ()
    abs_tolerance: float = 0.0
    rel_tolerance: float = 0.0
    strings: tuple[str, ...] = ()
    int_float_equal: bool = True
    max_differences: int = 50
    max_value_chars: int = 200
    paths: tuple[tuple[str, PathRule], ...] = ()


@dataclass(frozen=True)
class RuleSet:
    """A compiled, immutable rule set. ``version`` is recorded in every comparison."""

    version: str
    digest: str
    source: str
    taxonomy: tuple[str, ...]
    pools: Mapping[str, PoolNormalizer]
    _default: CompiledRules = field(repr=False)
    _operations: Mapping[str, CompiledRules] = field(repr=False)
    _normalizers: tuple[PoolNormalizer, PoolNormalizer] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_normalizers", (self.pools["v1"], self.pools["v2"]))

    @property
    def normalizers(self) -> tuple[PoolNormalizer, PoolNormalizer]:
        """The V1 and V2 normalizers, in that order."""
        return self._normalizers

    def for_operation(self, operation: str) -> CompiledRules:
        """The compiled rules for one operation (the global ones unless the file names it)."""
        return self._operations.get(operation, self._default)

    def normalizer(self, pool: str) -> PoolNormalizer:
        """The normalizer of a pool ("v1" or "v2")."""
        return self.pools[pool]

    def canonical_error(self, pool: str, error: OperationError) -> str:
        """The canonical type of a pool's native error (health windows use it too)."""
        return self.pools[pool].errors.canonical(error)


def load_rules(path: Path | None = None) -> RuleSet:
    """Read and compile a rules file; ``None`` gives the rules packaged with the ledger."""
    if path is None:
        return _packaged_rules()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc}") from exc
    return parse_rules(text, str(path))


@cache
def _packaged_rules() -> RuleSet:
    text = resources.files("ledger.comparison").joinpath("default_rules.toml").read_text("utf-8")
    return parse_rules(text, "default_rules.toml")


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse_rules(text: str, source: str) -> RuleSet:
    """Validate and compile rules from TOML text; ``source`` names it in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        if position is None:
            raise RulesError(f"{source}: invalid TOML: {message}") from exc
        line, column = position.groups()
        problem = message[: position.start()]
        raise RulesError(
            f"{source}, line {line}, column {column}: invalid TOML: {problem}"
        ) from exc
    return _Compiler(text, source).compile(document)


class _Compiler:
    """Checks a parsed document key by key, so each problem can name its line."""

    def __init__(self, text: str, source: str) -> None:
        self.text_lines = text.splitlines()
        self.source = source
        self.key_lines = _key_lines(self.text_lines)
        self.digest = hashlib.sha256(text.encode()).hexdigest()

    # -- reporting ---------------------------------------------------------------------------

    def fail(self, keys: Sequence[str], problem: str, *, element: str | None = None) -> NoReturn:
        line = self.line_of(keys, element)
        where = f", line {line}" if line else ""
        name = _dotted(keys)
        raise RulesError(f"{self.source}{where}: {name + ': ' if name else ''}{problem}")

    def line_of(self, keys: Sequence[str], element: str | None = None) -> int | None:
        for end in range(len(keys), 0, -1):
            line = self.key_lines.get(tuple(keys[:end]))
            if line is not None:
                break
        else:
            return None
        if element is not None:
            literals = (json.dumps(element, ensure_ascii=False), f"'{element}'")
            for number in range(line, len(self.text_lines) + 1):
                if any(literal in self.text_lines[number - 1] for literal in literals):
                    return number
        return line

    # -- typed getters -----------------------------------------------------------------------

    def table(
        self, value: object, keys: Sequence[str], allowed: Mapping[str, str] | None
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(keys, f"expected a table, got {_describe(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    close = difflib.get_close_matches(key, list(allowed), n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    expected = ", ".join(allowed)
                    self.fail([*keys, key], f"unknown key{hint}; expected one of: {expected}")
        return value

    def number(self, table: Mapping[str, Any], key: str, keys: Sequence[str]) -> float | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            self.fail([*keys, key], f"expected a number >= 0, got {_describe(value)}")
        if value == float("inf"):
            self.fail([*keys, key], "expected a finite number")
        return float(value)

    def integer(
        self, table: Mapping[str, Any], key: str, keys: Sequence[str], minimum: int
    ) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail([*keys, key], f"expected an integer >= {minimum}, got {_describe(value)}")
        return value

    def boolean(self, table: Mapping[str, Any], key: str, keys: Sequence[str]) -> bool | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail([*keys, key], f"expected true or false, got {_describe(value)}")
        return value

    def string(self, table: Mapping[str, Any], key: str, keys: Sequence[str]) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail([*keys, key], f"expected a string, got {_describe(value)}")
        return value

    def strings(self, table: Mapping[str, Any], key: str, keys: Sequence[str]) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list):
            self.fail([*keys, key], f"expected a list of strings, got {_describe(value)}")
        for item in value:
            if not isinstance(item, str):
                self.fail([*keys, key], f"expected a list of strings, found {_describe(item)}")
        return tuple(value)

    def patterns(self, table: Mapping[str, Any], key: str, keys: Sequence[str]) -> tuple[str, ...]:
        texts = self.strings(table, key, keys)
        for text in texts:
            self.pattern(text, [*keys, key], element=text)
        return texts

    def pattern(self, text: str, keys: Sequence[str], element: str | None = None) -> None:
        try:
            parse_pattern(text)
        except ValueError as exc:
            self.fail(keys, str(exc), element=element)

    def steps(self, table: Mapping[str, Any], key: str, keys: Sequence[str]) -> tuple[str, ...]:
        steps = self.strings(table, key, keys)
        for step in steps:
            if step not in STRING_STEPS:
                self.fail(
                    [*keys, key],
                    f"unknown string step {step!r}; expected one of: {', '.join(STRING_STEPS)}",
                    element=step,
                )
        return steps

    # -- sections ----------------------------------------------------------------------------

    def compile(self, document: dict[str, Any]) -> RuleSet:
        self.table(document, [], _TOP_KEYS)
        version = self.string(document, "version", [])
        if version is not None and not version.strip():
            self.fail(["version"], "must not be empty")
        taxonomy = self.strings(document, "taxonomy", []) or CANONICAL_ERRORS
        compare = self.table(document.get("compare", {}), ["compare"], _COMPARE_KEYS)
        base = self.options(compare, ["compare"], _Options())
        operations: dict[str, CompiledRules] = {}
        for name, value in self.table(document.get("operations", {}), ["operations"], None).items():
            keys = ["operations", name]
            options = self.options(self.table(value, keys, _COMPARE_KEYS), keys, base)
            operations[name] = _compile(options)
        pools_table = self.table(document.get("pools", {}), ["pools"], dict.fromkeys(_POOLS, ""))
        pools = {
            pool: self.pool(pools_table.get(pool, {}), ["pools", pool], frozenset(taxonomy))
            for pool in _POOLS
        }
        return RuleSet(
            version=version or f"sha-{self.digest[:12]}",
            digest=self.digest,
            source=self.source,
            taxonomy=tuple(taxonomy),
            pools=MappingProxyType(pools),
            _default=_compile(base),
            _operations=MappingProxyType(operations),
        )

    def options(self, table: Mapping[str, Any], keys: Sequence[str], base: _Options) -> _Options:
        paths: list[tuple[str, PathRule]] = list(base.paths)
        for text, value in self.table(table.get("paths", {}), [*keys, "paths"], None).items():
            where = [*keys, "paths", text]
            self.pattern(text, where)
            options = self.table(value, where, _PATH_KEYS)
            steps = self.steps(options, "strings", where) if "strings" in options else None
            paths.append(
                (
                    text,
                    PathRule(
                        ignore=bool(self.boolean(options, "ignore", where)),
                        unordered=bool(self.boolean(options, "unordered", where)),
                        abs_tolerance=self.number(options, "abs_tolerance", where),
                        rel_tolerance=self.number(options, "rel_tolerance", where),
                        strings=_compile_steps_or_identity(steps),
                    ),
                )
            )
        abs_tolerance = self.number(table, "abs_tolerance", keys)
        rel_tolerance = self.number(table, "rel_tolerance", keys)
        int_float_equal = self.boolean(table, "int_float_equal", keys)
        max_differences = self.integer(table, "max_differences", keys, 1)
        max_value_chars = self.integer(table, "max_value_chars", keys, 16)
        return _Options(
            ignore=base.ignore + self.patterns(table, "ignore", keys),
            unordered=base.unordered + self.patterns(table, "unordered", keys),
            abs_tolerance=base.abs_tolerance if abs_tolerance is None else abs_tolerance,
            rel_tolerance=base.rel_tolerance if rel_tolerance is None else rel_tolerance,
            strings=self.steps(table, "strings", keys) if "strings" in table else base.strings,
            int_float_equal=base.int_float_equal if int_float_equal is None else int_float_equal,
            max_differences=base.max_differences if max_differences is None else max_differences,
            max_value_chars=base.max_value_chars if max_value_chars is None else max_value_chars,
            paths=tuple(paths),
        )

    def pool(self, value: object, keys: Sequence[str], taxonomy: frozenset[str]) -> PoolNormalizer:
        table = self.table(value, keys, _POOL_KEYS)
        unwrap_text = self.string(table, "unwrap", keys) or ""
        unwrap: tuple[str, ...] = ()
        if unwrap_text:
            try:
                tokens = parse_pattern(unwrap_text)
            except ValueError as exc:
                self.fail([*keys, "unwrap"], str(exc))
            if not all(isinstance(token, str) and not token.startswith("\x00") for token in tokens):
                self.fail([*keys, "unwrap"], "must name keys only (no wildcards or indices)")
            unwrap = tuple(str(token) for token in tokens)
        rename = self.table(table.get("rename", {}), [*keys, "rename"], None)
        for native, canonical in rename.items():
            if not isinstance(canonical, str) or not canonical:
                self.fail(
                    [*keys, "rename", native], f"expected a key name, got {_describe(canonical)}"
                )
        exact: dict[str, str] = {}
        globs: list[tuple[re.Pattern[str], str]] = []
        errors = self.table(table.get("errors", {}), [*keys, "errors"], None)
        for native, canonical in errors.items():
            if not isinstance(canonical, str) or canonical not in taxonomy:
                self.fail(
                    [*keys, "errors", native],
                    f"{_describe(canonical)} is not a canonical error type; expected one of: "
                    + ", ".join(sorted(taxonomy)),
                )
            if any(char in native for char in "*?["):
                globs.append((re.compile(fnmatch.translate(native)), canonical))
            else:
                exact[native] = canonical
        unmapped = self.string(table, "unmapped_error", keys) or (
            "system" if "system" in taxonomy else sorted(taxonomy)[0]
        )
        if unmapped not in taxonomy:
            self.fail([*keys, "unmapped_error"], f"{unmapped!r} is not a canonical error type")
        return PoolNormalizer(
            unwrap=unwrap,
            rename=MappingProxyType(dict(rename)),
            errors=ErrorMapping(
                exact=MappingProxyType(exact),
                globs=tuple(globs),
                type_field=self.string(table, "error_type_field", keys) or "type",
                category_field=self.string(table, "error_category_field", keys),
                unmapped=unmapped,
                taxonomy=taxonomy,
            ),
        )


def _compile_steps_or_identity(steps: tuple[str, ...] | None) -> Callable[[str], str] | None:
    """None = not set at this path; an empty list explicitly turns normalisation off here."""
    if steps is None:
        return None
    return compile_string_steps(steps) or _identity


def _identity(text: str) -> str:
    return text


def _compile(options: _Options) -> CompiledRules:
    patterns: list[tuple[tuple[Any, ...], PathRule]] = []
    for name in TIMING_FIELDS:
        patterns.append((parse_pattern(f"**.{name}"), PathRule(ignore=True)))
    for text in options.ignore:
        patterns.append((parse_pattern(text), PathRule(ignore=True)))
    for text in options.unordered:
        patterns.append((parse_pattern(text), PathRule(unordered=True)))
    for text, rule in options.paths:
        patterns.append((parse_pattern(text), rule))
    defaults = Defaults(
        abs_tolerance=options.abs_tolerance,
        rel_tolerance=options.rel_tolerance,
        strings=compile_string_steps(options.strings),
        int_float_equal=options.int_float_equal,
    )
    return CompiledRules(
        root=Automaton(patterns, defaults).root,
        max_differences=options.max_differences,
        max_value_chars=options.max_value_chars,
    )


# -- finding the line of a key ---------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')\s*=")


def _read_keys(text: str) -> tuple[list[str], str]:
    """Read a dotted TOML key from the start of ``text``; returns its parts and the rest."""
    keys: list[str] = []
    rest = text.lstrip()
    while True:
        if rest.startswith('"'):
            try:
                key, end = json.JSONDecoder().raw_decode(rest)
            except json.JSONDecodeError:
                return keys, rest
            keys.append(str(key))
            rest = rest[end:]
        elif rest.startswith("'"):
            end = rest.find("'", 1)
            if end < 0:
                return keys, rest
            keys.append(rest[1:end])
            rest = rest[end + 1 :]
        else:
            match = _BARE.match(rest)
            if match is None:
                return keys, rest
            keys.append(match.group())
            rest = rest[match.end() :]
        rest = rest.lstrip()
        if not rest.startswith("."):
            return keys, rest
        rest = rest[1:].lstrip()


def _key_lines(lines: Sequence[str]) -> dict[tuple[str, ...], int]:
    """Map each key path (as tomllib nests it) to the line that defines it.

    tomllib reports positions only for syntax errors; semantic errors (unknown key, wrong type)
    find their line here. A light scan suffices because the text already parsed as TOML.
    """
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    open_string: str | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if open_string is not None:
            if line.count(open_string) % 2 == 1:
                open_string = None
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            keys, _ = _read_keys(line[2:] if line.startswith("[[") else line[1:])
            table = tuple(keys)
            found.setdefault(table, number)
            continue
        keys, rest = _read_keys(line)
        if not keys or not rest.startswith("="):
            continue
        full = table + tuple(keys)
        for end in range(len(table) + 1, len(full) + 1):
            found.setdefault(full[:end], number)
        value = rest[1:]
        for match in _INLINE_KEY.finditer(value):
            inner, _ = _read_keys(match.group(1))
            found.setdefault(full + tuple(inner), number)
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                open_string = quote
    return found


def _dotted(keys: Sequence[str]) -> str:
    return ".".join(key if _BARE.fullmatch(key) else json.dumps(key) for key in keys)


def _describe(value: object) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    text = repr(value) if not isinstance(value, dict | list) else ""
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}".strip()
