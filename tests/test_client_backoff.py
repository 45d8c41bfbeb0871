"""Reconnect backoff: exponential, capped, jittered within bounds, randomness passed in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from migwatch.client.backoff import Backoff


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 0.2), (1, 0.4), (2, 0.8), (3, 1.6), (5, 6.4), (6, 10.0), (50, 10.0), (10**6, 10.0)],
)
def test_base_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    """The pre-jitter delay doubles per attempt and stops at maximum_s, even for huge attempts."""
    assert Backoff(initial_s=0.2, maximum_s=10.0).base(attempt) == pytest.approx(expected)


@pytest.mark.parametrize(("u", "expected"), [(0.0, 1.6), (0.5, 1.2), (0.999999, 0.8)])
def test_jitter_takes_away_up_to_its_share(u: float, expected: float) -> None:
    """With jitter 0.5 the delay runs from the base (u=0) down to half of it (u→1)."""
    assert Backoff(initial_s=0.2, jitter=0.5).delay(3, u) == pytest.approx(expected, rel=1e-5)


def test_no_jitter_is_deterministic() -> None:
    """jitter=0 ignores the random draw."""
    b = Backoff(initial_s=1.0, maximum_s=4.0, jitter=0.0)
    assert [b.delay(n, 0.9) for n in range(4)] == [1.0, 2.0, 4.0, 4.0]


def test_seeded_randomness_gives_repeatable_delays() -> None:
    """The caller owns the randomness: the same seed gives the same schedule."""
    b = Backoff()
    one, two = random.Random(7), random.Random(7)
    assert [b.delay(n, one.random()) for n in range(8)] == [
        b.delay(n, two.random()) for n in range(8)
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": 5.0, "maximum_s": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_bad_policies_are_rejected(kwargs: dict[str, float]) -> None:
    """Nonsense settings raise ValueError at construction."""
    with pytest.raises(ValueError):
        Backoff(**kwargs)


@given(
    attempt=st.integers(0, 10_000),
    u=st.floats(0.0, 1.0, exclude_max=True),
    initial=st.floats(0.001, 5.0),
    jitter=st.floats(0.0, 1.0),
)
def test_delay_stays_within_its_band(attempt: int, u: float, initial: float, jitter: float) -> None:
    """Every delay lies in [base·(1−jitter), base] and never above maximum_s."""
    b = Backoff(initial_s=initial, maximum_s=10.0, jitter=jitter)
    base = b.base(attempt)
    d = b.delay(attempt, u)
    assert base * (1 - jitter) - 1e-12 <= d <= base <= 10.0
    assert b.base(attempt + 1) >= base
