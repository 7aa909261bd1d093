"""Fixtures for the stream processors' unit tests: operation halves and the real classifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from stream_factories import half

from ledger.events import OperationRecorded

MakeHalf = Callable[..., OperationRecorded]


@pytest.fixture
def make_half() -> MakeHalf:
    return half


@pytest.fixture(scope="session")
def classifier() -> Any:
    from streams.pairing import RuleClassifier

    return RuleClassifier()
