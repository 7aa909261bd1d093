"""The structural differ: walk two canonical results under compiled rules, collect differences.

The walk is iterative (an explicit stack), so a very deep result cannot exhaust Python's
recursion limit, and it records at most ``max_differences`` differences while still counting
all of them and collecting the folded paths that make the fingerprint. Equal scalars of the
same type are skipped inline without a push; that is where nearly all the time goes.

Difference kinds, after Diffy's: ``type`` (different JSON types), ``value`` (same type, other
value), ``null`` (null on one side only), ``missing`` (key or item only in V1), ``extra`` (only
in V2), ``size`` (lists of different lengths), ``ordering`` (the same items in another order).
"""

from __future__ import annotations

import math
from collections import Counter
from enum import StrEnum
from typing import Any, TypeAlias

from pydantic import JsonValue

from ledger.comparison.paths import MatchState, PathLink, fold_path, format_path

__all__ = [
    "SHAPE_KINDS",
    "DifferenceKind",
    "DifferenceSink",
    "diff_results",
    "preview",
]


class DifferenceKind(StrEnum):
    TYPE = "type"
    VALUE = "value"
    NULL = "null"
    MISSING = "missing"
    EXTRA = "extra"
    SIZE = "size"
    ORDERING = "ordering"


# Kinds that change the shape of a result (shape_mismatch); the rest are value_mismatch.
SHAPE_KINDS = frozenset(
    {DifferenceKind.TYPE, DifferenceKind.MISSING, DifferenceKind.EXTRA, DifferenceKind.SIZE}
)

# Distinct (folded path, kind) pairs kept for the fingerprint: enough for any real schema,
# bounded for a pathological one.
_FINGERPRINT_KEYS = 1000
# Lists nested deeper than this are compared positionally without the re-ordering check (the
# check walks each list on its own stack, so its depth must stay small).
_ORDERING_NESTING = 16
# A value deeper than this is not frozen for multiset matching; the list falls back to order.
_FREEZE_DEPTH = 200

_MISSING: Any = object()
_Task: TypeAlias = tuple[Any, Any, MatchState, PathLink]


class DifferenceSink:
    """Differences found so far: the first few in full, all of them counted and fingerprinted."""

    __slots__ = ("count", "keys", "limit", "recorded", "shape")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.shape = False
        self.recorded: list[tuple[PathLink, DifferenceKind, Any, Any]] = []
        self.keys: set[tuple[str, str]] = set()

    def add(self, path: PathLink, kind: DifferenceKind, v1: Any, v2: Any) -> None:
        self.count += 1
        if kind in SHAPE_KINDS:
            self.shape = True
        if len(self.keys) < _FINGERPRINT_KEYS:
            self.keys.add((fold_path(path), kind.value))
        if len(self.recorded) < self.limit:
            self.recorded.append((path, kind, v1, v2))

    def merge(self, other: DifferenceSink) -> None:
        self.count += other.count
        self.shape = self.shape or other.shape
        for key in other.keys:
            if len(self.keys) >= _FINGERPRINT_KEYS:
                break
            self.keys.add(key)
        room = self.limit - len(self.recorded)
        if room > 0:
            self.recorded.extend(other.recorded[:room])

    @property
    def truncated(self) -> bool:
        return self.count > len(self.recorded)

    def rendered(self, max_chars: int) -> list[tuple[str, str, JsonValue, JsonValue]]:
        """The recorded differences with readable paths and bounded values."""
        return [
            (format_path(path), kind.value, preview(v1, max_chars), preview(v2, max_chars))
            for path, kind, v1, v2 in self.recorded
        ]


def diff_results(a: Any, b: Any, root: MatchState, sink: DifferenceSink) -> None:
    """Compare two canonical results from the root state, adding differences to ``sink``."""
    if root.ignored:
        return
    if type(a) is type(b) and type(a) is not dict and type(a) is not list and a == b:
        return
    _walk([(a, b, root, None)], sink, 0)


def _walk(stack: list[_Task], sink: DifferenceSink, nesting: int) -> None:
    pop = stack.pop
    add = sink.add
    while stack:
        a, b, state, path = pop()
        type_a = type(a)
        type_b = type(b)
        if type_a is dict:
            if type_b is not dict:
                add(path, DifferenceKind.NULL if b is None else DifferenceKind.TYPE, a, b)
                continue
            dead = state.dead
            following = state.next
            seen = 0
            children: list[_Task] = []
            for key, value_a in a.items():
                if dead:
                    child = state
                else:
                    found = following.get(key)
                    child = state.child(key) if found is None else found
                value_b = b.get(key, _MISSING)
                if value_b is not _MISSING:
                    seen += 1
                elif not child.ignored:
                    add((path, key), DifferenceKind.MISSING, value_a, None)
                    continue
                if child.ignored or value_a is value_b:
                    continue
                kind = type(value_a)
                if (
                    kind is type(value_b)
                    and kind is not dict
                    and kind is not list
                    and value_a == value_b
                ):
                    continue
                children.append((value_a, value_b, child, (path, key)))
            if seen != len(b):
                for key, value_b in b.items():
                    if key not in a and not state.child(key).ignored:
                        add((path, key), DifferenceKind.EXTRA, None, value_b)
            if children:
                children.reverse()  # the stack pops the first key first
                stack.extend(children)
        elif type_a is list:
            if type_b is not list:
                add(path, DifferenceKind.NULL if b is None else DifferenceKind.TYPE, a, b)
                continue
            item = state.item_state or state.item()
            if item.ignored:
                continue
            if state.unordered:
                pairs = _match_unordered(a, b, item, path, sink)
                if pairs is not None:
                    pairs.reverse()
                    stack.extend(pairs)
                    continue
            length_a = len(a)
            length_b = len(b)
            if length_a != length_b:
                add(path, DifferenceKind.SIZE, length_a, length_b)
            tasks: list[_Task] = []
            for index in range(min(length_a, length_b)):
                value_a = a[index]
                value_b = b[index]
                if value_a is value_b:
                    continue
                kind = type(value_a)
                if (
                    kind is type(value_b)
                    and kind is not dict
                    and kind is not list
                    and value_a == value_b
                ):
                    continue
                tasks.append((value_a, value_b, item, (path, index)))
            if not tasks:
                continue
            if length_a == length_b and length_a > 1 and nesting < _ORDERING_NESTING:
                # Walk the items apart: if they differ only by order, one difference says so.
                inner = DifferenceSink(sink.limit)
                tasks.reverse()
                _walk(tasks, inner, nesting + 1)
                if inner.count and _same_items(a, b, item):
                    add(path, DifferenceKind.ORDERING, a, b)
                else:
                    sink.merge(inner)
                continue
            tasks.reverse()
            stack.extend(tasks)
        else:
            _compare_scalars(a, b, state, path, sink)


def _compare_scalars(
    a: Any, b: Any, state: MatchState, path: PathLink, sink: DifferenceSink
) -> None:
    type_a = type(a)
    type_b = type(b)
    if a is None or b is None:
        if a is not b:
            sink.add(path, DifferenceKind.NULL, a, b)
        return
    if type_a is str and type_b is str:
        if a != b:
            normalise = state.strings
            if normalise is None or normalise(a) != normalise(b):
                sink.add(path, DifferenceKind.VALUE, a, b)
        return
    if type_a is bool or type_b is bool:
        if type_a is not type_b:
            sink.add(path, DifferenceKind.TYPE, a, b)
        elif a != b:
            sink.add(path, DifferenceKind.VALUE, a, b)
        return
    if (type_a is int or type_a is float) and (type_b is int or type_b is float):
        if type_a is not type_b and not state.int_float_equal:
            sink.add(path, DifferenceKind.TYPE, a, b)
        elif not _numbers_equal(a, b, state.abs_tolerance, state.rel_tolerance):
            sink.add(path, DifferenceKind.VALUE, a, b)
        return
    if type_a is not type_b:
        sink.add(path, DifferenceKind.TYPE, a, b)
    elif a != b:
        sink.add(path, DifferenceKind.VALUE, a, b)


def _numbers_equal(a: float, b: float, abs_tolerance: float, rel_tolerance: float) -> bool:
    """Equal, or within the absolute or the relative tolerance (symmetric in a and b)."""
    if a == b:
        return True
    try:
        gap = abs(a - b)
        scale = max(abs(a), abs(b))
    except OverflowError:
        return False
    if math.isnan(gap):
        return math.isnan(a) and math.isnan(b)
    return gap <= abs_tolerance or gap <= rel_tolerance * scale


# -- multiset matching -----------------------------------------------------------------------


class _TooDeep(Exception):
    """A value too deep to freeze into a hashable key."""


def _freeze(value: Any, state: MatchState, depth: int = 0) -> Any:
    """A hashable key equal for two values the rules call equal, tolerances aside."""
    kind = type(value)
    if kind is str:
        normalise = state.strings
        return value if normalise is None else normalise(value)
    if kind is bool:
        return ("b", value)
    if kind is float:
        if state.int_float_equal and value.is_integer():
            return int(value)
        return value if state.int_float_equal else ("f", value)
    if kind is int or value is None:
        return value
    if depth > _FREEZE_DEPTH:
        raise _TooDeep
    if kind is dict:
        items = []
        for key, inner in value.items():
            child = state.child(key)
            if not child.ignored:
                items.append((key, _freeze(inner, child, depth + 1)))
        items.sort(key=_first)
        return ("d", tuple(items))
    if kind is list:
        item = state.item()
        frozen = [_freeze(inner, item, depth + 1) for inner in value]
        if state.unordered:
            frozen.sort(key=_order_key)
        return ("l", tuple(frozen))
    return ("?", repr(value))


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _order_key(frozen: Any) -> tuple[int, float, str]:
    """A total order on frozen values; numbers by value so tolerant pairing pairs neighbours."""
    kind = type(frozen)
    if kind is int or kind is float:
        try:
            return (1, float(frozen), "")
        except OverflowError:
            return (1, math.inf if frozen > 0 else -math.inf, repr(frozen))
    if kind is str:
        return (2, 0.0, frozen)
    return (3, 0.0, repr(frozen))


def _same_items(a: list[Any], b: list[Any], item: MatchState) -> bool:
    try:
        return Counter(_freeze(x, item) for x in a) == Counter(_freeze(x, item) for x in b)
    except _TooDeep:
        return False


def _match_unordered(
    a: list[Any], b: list[Any], item: MatchState, path: PathLink, sink: DifferenceSink
) -> list[_Task] | None:
    """Pair the items of two unordered lists; returns the pairs still to compare.

    Items equal under the rules pair first; the rest pair in a canonical sort order (the same
    for both sides, so swapping V1 and V2 finds the same pairs), and whatever is left over is
    missing or extra. None when the items are too deep to freeze: compare them in order then.
    """
    try:
        keys_a = [_freeze(x, item) for x in a]
        keys_b = [_freeze(x, item) for x in b]
    except _TooDeep:
        return None
    waiting: dict[Any, list[int]] = {}
    for index, key in enumerate(keys_b):
        waiting.setdefault(key, []).append(index)
    left_a: list[int] = []
    for index, key in enumerate(keys_a):
        slots = waiting.get(key)
        if slots:
            slots.pop()
        else:
            left_a.append(index)
    if not left_a and len(a) == len(b):
        return []
    left_b = [index for slots in waiting.values() for index in slots]
    left_a.sort(key=lambda index: (_order_key(keys_a[index]), index))
    left_b.sort(key=lambda index: (_order_key(keys_b[index]), index))
    pairs: list[_Task] = [
        (a[i], b[j], item, (path, i)) for i, j in zip(left_a, left_b, strict=False)
    ]
    for i in left_a[len(left_b) :]:
        sink.add((path, i), DifferenceKind.MISSING, a[i], None)
    for j in left_b[len(left_a) :]:
        sink.add((path, j), DifferenceKind.EXTRA, None, b[j])
    return pairs


# -- bounded previews ------------------------------------------------------------------------

_PREVIEW_ITEMS = 5
_PREVIEW_DEPTH = 3


def preview(value: Any, max_chars: int) -> JsonValue:
    """A JSON value small enough to store beside a difference, whatever the original's size.

    Strings are cut to ``max_chars``; containers keep their first few items, three levels
    deep, within a budget of about ``max_chars`` characters of text, and say what was left out.
    """
    return _preview(value, max_chars, 0, [max_chars])


def _preview(value: Any, max_chars: int, depth: int, budget: list[int]) -> JsonValue:
    kind = type(value)
    if kind is str:
        cut = _cut(value, max(16, min(max_chars, budget[0])))
        budget[0] -= len(cut)
        return cut
    if kind is dict:
        if depth >= _PREVIEW_DEPTH or budget[0] <= 0:
            return f"{{… {len(value)} keys}}"
        shown: dict[str, JsonValue] = {}
        for index, (key, inner) in enumerate(value.items()):
            if index == _PREVIEW_ITEMS or budget[0] <= 0:
                shown["…"] = f"{len(value) - index} more keys"
                break
            name = _cut(key, 64)
            budget[0] -= len(name) + 4
            shown[name] = _preview(inner, max_chars, depth + 1, budget)
        return shown
    if kind is list:
        if depth >= _PREVIEW_DEPTH or budget[0] <= 0:
            return f"[… {len(value)} items]"
        items: list[JsonValue] = []
        for index, inner in enumerate(value):
            if index == _PREVIEW_ITEMS or budget[0] <= 0:
                items.append(f"… {len(value) - index} more items")
                break
            budget[0] -= 2
            items.append(_preview(inner, max_chars, depth + 1, budget))
        return items
    if kind is float and not math.isfinite(value):
        return repr(value)
    if value is None or kind is bool or kind is int or kind is float:
        budget[0] -= 8
        return value  # type: ignore[no-any-return]
    return _cut(repr(value), max_chars)


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return f"{text[: max_chars - 1]}… (+{len(text) - max_chars + 1} chars)"
