"""Fixtures shared by the comparison tests."""

from __future__ import annotations

import pytest

from ledger.comparison import RuleSet, load_rules


@pytest.fixture(scope="session")
def default_rules() -> RuleSet:
    return load_rules()
