"""Noise cancellation (Diffy's test): exact conditions, and a simulated run where one field is
pure noise and another a real regression."""

from __future__ import annotations

import random
import tomllib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import JsonValue

from ledger.comparison import compare_operations
from ledger.comparison.paths import parse_pattern
from ledger.comparison.rules import load_rules
from ledger.events import ComparisonRecorded, OperationRecorded
from ledger.noise import (
    count_paths,
    is_real,
    judge_paths,
    mismatches_without_noise,
    path_shape,
    proposed_rules,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "noise", "total", "real"),
    [
        (100, 10, 10_000, True),  # 90/110 = 82 % > 20 %, 90/10000 = 0.9 % > 0.03 %
        (100, 100, 10_000, False),  # condition 1: raw must exceed noise
        (120, 100, 10_000, False),  # condition 2: 20/220 = 9.1 %
        (150, 100, 10_000, False),  # 50/250 = exactly 20 %: not above it
        (151, 100, 10_000, True),  # 51/251 = 20.3 %
        (3, 0, 20_000, False),  # condition 3: 3/20000 = 0.015 %
        (7, 0, 20_000, True),  # 7/20000 = 0.035 %
        (0, 0, 100, False),
    ],
)
def test_diffys_three_conditions(raw: int, noise: int, total: int, real: bool) -> None:
    assert is_real(raw, noise, total) is real


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 100_000))
def test_never_real_when_the_noise_is_as_large(raw: int, noise: int, total: int) -> None:
    if raw <= noise:
        assert not is_real(raw, noise, total)


def test_list_indices_are_one_field() -> None:
    assert path_shape("items[3].tags[12].id") == "items[].tags[].id"


def _op(cid: str, pool: str, result: dict[str, JsonValue], n: int) -> OperationRecorded:
    return OperationRecorded(
        event_id=f"{cid}-{pool}-{n}",
        correlation_id=cid,
        session_id=None,
        pool=pool,  # type: ignore[arg-type]
        role="primary" if pool == "v1" else "shadow",
        operation="quote",
        outcome="ok",
        result=result,
        started_at=T0,
        duration_ms=1.0,
    )


def simulated_run(
    requests: int = 2000, sample: float = 0.25, seed: int = 3
) -> tuple[list[ComparisonRecorded], list[ComparisonRecorded]]:
    """V1 answers carry a random ``nonce`` (pure noise); V2 gets ``price`` wrong 5 % of the
    time (a real regression) and sometimes a line item's ``sku`` (noise there too)."""
    rng = random.Random(seed)
    rules = load_rules()
    raw, noise = [], []

    def answer(i: int, *, wrong: bool) -> dict[str, JsonValue]:
        return {
            "nonce": rng.getrandbits(32),
            "price": i + (1 if wrong else 0),
            "items": [{"sku": f"k{i}", "stamp": rng.random() < 0.5}],
        }

    for i in range(requests):
        cid = f"c{i}"
        v1 = _op(cid, "v1", answer(i, wrong=False), 0)
        v2 = _op(cid, "v2", answer(i, wrong=rng.random() < 0.05), 0)
        raw.append(compare_operations(v1, v2, rules, at=T0))
        if rng.random() < sample:
            # The secondary is V1's code run again; labelled v2 only so the engine compares it.
            secondary = _op(cid, "v2", answer(i, wrong=False), 1)
            noise.append(compare_operations(v1, secondary, rules, at=T0))
    return raw, noise


def test_a_noise_field_is_cancelled_and_a_real_regression_still_fails_the_gate() -> None:
    raw, noise = simulated_run()
    paths = {p.path: p for p in count_paths(raw, noise)}
    assert paths["nonce"].verdict == "noise"
    assert paths["items[].stamp"].verdict == "noise"
    assert paths["price"].verdict == "real"
    # every comparison differs in the nonce: without cancellation all 2000 are mismatches
    assert sum(c.category == "value_mismatch" for c in raw) == len(raw)
    cancelled = judge_paths(paths.values())
    assert set(cancelled) == {("quote", "nonce"), ("quote", "items[].stamp")}
    remaining = mismatches_without_noise(raw, cancelled)
    expected = sum(any(d.path == "price" for d in c.differences) for c in raw)
    assert remaining == expected == paths["price"].raw
    assert 0.03 < remaining / len(raw) < 0.07  # the 5 % regression, and only it


def test_noise_counts_are_scaled_from_the_sample_to_every_request() -> None:
    raw, noise = simulated_run(requests=400, sample=0.25)
    [nonce] = [p for p in count_paths(raw, noise) if p.path == "nonce"]
    assert nonce.secondaries == len(noise)
    assert nonce.noise == round(len(noise) * len(raw) / len(noise)) == len(raw)
    assert nonce.noise_rate == 1.0


def test_the_proposed_rules_are_toml_ignore_patterns_with_their_figures() -> None:
    raw, noise = simulated_run(requests=400)
    cancelled = sorted(judge_paths(count_paths(raw, noise)).values(), key=lambda p: p.path)
    snippet = proposed_rules(cancelled)
    document = tomllib.loads(snippet)
    assert document["compare"]["ignore"] == ["items[].stamp", "nonce"]
    for pattern in document["compare"]["ignore"]:
        parse_pattern(pattern)  # a pattern the comparison rules accept
    assert "quote: raw 400, noise 400 of 400" in snippet
