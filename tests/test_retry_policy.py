"""Properties of `pageq.Backoff`: pure, no database."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pageq
from pageq.retry import MAX_DELAY

ATTEMPTS = st.integers(min_value=1, max_value=1000)  # MAX_ATTEMPTS_RANGE
BASES = st.floats(min_value=1.0, max_value=100.0)
CAPS = st.floats(min_value=0.0, max_value=MAX_DELAY)
FACTORS = st.floats(min_value=0.0, max_value=1e6)
SPREADS = st.floats(min_value=0.0, max_value=0.99)


@given(base=BASES, cap=CAPS, factor=FACTORS, attempt=ATTEMPTS)
def test_nominal_is_non_decreasing_and_capped(base: float, cap: float, factor: float, attempt: int) -> None:
    policy = pageq.Backoff.exponential(base=base, cap=cap, jitter=False, factor=factor)
    here, after = policy.nominal(attempt), policy.nominal(attempt + 1)
    assert 0.0 <= here <= after <= cap
    assert math.isfinite(after)


@given(base=BASES, cap=CAPS, attempt=st.integers(min_value=1, max_value=60))
def test_nominal_is_the_formula(base: float, cap: float, attempt: int) -> None:
    policy = pageq.Backoff.exponential(base=base, cap=cap, jitter=False)
    expected = min(cap, base**attempt) if base**attempt < math.inf else cap
    assert policy.nominal(attempt) == pytest.approx(expected, rel=1e-12)


@given(base=BASES, cap=CAPS, factor=FACTORS, attempt=ATTEMPTS)
def test_without_jitter_delay_is_nominal(base: float, cap: float, factor: float, attempt: int) -> None:
    policy = pageq.Backoff.exponential(base=base, cap=cap, jitter=False, factor=factor)
    assert policy.delay(attempt) == policy.nominal(attempt)


@given(base=BASES, cap=CAPS, spread=SPREADS, attempt=ATTEMPTS, seed=st.integers(0, 2**32))
def test_jitter_stays_within_its_spread(
    base: float, cap: float, spread: float, attempt: int, seed: int
) -> None:
    policy = pageq.Backoff(
        base=base, cap=cap, jitter=spread, _rng=random.Random(seed)
    )  # a seeded twin of Backoff.exponential(...)
    assert policy == pageq.Backoff.exponential(base=base, cap=cap, jitter=spread)
    nominal = policy.nominal(attempt)
    for _ in range(20):
        delay = policy.delay(attempt)
        assert nominal * (1 - spread) - 1e-9 <= delay <= nominal * (1 + spread) + 1e-9


def test_jitter_true_means_ten_percent_and_actually_varies() -> None:
    policy = pageq.Backoff.exponential(base=2, cap=60, jitter=True)
    assert policy.jitter == 0.1
    delays = {policy.delay(5) for _ in range(200)}
    assert all(32 * 0.9 <= d <= 32 * 1.1 for d in delays)
    assert len(delays) > 1


@given(seconds=st.floats(min_value=0.0, max_value=MAX_DELAY), attempt=ATTEMPTS)
def test_constant_is_constant(seconds: float, attempt: int) -> None:
    policy = pageq.Backoff.constant(seconds)
    assert policy.nominal(attempt) == policy.delay(attempt) == seconds


def test_default_policy_is_exponential_with_jitter() -> None:
    policy = pageq.Backoff()
    assert (policy.base, policy.cap, policy.jitter, policy.factor) == (2.0, 3600.0, 0.1, 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.5},
        {"base": 0.0},
        {"base": -2.0},
        {"base": math.nan},
        {"base": math.inf},
        {"cap": -1.0},
        {"cap": math.nan},
        {"cap": math.inf},
        {"cap": MAX_DELAY * 2},
        {"factor": -0.1},
        {"factor": math.nan},
        {"factor": math.inf},
        {"jitter": 1.0},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"jitter": math.nan},
    ],
)
def test_invalid_exponential_parameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        pageq.Backoff.exponential(**kwargs)


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf, MAX_DELAY * 2])
def test_invalid_constant_raises(seconds: float) -> None:
    with pytest.raises(ValueError):
        pageq.Backoff.constant(seconds)


@given(
    base=st.floats(allow_nan=True, allow_infinity=True),
    cap=st.floats(allow_nan=True, allow_infinity=True),
    factor=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_policy_that_constructs_yields_finite_delays(base: float, cap: float, factor: float) -> None:
    try:
        policy = pageq.Backoff.exponential(base=base, cap=cap, factor=factor)
    except ValueError:
        return
    for attempt in (1, 2, 10, 100, 1000):
        assert 0.0 <= policy.delay(attempt) <= cap * 1.1 + 1e-9
