"""Paths into a JSON result, the glob patterns that select them, and the automaton that matches.

A path is written the way a person reads it: ``items[3].price``, ``["odd.key"].x``; the root is
``$``. A pattern uses the same syntax plus three wildcards: ``*`` (any one key), ``[]`` (any one
list index) and ``**`` (any number of segments, including none); a key segment may also carry
``*``/``?`` inside it (``*_at``), and ``[3]`` selects one index (``items[3].price``). List
indices are transparent to patterns that do not mention them, so ``items.price`` also selects
``items[3].price`` and ``**.created_at`` selects every ``created_at`` at any depth.

Patterns are compiled once into a deterministic automaton whose states are interned and whose
transitions are cached per key, so the differ pays one dict lookup per visited key instead of
matching every pattern at every node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "ANY_DEPTH",
    "ANY_INDEX",
    "ANY_KEY",
    "Automaton",
    "IndexToken",
    "MatchState",
    "PathLink",
    "PathRule",
    "Token",
    "fold_path",
    "format_path",
    "parse_pattern",
]

# Pattern tokens: a literal key (str), or one of these markers, or a compiled key glob.
ANY_KEY = "\x00*"
ANY_INDEX = "\x00[]"
ANY_DEPTH = "\x00**"
Token: TypeAlias = "str | re.Pattern[str] | IndexToken"


@dataclass(frozen=True, slots=True)
class IndexToken:
    """One list index, as in ``items[3]``."""

    index: int


# A path during a walk is a linked list (parent, segment) so that no string is built unless a
# difference is recorded. Segments are str (dict key) or int (list index).
PathLink: TypeAlias = "tuple[PathLink, str | int] | None"

_BARE_KEY = re.compile(r"[A-Za-z0-9_\-$@:/]+")
_PATTERN_KEY = re.compile(r"[^.\[\]\"'\s]+")

# Transitions cached per state are capped: results keyed by ids would otherwise grow the cache
# without bound over a long-running worker.
_CACHE_LIMIT = 4096
# Paths longer than this many segments are shown by their first and last segments only.
_PATH_SEGMENTS = 64
_PATH_END_SEGMENTS = 16


def parse_pattern(text: str) -> tuple[Token, ...]:
    """Parse a path pattern into tokens; raises ``ValueError`` saying what is wrong."""
    if not text or text.strip() != text:
        raise ValueError(f"path pattern {text!r} is empty or has surrounding spaces")
    tokens: list[Token] = []
    pos = 0
    expect_key = True  # at the start or after a dot
    while pos < len(text):
        char = text[pos]
        if char == "[":
            end = text.find("]", pos)
            if text.startswith('["', pos):
                try:
                    key, used = json.JSONDecoder().raw_decode(text, pos + 1)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"path pattern {text!r}: bad quoted key at {pos}") from exc
                if not isinstance(key, str) or not text.startswith("]", used):
                    raise ValueError(f"path pattern {text!r}: bad quoted key at {pos}")
                tokens.append(key)
                pos = used + 1
            elif end in (pos + 1, pos + 2) and text[pos + 1 : end] in ("", "*"):
                tokens.append(ANY_INDEX)
                pos = end + 1
            elif end > pos + 1 and text[pos + 1 : end].isascii() and text[pos + 1 : end].isdigit():
                tokens.append(IndexToken(int(text[pos + 1 : end])))
                pos = end + 1
            else:
                raise ValueError(
                    f"path pattern {text!r}: only [] (any index), [3] (one index) or "
                    f'["key"] may follow at {pos}'
                )
            expect_key = False
        elif char == ".":
            if expect_key:
                raise ValueError(f"path pattern {text!r}: empty segment at {pos}")
            pos += 1
            expect_key = True
            if pos == len(text):
                raise ValueError(f"path pattern {text!r}: ends with a dot")
        else:
            if not expect_key:
                raise ValueError(f"path pattern {text!r}: missing dot before position {pos}")
            match = _PATTERN_KEY.match(text, pos)
            if match is None:
                raise ValueError(f"path pattern {text!r}: unexpected {char!r} at {pos}")
            tokens.append(_key_token(match.group()))
            pos = match.end()
            expect_key = False
    return tuple(tokens)


def _key_token(segment: str) -> Token:
    if segment == "**":
        return ANY_DEPTH
    if segment == "*":
        return ANY_KEY
    if "*" in segment or "?" in segment:
        if "**" in segment:
            raise ValueError(f"'**' must be a whole segment, not part of {segment!r}")
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in segment)
        return re.compile(body, re.DOTALL)
    return segment


def format_path(link: PathLink) -> str:
    """The readable form of a walk path: ``items[3].price``; ``$`` for the root."""
    return _render(link, fold=False)


def fold_path(link: PathLink) -> str:
    """The path with every list index folded to ``[]`` (how differences group)."""
    return _render(link, fold=True)


def _render(link: PathLink, *, fold: bool) -> str:
    segments: list[str | int] = []
    while link is not None:
        link, segment = link
        segments.append(segment)
    if not segments:
        return "$"
    segments.reverse()
    if len(segments) > _PATH_SEGMENTS:
        # A path into a very deep result keeps its two ends: readable, bounded, still stable.
        left_out = len(segments) - 2 * _PATH_END_SEGMENTS
        return (
            _join(segments[:_PATH_END_SEGMENTS], fold=fold)
            + f".…{left_out} segments…"
            + _join(segments[-_PATH_END_SEGMENTS:], fold=fold, first=False)
        )
    return _join(segments, fold=fold)


_BARE_CACHE: dict[str, bool] = {}


def _is_bare(key: str) -> bool:
    """Whether a key can be written without quotes (remembered: keys repeat endlessly)."""
    bare = _BARE_CACHE.get(key)
    if bare is None:
        bare = _BARE_KEY.fullmatch(key) is not None
        if len(_BARE_CACHE) < _CACHE_LIMIT:
            _BARE_CACHE[key] = bare
    return bare


def _join(segments: list[str | int], *, fold: bool, first: bool = True) -> str:
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, int):
            parts.append("[]" if fold else f"[{segment}]")
        elif _is_bare(segment):
            parts.append(f".{segment}" if parts or not first else segment)
        else:
            parts.append(f"[{json.dumps(segment, ensure_ascii=False)}]")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class PathRule:
    """What a pattern asks for at the paths it selects (``None`` = not set here)."""

    ignore: bool = False
    unordered: bool = False
    abs_tolerance: float | None = None
    rel_tolerance: float | None = None
    strings: Callable[[str], str] | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    """Options that apply wherever no pattern says otherwise."""

    abs_tolerance: float = 0.0
    rel_tolerance: float = 0.0
    strings: Callable[[str], str] | None = None
    int_float_equal: bool = True


# A position: (pattern index, token index, inherited). ``inherited`` marks a completed pattern
# carried into a descendant: ignore/tolerance/strings apply to a whole subtree, "unordered"
# only to the list the pattern names.
_Position: TypeAlias = tuple[int, int, bool]


class MatchState:
    """One automaton state: the options in force at a node and cached transitions to children."""

    __slots__ = (
        "abs_tolerance",
        "automaton",
        "dead",
        "ignored",
        "indexed",
        "int_float_equal",
        "item_state",
        "next",
        "positions",
        "rel_tolerance",
        "strings",
        "unordered",
    )

    def __init__(self, automaton: Automaton, positions: frozenset[_Position]) -> None:
        self.automaton = automaton
        self.positions = positions
        self.next: dict[str, MatchState] = {}
        self.item_state: MatchState | None = None
        #: Index -> state, for the indices some pattern names here (``items[3]``).
        self.indexed: dict[int, MatchState | None] = {}
        for pattern, pos, _ in positions:
            token = automaton.patterns[pattern][0][pos : pos + 1]
            if token and isinstance(token[0], IndexToken):
                self.indexed[token[0].index] = None  # its state is made on first use
        defaults = automaton.defaults
        self.int_float_equal = defaults.int_float_equal
        self.dead = not positions
        ignored = unordered = False
        abs_tol = (-1, defaults.abs_tolerance)
        rel_tol = (-1, defaults.rel_tolerance)
        strings: tuple[int, Callable[[str], str] | None] = (-1, defaults.strings)
        for index, pos, inherited in positions:
            tokens, rule = automaton.patterns[index]
            if pos != len(tokens):
                continue
            ignored = ignored or rule.ignore
            unordered = unordered or (rule.unordered and not inherited)
            if rule.abs_tolerance is not None and index > abs_tol[0]:
                abs_tol = (index, rule.abs_tolerance)
            if rule.rel_tolerance is not None and index > rel_tol[0]:
                rel_tol = (index, rule.rel_tolerance)
            if rule.strings is not None and index > strings[0]:
                strings = (index, rule.strings)
        self.ignored = ignored
        self.unordered = unordered
        self.abs_tolerance = abs_tol[1]
        self.rel_tolerance = rel_tol[1]
        self.strings = strings[1]

    def child(self, key: str) -> MatchState:
        """The state at ``key`` below this node (cached)."""
        if self.dead:
            return self
        state = self.next.get(key)
        if state is None:
            state = self.automaton.step(self.positions, key)
            if len(self.next) < _CACHE_LIMIT:
                self.next[key] = state
        return state

    def item(self) -> MatchState:
        """The state of any item of the list at this node (cached): an item whose index no
        pattern names (see :meth:`item_at`)."""
        state = self.item_state
        if state is None:
            state = self.item_state = self.automaton.step(self.positions, None)
        return state

    def item_at(self, index: int) -> MatchState:
        """The state of item ``index`` (the same as :meth:`item` unless a pattern names it)."""
        if index not in self.indexed:
            return self.item()
        state = self.indexed[index]
        if state is None:
            state = self.indexed[index] = self.automaton.step(self.positions, None, index)
        return state


class Automaton:
    """Patterns with their rules, compiled into interned ``MatchState``s (subset construction)."""

    def __init__(
        self, patterns: Sequence[tuple[tuple[Token, ...], PathRule]], defaults: Defaults
    ) -> None:
        self.patterns = tuple(patterns)
        self.defaults = defaults
        self._states: dict[frozenset[_Position], MatchState] = {}
        start = {(index, 0, False) for index in range(len(self.patterns))}
        self.root = self._state(self._closure(start))

    def _state(self, positions: frozenset[_Position]) -> MatchState:
        state = self._states.get(positions)
        if state is None:
            state = self._states[positions] = MatchState(self, positions)
        return state

    def _closure(self, positions: set[_Position]) -> frozenset[_Position]:
        todo = list(positions)
        while todo:
            index, pos, _ = todo.pop()
            tokens = self.patterns[index][0]
            if pos < len(tokens) and tokens[pos] is ANY_DEPTH:
                following = (index, pos + 1, False)
                if following not in positions:
                    positions.add(following)
                    todo.append(following)
        return frozenset(positions)

    def step(
        self, positions: frozenset[_Position], key: str | None, index: int | None = None
    ) -> MatchState:
        """Advance on a dict key, or on a list item when ``key`` is None: item ``index``, or
        (None) any item whose index no pattern names."""
        result: set[_Position] = set()
        for pattern, pos, _inherited in positions:
            tokens = self.patterns[pattern][0]
            if pos == len(tokens):
                result.add((pattern, pos, True))
                continue
            token = tokens[pos]
            if token is ANY_DEPTH:
                result.add((pattern, pos, False))
            elif key is None:
                if token is ANY_INDEX:
                    result.add((pattern, pos + 1, False))
                elif isinstance(token, IndexToken):
                    if token.index == index:
                        result.add((pattern, pos + 1, False))
                else:
                    result.add((pattern, pos, False))  # indices are transparent to key tokens
            elif token is ANY_INDEX or isinstance(token, IndexToken):
                continue
            elif token is ANY_KEY or (
                token == key if isinstance(token, str) else token.fullmatch(key) is not None
            ):
                result.add((pattern, pos + 1, False))
        return self._state(self._closure(result))
