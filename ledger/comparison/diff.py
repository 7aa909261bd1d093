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

import marshal
import math
from collections import Counter
from enum import StrEnum
from fractions import Fraction
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
    """What differs at a path (the ``kind`` of a ``Difference``)."""

    TYPE = "type"
    VALUE = "value"
    NULL = "null"
    MISSING = "missing"
    EXTRA = "extra"
    SIZE = "size"
    ORDERING = "ordering"


# Kinds that change the shape of a result (shape_mismatch); the rest are value_mismatch.
SHAPE_KINDS = frozenset({"type", "missing", "extra", "size"})

# Plain strings in the hot loop: reading an enum member's value goes through a descriptor.
_TYPE = DifferenceKind.TYPE.value
_VALUE = DifferenceKind.VALUE.value
_NULL = DifferenceKind.NULL.value
_MISSING_KEY = DifferenceKind.MISSING.value
_EXTRA = DifferenceKind.EXTRA.value
_SIZE = DifferenceKind.SIZE.value
_ORDERING = DifferenceKind.ORDERING.value

# Distinct (folded path, kind) pairs kept for the fingerprint: enough for any real schema,
# bounded for a pathological one.
_FINGERPRINT_KEYS = 1000
# Lists nested deeper than this are compared positionally without the re-ordering check (the
# check walks each list on its own stack, so its depth must stay small).
_ORDERING_NESTING = 16
# A value deeper than this is not frozen for multiset matching; the list falls back to order.
_FREEZE_DEPTH = 64
# The re-ordering check looks at up to this many differences of one list.
_ORDERING_SCAN = 1000

_MISSING: Any = object()
_SCALARS = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float})
_STR_ONLY = {str}
# Below this length a list is walked item by item; above, C-level checks pay for themselves.
_BULK_LIST = 8
_Task: TypeAlias = tuple[Any, Any, MatchState, PathLink]


class DifferenceSink:
    """Differences found so far: the first few in full, all of them counted and fingerprinted.

    The fingerprint keeps the ``_FINGERPRINT_KEYS`` smallest distinct (folded path, kind)
    pairs, not the first ones met, so it does not depend on the order keys come in.
    """

    __slots__ = ("_ceiling", "_keys", "count", "limit", "recorded", "shape")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.shape = False
        self.recorded: list[tuple[PathLink, str, Any, Any]] = []
        self._keys: set[tuple[str, str]] = set()
        #: Once pruned: the largest key kept; anything above it is never among the smallest.
        self._ceiling: tuple[str, str] | None = None

    @property
    def keys(self) -> frozenset[tuple[str, str]]:
        """The smallest distinct (folded path, kind) pairs: what the fingerprint hashes."""
        if len(self._keys) > _FINGERPRINT_KEYS:
            self._prune()
        return frozenset(self._keys)

    def _key(self, key: tuple[str, str]) -> None:
        ceiling = self._ceiling
        if ceiling is not None and key > ceiling:
            return
        self._keys.add(key)
        if len(self._keys) >= 2 * _FINGERPRINT_KEYS:
            self._prune()

    def _prune(self) -> None:
        kept = sorted(self._keys)[:_FINGERPRINT_KEYS]
        self._keys = set(kept)
        self._ceiling = kept[-1]

    def add(self, path: PathLink, kind: str, v1: Any, v2: Any) -> None:
        self.count += 1
        if kind in SHAPE_KINDS:
            self.shape = True
        self._key((fold_path(path), kind))
        if len(self.recorded) < self.limit:
            self.recorded.append((path, kind, v1, v2))

    def merge(self, other: DifferenceSink) -> None:
        self.count += other.count
        self.shape = self.shape or other.shape
        for key in other._keys:
            self._key(key)
        room = self.limit - len(self.recorded)
        if room > 0:
            self.recorded.extend(other.recorded[:room])

    @property
    def truncated(self) -> bool:
        return self.count > len(self.recorded)

    def rendered(self, max_chars: int) -> list[tuple[str, str, JsonValue, JsonValue]]:
        """The recorded differences in document order, with readable paths and bounded values."""
        ordered = sorted(self.recorded, key=_document_order) if len(self.recorded) > 1 else []
        return [
            (format_path(path), kind, preview(v1, max_chars), preview(v2, max_chars))
            for path, kind, v1, v2 in ordered or self.recorded
        ]


def _document_order(
    record: tuple[PathLink, str, Any, Any],
) -> list[tuple[int, int, str]]:
    link = record[0]
    key: list[tuple[int, int, str]] = []
    while link is not None:
        link, segment = link
        key.append((0, segment, "") if isinstance(segment, int) else (1, 0, segment))
    key.reverse()
    return key


def diff_results(a: Any, b: Any, root: MatchState, sink: DifferenceSink) -> None:
    """Compare two canonical results from the root state, adding differences to ``sink``."""
    if root.ignored:
        return
    if type(a) is type(b) and (a == b if type(a) in _SCALARS else _identical(a, b)):
        return
    _walk([(a, b, root, None)], sink, 0)


def _identical(a: Any, b: Any) -> bool:
    """Equal down to every JSON type (``==`` alone says ``True == 1`` and ``1 == 1.0``).

    Serialising both sides is cheaper than walking them once a container is big enough, and
    identical results need no rules at all. Any doubt (other key order, a value too deep for
    C-level comparison) answers False, and the walk decides.
    """
    try:
        return bool(a == b) and marshal.dumps(a, 2) == marshal.dumps(b, 2)
    except (RecursionError, ValueError):
        return False


def _walk(stack: list[_Task], sink: DifferenceSink, nesting: int) -> None:
    pop = stack.pop
    push = stack.append
    add = sink.add
    scalars = _SCALARS
    while stack:
        a, b, state, path = pop()
        type_a = type(a)
        if type_a is dict:
            if type(b) is not dict:
                add(path, _NULL if b is None else _TYPE, a, b)
                continue
            dead = state.dead
            following = state.next
            # Same length and nothing of ``a`` missing from ``b`` means the same keys.
            same_keys = len(a) == len(b)
            for key, value_a in a.items():
                value_b = b.get(key, _MISSING)
                if value_a is value_b:
                    continue
                kind = type(value_a)
                # Equal scalars of one type are equal under any rule: skip before any lookup.
                if kind is type(value_b) and kind in scalars and value_a == value_b:
                    continue
                if dead:
                    child = state
                else:
                    found = following.get(key)
                    child = state.child(key) if found is None else found
                if value_b is _MISSING:
                    same_keys = False
                    if not child.ignored:
                        add((path, key), _MISSING_KEY, value_a, None)
                elif child.ignored:
                    continue
                elif kind in scalars and type(value_b) in scalars:
                    _compare_scalars(value_a, value_b, child, (path, key), sink)
                else:
                    push((value_a, value_b, child, (path, key)))
            if not same_keys:
                for key, value_b in b.items():
                    if key not in a and not state.child(key).ignored:
                        add((path, key), _EXTRA, None, value_b)
        elif type_a is list:
            if type(b) is not list:
                add(path, _NULL if b is None else _TYPE, a, b)
                continue
            item = state.item_state or state.item()
            indexed = state.indexed  # items some pattern names by index (``items[3]``)
            if item.ignored and not indexed:
                continue
            length_a = len(a)
            length_b = len(b)
            if length_a == length_b and length_a >= _BULK_LIST:
                # Lists of scalars with the same type at every index: == is then exact.
                types_a = list(map(type, a))
                if types_a == list(map(type, b)):
                    if dict not in types_a and list not in types_a:
                        if a == b:
                            continue
                    elif _identical(a, b):
                        continue
            if state.unordered and not indexed:
                pairs = _match_unordered(a, b, item, path, sink)
                if pairs is not None:
                    pairs.reverse()
                    stack.extend(pairs)
                    continue
            if length_a != length_b:
                add(path, _SIZE, length_a, length_b)
            tasks: list[_Task] = []
            for index in range(min(length_a, length_b)):
                value_a = a[index]
                value_b = b[index]
                if value_a is value_b:
                    continue
                kind = type(value_a)
                if kind is type(value_b) and kind in scalars and value_a == value_b:
                    continue
                here = state.item_at(index) if indexed else item
                if here.ignored:
                    continue
                tasks.append((value_a, value_b, here, (path, index)))
            if not tasks:
                continue
            tasks.reverse()  # the stack pops the first index first
            if length_a == length_b and length_a > 1 and nesting < _ORDERING_NESTING:
                # Walk the items apart: if they differ only by order, one difference says so.
                inner = DifferenceSink(max(sink.limit, _ORDERING_SCAN))
                _walk(tasks, inner, nesting + 1)
                if inner.count and _reordered(a, b, item, path, inner):
                    add(path, _ORDERING, a, b)
                else:
                    sink.merge(inner)
                continue
            stack.extend(tasks)
        else:
            _compare_scalars(a, b, state, path, sink)


def _compare_scalars(
    a: Any, b: Any, state: MatchState, path: PathLink, sink: DifferenceSink
) -> None:
    """Two JSON scalars that are not trivially equal (numbers first: the common case)."""
    type_a = type(a)
    type_b = type(b)
    if type_a in _NUMBERS and type_b in _NUMBERS:
        if type_a is not type_b and not state.int_float_equal:
            sink.add(path, _TYPE, a, b)
        elif a != b and not _within_tolerance(a, b, state.abs_tolerance, state.rel_tolerance):
            sink.add(path, _VALUE, a, b)
        return
    if type_a is str and type_b is str:
        if a != b:
            normalise = state.strings
            if normalise is None or normalise(a) != normalise(b):
                sink.add(path, _VALUE, a, b)
        return
    if a is None or b is None:
        if a is not b:
            sink.add(path, _NULL, a, b)
        return
    if type_a is not type_b:
        sink.add(path, _TYPE, a, b)
    elif a != b:
        sink.add(path, _VALUE, a, b)


def _within_tolerance(a: float, b: float, abs_tolerance: float, rel_tolerance: float) -> bool:
    """Whether two numbers that are not ``==`` count as equal under the tolerances.

    Exact arithmetic throughout: Python compares an int with a float exactly, and the gap
    of an int and a float is taken as fractions, so ``2**53 + 1`` is not ``2.0**53`` even
    with zero tolerance. NaN equals only NaN and an infinity only itself: neither is ever
    within any tolerance of another number.
    """
    if a != a or b != b:  # NaN
        return a != a and b != b
    if (type(a) is float and math.isinf(a)) or (type(b) is float and math.isinf(b)):
        return False  # a == b already answered infinity against itself
    if abs_tolerance <= 0 and rel_tolerance <= 0:
        return False
    if type(a) is float and type(b) is float:
        gap: float | Fraction = abs(a - b)
        scale: float | Fraction = max(abs(a), abs(b))
    else:
        gap = abs(Fraction(a) - Fraction(b))
        scale = max(abs(Fraction(a)), abs(Fraction(b)))
    return gap <= abs_tolerance or gap <= Fraction(rel_tolerance) * scale


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


def _reordered(
    a: list[Any], b: list[Any], item: MatchState, path: PathLink, inner: DifferenceSink
) -> bool:
    """Whether the items that differ are the same items in other places.

    Only the differing items are frozen (a 10 MB list with one changed row stays cheap). When
    too many differ to know which, the list is taken as changed, not reordered.
    """
    if inner.truncated:
        return False
    positions: set[int] = set()
    for link, _, _, _ in inner.recorded:
        while link is not None and link[0] is not path:
            link = link[0]
        if link is None or not isinstance(link[1], int):
            return False
        positions.add(link[1])
    if len(positions) < 2:
        return False
    try:
        return Counter(_freeze(a[i], item) for i in positions) == Counter(
            _freeze(b[i], item) for i in positions
        )
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
    types = set(map(type, a))
    if len(a) == len(b) and len(types) == 1 and types <= _SCALARS and types == set(map(type, b)):
        # Lists of one scalar type (ids, tags): sorting compares them exactly in C. Only
        # scalars: comparing nested lists in C would recurse as deep as they go.
        try:
            same = sorted(a) == sorted(b)
        except TypeError:  # None does not order
            same = False
        if same:
            return []
        if item.strings is not None and types == _STR_ONLY:
            normalise = item.strings
            if sorted(map(normalise, a)) == sorted(map(normalise, b)):
                return []
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
        sink.add((path, i), _MISSING_KEY, a[i], None)
    for j in left_b[len(left_a) :]:
        sink.add((path, j), _EXTRA, None, b[j])
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
