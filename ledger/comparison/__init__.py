"""The comparison engine: translate V1 and V2 results, compare them under rules, classify.

Pure code: the stream processor calls ``compare_operations`` when both halves of a correlation
id have arrived and ``missing_comparison`` when its timer gives up on one; ``reclassify`` runs
the same functions over stored history with other rules.
"""

from ledger.comparison.classify import (
    Category,
    compare_operations,
    comparison_id_for,
    fingerprint,
    missing_comparison,
)
from ledger.comparison.diff import DifferenceKind
from ledger.comparison.normalize import CANONICAL_ERRORS
from ledger.comparison.rules import TIMING_FIELDS, RuleSet, load_rules, parse_rules

__all__ = [
    "CANONICAL_ERRORS",
    "TIMING_FIELDS",
    "Category",
    "DifferenceKind",
    "RuleSet",
    "compare_operations",
    "comparison_id_for",
    "fingerprint",
    "load_rules",
    "missing_comparison",
    "parse_rules",
]
