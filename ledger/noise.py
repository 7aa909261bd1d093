"""Noise cancellation in the manner of Diffy: a difference counts only above V1's own noise.

Diffy runs a primary, a *secondary* (the same code again) and the candidate. Per endpoint and
field path it counts ``raw`` (primary differs from candidate), ``noise`` (primary differs from
secondary) and ``total`` (requests), and reports a field only when all three hold:

1. ``raw > noise``;
2. ``|raw - noise| / (raw + noise) > 20 %`` (the difference is not within the noise's spread);
3. ``|raw - noise| / total > 0.03 %`` (it is not negligible over all requests).

A path that differs (``raw > 0``) but fails the test is *noise*: a timestamp or a random id
that differs between any two runs. It is left out of the mismatch gate and proposed as an
``ignore`` rule; nothing is ignored until a person applies the rule to the comparison rules.

Counting is per operation and *path shape*: list indices are written ``[]`` (``items[3].id``
and ``items[7].id`` are one field), which is also how a rule pattern names them.

What exists here (pure): the test, the per-path counting from two sets of comparisons (V1 vs
V2, V1 vs V1'), the mismatch count with noise left out, and the proposed rules as TOML. What
does not exist yet: a ``secondary`` role in the shadow runner and three-way pairing, so the
stored ledger holds no V1-vs-V1' comparisons to feed it (see docs/health-and-switchover.md).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ledger.events import ComparisonRecorded
from ledger.health import MISMATCH_CATEGORIES

__all__ = [
    "MIN_RELATIVE",
    "MIN_SHARE",
    "PathNoise",
    "count_paths",
    "is_real",
    "judge_paths",
    "mismatches_without_noise",
    "path_shape",
    "proposed_rules",
]

#: Diffy's condition 2: |raw - noise| / (raw + noise) above this.
MIN_RELATIVE: Final = 0.20
#: Diffy's condition 3: |raw - noise| / total above this (0.03 %).
MIN_SHARE: Final = 0.0003

_INDEX = re.compile(r"\[\d+\]")


def path_shape(path: str) -> str:
    """The path with every list index written ``[]``."""
    return _INDEX.sub("[]", path)


def is_real(raw: int, noise: int, total: int) -> bool:
    """Diffy's three conditions: the difference stands out of V1's own noise."""
    if total <= 0 or raw <= noise:
        return False
    gap = raw - noise
    return gap / (raw + noise) > MIN_RELATIVE and gap / total > MIN_SHARE


@dataclass(frozen=True)
class PathNoise:
    """One operation's field: how often it differed against V2 and against V1 itself."""

    operation: str
    path: str
    raw: int
    noise: int
    total: int
    secondaries: int

    @property
    def verdict(self) -> Literal["real", "noise", "clean"]:
        if self.raw == 0:
            return "clean"
        return "real" if is_real(self.raw, self.noise, self.total) else "noise"

    @property
    def raw_rate(self) -> float:
        return self.raw / self.total if self.total else 0.0

    @property
    def noise_rate(self) -> float:
        """V1's own difference rate (``noise`` is already scaled to ``total``)."""
        return self.noise / self.total if self.total else 0.0


def _paths(comparison: ComparisonRecorded) -> set[str]:
    return {path_shape(d.path) for d in comparison.differences}


def count_paths(
    raw: Iterable[ComparisonRecorded], noise: Iterable[ComparisonRecorded]
) -> list[PathNoise]:
    """Per operation and path shape: comparisons (V1 vs V2) where it differed, comparisons of
    V1 with its secondary where it differed, and the totals of each.

    Diffy compares counts over the same requests; a secondary runs on a sample, so its counts
    are scaled to the primary's total before the test (``noise`` is the expected count over all
    requests). A comparison counts a path once however many of its list items differ there.
    """
    raw_counts: Counter[tuple[str, str]] = Counter()
    noise_counts: Counter[tuple[str, str]] = Counter()
    totals: Counter[str] = Counter()
    secondaries: Counter[str] = Counter()
    for c in raw:
        op = c.operation or "*"
        totals[op] += 1
        for path in _paths(c):
            raw_counts[(op, path)] += 1
    for c in noise:
        op = c.operation or "*"
        secondaries[op] += 1
        for path in _paths(c):
            noise_counts[(op, path)] += 1
    out = []
    for op, path in sorted(set(raw_counts) | set(noise_counts)):
        total, seen = totals[op], secondaries[op]
        scaled = round(noise_counts[(op, path)] * total / seen) if seen else 0
        out.append(PathNoise(op, path, raw_counts[(op, path)], scaled, total, seen))
    return out


def judge_paths(paths: Iterable[PathNoise]) -> dict[tuple[str, str], PathNoise]:
    """The paths that are noise, by (operation, path shape)."""
    return {(p.operation, p.path): p for p in paths if p.verdict == "noise"}


def mismatches_without_noise(
    comparisons: Iterable[ComparisonRecorded], noise: dict[tuple[str, str], PathNoise]
) -> int:
    """Comparisons in a mismatch category that still differ once noise paths are left out
    (an error mismatch or a V2-only error always counts: it has no field to be noise)."""
    count = 0
    for c in comparisons:
        if c.category not in MISMATCH_CATEGORIES:
            continue
        op = c.operation or "*"
        if (
            c.category in ("error_mismatch", "v2_error")
            or not c.differences
            or c.differences_truncated
            or any((op, p) not in noise for p in _paths(c))
        ):
            count += 1
    return count


def proposed_rules(noise: Sequence[PathNoise]) -> str:
    """A TOML snippet of ``ignore`` patterns for the noise paths, each with its figures."""
    lines = [
        "# Proposed by `report noise`: fields that differ as often between V1 and V1 itself",
        "# as between V1 and V2 (Diffy's test). Nothing is ignored until you add these to",
        "# your comparison rules (and change their version).",
        "[compare]",
        "ignore = [",
    ]
    for p in sorted(noise, key=lambda p: (p.path, p.operation)):
        figures = f"{p.operation}: raw {p.raw}, noise {p.noise} of {p.total}"
        lines.append(f"  {json.dumps(p.path)},  # {figures}")
    lines.append("]")
    return "\n".join(lines) + "\n"
