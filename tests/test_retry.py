"""The retry backoff of PRODUCT.md 2, "Retries": exponential, capped, with equal jitter."""

from __future__ import annotations

import random

import pytest

from postbackd.delivery.retry import RetryPolicy

POLICY = RetryPolicy(base_s=1.0, factor=2.0, cap_s=300.0)


def test_ceiling_grows_by_the_factor_from_the_base() -> None:
    assert [POLICY.ceiling_s(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_ceiling_stops_at_the_cap() -> None:
    assert POLICY.ceiling_s(9) == 256.0
    assert POLICY.ceiling_s(10) == 300.0
    assert POLICY.ceiling_s(50) == 300.0


@pytest.mark.parametrize("retry", [2_000, 10**9, 10**30])
def test_huge_retry_numbers_give_the_cap(retry: int) -> None:
    assert POLICY.ceiling_s(retry) == 300.0
    assert RetryPolicy(base_s=1.0, factor=3, cap_s=60.0).ceiling_s(retry) == 60.0  # int factor
    assert 150.0 <= POLICY.delay_s(retry, random.Random(1)) <= 300.0


@pytest.mark.parametrize("retry", [0, -1])
def test_retries_count_from_one(retry: int) -> None:
    with pytest.raises(ValueError, match="from 1"):
        POLICY.delay_s(retry, random.Random(1))


def test_jitter_stays_between_half_and_the_full_ceiling() -> None:
    rng = random.Random(7)
    for retry in range(1, 12):
        ceiling_s = POLICY.ceiling_s(retry)
        delays_s = [POLICY.delay_s(retry, rng) for _ in range(200)]
        assert all(ceiling_s / 2 <= d <= ceiling_s for d in delays_s)
        # Spread over the upper half, not pinned to one value or one end.
        assert max(delays_s) - min(delays_s) > ceiling_s * 0.4


def test_delays_are_reproducible_with_a_seeded_rng() -> None:
    first = [POLICY.delay_s(n, random.Random(42)) for n in range(1, 8)]
    again = [POLICY.delay_s(n, random.Random(42)) for n in range(1, 8)]
    other = [POLICY.delay_s(n, random.Random(43)) for n in range(1, 8)]
    assert first == again
    assert first != other


def test_synchronized_failures_retry_at_different_times() -> None:
    rng = random.Random(3)
    delays_s = {POLICY.delay_s(4, rng) for _ in range(100)}
    assert len(delays_s) == 100
