"""Compatibility analysis of the two pools' answers: what a client of V1 would notice on V2.

Pure: it takes the pairs of answers (already read from the ledger) and the comparison rules,
and returns per operation the paths only one pool answers with, the paths whose JSON type
changed, the mismatch rate per path (from the recorded comparisons), the error types each pool
raised and whether the rules map them, the breaking changes, and a draft rules file for the
differences that look like translation (a renamed key, a wrapper object, an error name).

Answers are compared *after* the current rules' normalizers (unwrap, rename): what is left is
what the compatibility layer does not translate yet. List indices fold to ``[]``, so
``items[3].sku`` and ``items[0].sku`` are one path, ``items[].sku``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ledger.comparison.normalize import ErrorMapping
from ledger.comparison.rules import RuleSet

__all__ = [
    "Answer",
    "Breaking",
    "Compatibility",
    "DifferenceSeen",
    "ErrorSeen",
    "PathMismatch",
    "PathShape",
    "analyse",
    "draft_rules",
    "fold",
    "shape",
]

_POOLS = ("v1", "v2")


@dataclass(frozen=True)
class Answer:
    """One pool's answer to one operation: its result or its native error."""

    correlation_id: str
    operation: str
    pool: str
    result: Any = None
    #: The native error object ({type, message, ...}) when the operation failed.
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DifferenceSeen:
    """A recorded comparison of one pair: its category and the paths its differences name."""

    correlation_id: str
    operation: str
    category: str
    #: (path as recorded, kind) per recorded difference.
    differences: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PathShape:
    """A path in one operation's answers: how often each pool has it, and with which types."""

    operation: str
    path: str
    status: str  # only_v1 | only_v2 | type_change | same
    v1_share: float
    v2_share: float
    v1_types: tuple[str, ...]
    v2_types: tuple[str, ...]
    example_correlation_id: str | None


@dataclass(frozen=True)
class PathMismatch:
    """Comparisons of one operation with a difference at one (folded) path."""

    operation: str
    path: str
    kinds: tuple[str, ...]
    mismatches: int
    comparisons: int
    rate: float
    example_correlation_id: str
    #: Share of the comparisons where V2 lacks the path or holds another type there.
    shape_rate: float = 0.0


@dataclass(frozen=True)
class ErrorSeen:
    """One native error type of one pool in one operation, and what the rules make of it."""

    operation: str
    pool: str
    native_type: str
    count: int
    canonical: str
    mapped: bool


@dataclass(frozen=True)
class Breaking:
    """A shape or type change on a path present in at least ``breaking_share`` of answers."""

    operation: str
    path: str
    change: str  # removed | type
    share: float
    detail: str
    translation: str  # what the draft rules propose, or ""


@dataclass(frozen=True)
class Compatibility:
    """The whole analysis; ``draft`` is a rules file (TOML) ``parse_rules`` accepts."""

    operations: Mapping[str, tuple[int, int]]  # operation -> (v1 answers, v2 answers)
    paths: tuple[PathShape, ...]
    mismatches: tuple[PathMismatch, ...]
    errors: tuple[ErrorSeen, ...]
    breaking: tuple[Breaking, ...]
    renames: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    unwraps: Mapping[str, str] = field(default_factory=dict)
    error_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    unmapped: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    draft: str = ""


def _type(value: Any) -> str:
    # JSON's types; integers and floats are both "number" (the rules compare 1 and 1.0 equal).
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# The differ's path syntax (ledger.comparison.paths): bare keys dotted, others quoted.
_BARE_KEY = re.compile(r"[A-Za-z0-9_\-$@:/]+")


def _key(parent: str, key: str) -> str:
    if _BARE_KEY.fullmatch(key) is None:
        return f"{parent}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{parent}.{key}" if parent else key


def shape(value: Any) -> dict[str, set[str]]:
    """Every path of ``value`` (list indices folded to ``[]``) -> the JSON types found there.

    The root itself is left out. Iterative: a deep answer must not exhaust the stack.
    """
    out: dict[str, set[str]] = {}
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if path:
            out.setdefault(path, set()).add(_type(node))
        if isinstance(node, dict):
            stack.extend((_key(path, str(k)), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}[]", item) for item in node)
    return out


_INDEX_OR_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\[\d+\]')


def fold(path: str) -> str:
    """A recorded difference path with list indices folded (``items[3].sku`` -> ``items[].sku``).

    Quoted keys (``["x[1]"]``) are kept as they are.
    """
    text = _INDEX_OR_QUOTED.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else "[]", path)
    return text[2:] if text.startswith("$.") else text


def _mapped(mapping: ErrorMapping, native: str) -> bool:
    """Whether a rule names ``native`` (exactly, by glob, or it already is a canonical name)."""
    if native in mapping.exact or native.lower() in mapping.taxonomy:
        return True
    return any(pattern.fullmatch(native) for pattern, _ in mapping.globs)


def _native(mapping: ErrorMapping, error: Mapping[str, Any]) -> str:
    value = error.get(mapping.type_field)
    if isinstance(value, str) and value:
        return value
    return str(error.get("type") or "unknown")


def _canonical(mapping: ErrorMapping, native: str, error: Mapping[str, Any]) -> str:
    if native in mapping.exact:
        return mapping.exact[native]
    for pattern, target in mapping.globs:
        if pattern.fullmatch(native):
            return target
    if mapping.category_field is not None:
        category = error.get(mapping.category_field)
        if isinstance(category, str) and category in mapping.taxonomy:
            return category
    if native.lower() in mapping.taxonomy:
        return native.lower()
    return mapping.unmapped


def _parent(path: str) -> tuple[str, str]:
    """(parent path, last key) of a path whose last segment is a key (not ``[]``)."""
    cut = path.rfind(".")
    return (path[:cut], path[cut + 1 :]) if cut >= 0 else ("", path)


@dataclass
class _Tally:
    answers: Counter[str] = field(default_factory=Counter)  # pool -> answers
    present: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    types: dict[str, dict[str, Counter[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    example: dict[str, str] = field(default_factory=dict)  # path -> first correlation id
    top: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


def analyse(
    pairs: Iterable[tuple[Answer, Answer]],
    differences: Iterable[DifferenceSeen],
    rules: RuleSet,
    *,
    breaking_share: float = 0.05,
) -> Compatibility:
    """Analyse V1/V2 answer pairs (V1 first) and the recorded comparisons of those pairs."""
    if not 0.0 < breaking_share <= 1.0:
        raise ValueError(f"breaking_share must be in (0, 1], not {breaking_share}")
    tallies: dict[str, _Tally] = defaultdict(_Tally)
    errors: Counter[tuple[str, str, str]] = Counter()
    canonical_of: dict[tuple[str, str], tuple[str, bool]] = {}
    error_pairs: Counter[tuple[str, str]] = Counter()  # (v1 native, v2 native) on one pair
    for v1, v2 in pairs:
        natives: dict[str, str] = {}
        for answer in (v1, v2):
            tally = tallies[answer.operation]
            normalizer = rules.normalizer(answer.pool)
            if answer.error is not None:
                native = _native(normalizer.errors, answer.error)
                natives[answer.pool] = native
                errors[(answer.operation, answer.pool, native)] += 1
                canonical_of.setdefault(
                    (answer.pool, native),
                    (
                        _canonical(normalizer.errors, native, answer.error),
                        _mapped(normalizer.errors, native),
                    ),
                )
                continue
            tally.answers[answer.pool] += 1
            if isinstance(answer.result, dict):
                tally.top[answer.pool].append(answer.result)
            result = normalizer.result(answer.result)
            for path, types in shape(result).items():
                tally.present[answer.pool][path] += 1
                for type_ in types:
                    tally.types[answer.pool][path][type_] += 1
                tally.example.setdefault(path, answer.correlation_id)
        if len(natives) == 2:
            error_pairs[(natives["v1"], natives["v2"])] += 1

    paths: list[PathShape] = []
    breaking: list[Breaking] = []
    renames: dict[str, dict[str, str]] = {}
    unwraps: dict[str, str] = {}
    for operation in sorted(tallies):
        tally = tallies[operation]
        n1, n2 = tally.answers["v1"], tally.answers["v2"]
        if n1 == 0 or n2 == 0:
            continue
        rows: dict[str, PathShape] = {}
        for path in sorted(set(tally.present["v1"]) | set(tally.present["v2"])):
            t1 = tuple(sorted(tally.types["v1"][path]))
            t2 = tuple(sorted(tally.types["v2"][path]))
            if not t2:
                status = "only_v1"
            elif not t1:
                status = "only_v2"
            elif t1 != t2:
                status = "type_change"
            else:
                status = "same"
            rows[path] = PathShape(
                operation,
                path,
                status,
                round(tally.present["v1"][path] / n1, 4),
                round(tally.present["v2"][path] / n2, 4),
                t1,
                t2,
                tally.example.get(path),
            )
        # A change under a path that itself changed is that change: report the shallowest.
        changed = {p for p, r in rows.items() if r.status != "same"}
        top_level = {
            p: r for p, r in rows.items() if r.status != "same" and not _under_changed(p, changed)
        }
        paths += top_level.values()
        op_renames = _renames(top_level)
        for old, new in op_renames.items():
            renames.setdefault("v1", {})[_parent(old)[1]] = _parent(new)[1]
        wrapper = _unwrap(tally)
        if wrapper is not None:
            unwraps[wrapper[0]] = wrapper[1]
        for path, row in top_level.items():
            translation = ""
            if path in op_renames:
                translation = f"rename {_parent(path)[1]} -> {_parent(op_renames[path])[1]}"
            if wrapper is not None and row.status in ("only_v1", "only_v2"):
                translation = translation or f"unwrap {wrapper[1]} ({wrapper[0]})"
            if row.status == "only_v1" and row.v1_share >= breaking_share:
                breaking.append(
                    Breaking(
                        operation,
                        path,
                        "removed",
                        row.v1_share,
                        f"in {row.v1_share:.1%} of V1 answers, in no V2 answer",
                        translation,
                    )
                )
            elif row.status == "type_change":
                share = _changed_share(tally, path, n2)
                if share >= breaking_share:
                    breaking.append(
                        Breaking(
                            operation,
                            path,
                            "type",
                            share,
                            f"V1 {'/'.join(row.v1_types)}, V2 {'/'.join(row.v2_types)}",
                            translation,
                        )
                    )

    mismatches = _mismatches(differences)
    # Pair by pair: a path V2 lacks (or retypes) on enough compared pairs is breaking too,
    # even when some V2 answers have it (the shape table above lists only paths a pool never
    # has).
    listed = {(b.operation, b.path) for b in breaking}
    for m in mismatches:
        if m.shape_rate >= breaking_share and (m.operation, m.path) not in listed:
            what = "type" if "type" in m.kinds and "missing" not in m.kinds else "removed"
            breaking.append(
                Breaking(
                    m.operation,
                    m.path,
                    what,
                    m.shape_rate,
                    f"missing or retyped in V2 on {m.shape_rate:.1%} of compared pairs",
                    "",
                )
            )
    error_rows = [
        ErrorSeen(op, pool, native, count, *canonical_of[(pool, native)])
        for (op, pool, native), count in sorted(errors.items())
    ]
    error_maps, unmapped = _error_translations(error_pairs, canonical_of)
    analysis = Compatibility(
        operations={op: (t.answers["v1"], t.answers["v2"]) for op, t in sorted(tallies.items())},
        paths=tuple(paths),
        mismatches=mismatches,
        errors=tuple(error_rows),
        breaking=tuple(breaking),
        renames=renames,
        unwraps=unwraps,
        error_maps=error_maps,
        unmapped=unmapped,
    )
    return replace(analysis, draft=draft_rules(analysis, rules.version))


def _under_changed(path: str, changed: set[str]) -> bool:
    return any(path[cut] in ".[" and path[:cut] in changed for cut in range(len(path) - 1, 0, -1))


def _changed_share(tally: _Tally, path: str, n2: int) -> float:
    """Share of V2 answers holding ``path`` with a type V1 never has there."""
    v1_types = set(tally.types["v1"][path])
    odd = sum(n for type_, n in tally.types["v2"][path].items() if type_ not in v1_types)
    return round(min(odd, n2) / n2, 4)


def _renames(rows: Mapping[str, PathShape]) -> dict[str, str]:
    """V1-only path -> V2-only path under the same parent with the same types (one to one).

    Several candidates under one parent pair by name similarity (difflib), best first.
    """
    only_v1 = [r for r in rows.values() if r.status == "only_v1" and not r.path.endswith("]")]
    only_v2 = [r for r in rows.values() if r.status == "only_v2" and not r.path.endswith("]")]
    candidates = []
    for a in only_v1:
        for b in only_v2:
            (pa, ka), (pb, kb) = _parent(a.path), _parent(b.path)
            if pa == pb and a.v1_types == b.v2_types:
                similarity = difflib.SequenceMatcher(None, ka, kb).ratio()
                candidates.append((-abs(a.v1_share - b.v2_share), similarity, a.path, b.path))
    out: dict[str, str] = {}
    used: set[str] = set()
    for _, _, old, new in sorted(candidates, reverse=True):
        if old not in out and new not in used:
            out[old] = new
            used.add(new)
    return out


def _unwrap(tally: _Tally) -> tuple[str, str] | None:
    """(pool, key) when every answer of one pool wraps the other pool's object in ``key``."""
    for pool, other in (("v1", "v2"), ("v2", "v1")):
        answers, others = tally.top[pool], tally.top[other]
        if not answers or not others or len(answers) != tally.answers[pool]:
            continue
        common = set.intersection(*(set(a) for a in answers))
        other_keys = set().union(*(set(a) for a in others))
        for key in sorted(common - other_keys):
            inner = [a[key] for a in answers]
            if all(isinstance(x, dict) for x in inner):
                inner_keys = set().union(*(set(x) for x in inner))
                if other_keys and len(inner_keys & other_keys) * 2 >= len(other_keys):
                    return pool, key
    return None


def _mismatches(differences: Iterable[DifferenceSeen]) -> tuple[PathMismatch, ...]:
    compared: Counter[str] = Counter()
    hits: dict[tuple[str, str], set[str]] = defaultdict(set)
    shape_hits: dict[tuple[str, str], set[str]] = defaultdict(set)
    kinds: dict[tuple[str, str], set[str]] = defaultdict(set)
    example: dict[tuple[str, str], str] = {}
    for seen in differences:
        if seen.category in ("shadow_missing", "primary_missing"):
            continue
        compared[seen.operation] += 1
        for path, kind in seen.differences:
            key = (seen.operation, fold(path))
            hits[key].add(seen.correlation_id)
            if kind in ("missing", "type"):
                shape_hits[key].add(seen.correlation_id)
            kinds[key].add(kind)
            example.setdefault(key, seen.correlation_id)
    rows = [
        PathMismatch(
            op,
            path,
            tuple(sorted(kinds[(op, path)])),
            len(ids),
            compared[op],
            round(len(ids) / compared[op], 4),
            example[(op, path)],
            round(len(shape_hits[(op, path)]) / compared[op], 4),
        )
        for (op, path), ids in hits.items()
    ]
    return tuple(sorted(rows, key=lambda r: (r.operation, -r.mismatches, r.path)))


def _error_translations(
    error_pairs: Counter[tuple[str, str]], canonical_of: Mapping[tuple[str, str], tuple[str, bool]]
) -> tuple[dict[str, dict[str, str]], dict[str, tuple[str, ...]]]:
    """Unmapped native errors the other pool's mapped error on the same pair names.

    When V1 failed with ``a`` (unmapped) where V2 failed with ``b`` (mapped to ``c``), the
    draft maps ``a`` to ``c`` (the most frequent partner wins); and the other way round.
    """
    maps: dict[str, dict[str, str]] = {}
    votes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for (a, b), n in error_pairs.items():
        for pool, native, other_pool, other in (("v1", a, "v2", b), ("v2", b, "v1", a)):
            _, mapped = canonical_of[(pool, native)]
            other_canonical, other_mapped = canonical_of[(other_pool, other)]
            if not mapped and other_mapped:
                votes[(pool, native)][other_canonical] += n
    for (pool, native), counter in sorted(votes.items()):
        best = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[0][0]
        maps.setdefault(pool, {})[native] = best
    unmapped: dict[str, list[str]] = defaultdict(list)
    for (pool, native), (_, mapped) in sorted(canonical_of.items()):
        if not mapped and native not in maps.get(pool, {}):
            unmapped[pool].append(native)
    return maps, {pool: tuple(names) for pool, names in unmapped.items()}


def _toml_key(key: str) -> str:
    return json.dumps(key)


def draft_rules(analysis: Compatibility, base_version: str) -> str:
    """A rules file with the translations the analysis proposes (review it before use).

    Merge its ``[pools.*]`` tables into the rules in use; unmapped errors with no evidence
    are listed as comments.
    """
    lines = [
        "# Draft comparison rules proposed by `migration-ledger report compatibility`.",
        f"# Derived under rules {base_version!r}: merge these tables into that file after review.",
        f'version = "{base_version}+draft"',
    ]
    for pool in _POOLS:
        unwrap = analysis.unwraps.get(pool)
        renames = analysis.renames.get(pool, {})
        maps = analysis.error_maps.get(pool, {})
        unmapped = analysis.unmapped.get(pool, ())
        if not (unwrap or renames or maps or unmapped):
            continue
        lines += ["", f"[pools.{pool}]"]
        if unwrap:
            lines.append(f"unwrap = {_toml_key(unwrap)}  # every answer wraps the other pool's")
        if renames:
            lines += ["", f"[pools.{pool}.rename]"]
            lines += [
                f"{_toml_key(old)} = {_toml_key(new)}" for old, new in sorted(renames.items())
            ]
        if maps or unmapped:
            lines += ["", f"[pools.{pool}.errors]"]
            lines += [f"{_toml_key(a)} = {_toml_key(c)}" for a, c in sorted(maps.items())]
            lines += [f'# {_toml_key(a)} = "?"  # seen, mapped by no rule' for a in unmapped]
    return "\n".join(lines) + "\n"
