"""Fixtures for the pure core's pairing tests: a classifier over the default rules."""

from __future__ import annotations

from datetime import datetime

import pytest

from ledger.comparison import compare_operations, load_rules, missing_comparison
from ledger.events import ComparisonRecorded, OperationRecorded


class DefaultRules:
    """``ledger.pairing.Classifier`` over ``ledger.comparison``'s default rule set."""

    def __init__(self) -> None:
        self.rules = load_rules(None)

    def compare(
        self, v1: OperationRecorded, v2: OperationRecorded, *, at: datetime
    ) -> ComparisonRecorded:
        return compare_operations(v1, v2, self.rules, at=at)

    def missing(
        self, present: OperationRecorded, *, at: datetime, late: bool = False
    ) -> ComparisonRecorded:
        return missing_comparison(present, at=at, late=late, rules=self.rules)


@pytest.fixture(scope="session")
def classifier() -> DefaultRules:
    return DefaultRules()
