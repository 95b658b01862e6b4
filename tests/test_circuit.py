"""The circuit breaker of PRODUCT.md 2, "Outages"."""

from __future__ import annotations

import pytest

from postbackd.delivery.circuit import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[State]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[State]) -> CircuitBreaker:
    return CircuitBreaker(
        min_requests=10,
        window_s=30.0,
        failure_ratio=0.5,
        probe_interval_s=5.0,
        clock=clock,
        on_change=changes.append,
    )


def fail(breaker: CircuitBreaker, ids: range) -> None:
    for delivery_id in ids:
        breaker.record(delivery_id, False)


def open_circuit(breaker: CircuitBreaker) -> None:
    fail(breaker, range(10))
    assert breaker.state == "open"


def test_closed_sends(breaker: CircuitBreaker) -> None:
    assert breaker.acquire() == "send"
    assert breaker.seconds_until_probe() == 0.0


def test_does_not_open_under_min_requests(breaker: CircuitBreaker) -> None:
    fail(breaker, range(9))
    assert breaker.state == "closed"
    breaker.record(9, False)
    assert breaker.state == "open"
    assert breaker.acquire() is None


def test_opens_at_the_failure_ratio(breaker: CircuitBreaker, changes: list[State]) -> None:
    for delivery_id in range(6):
        breaker.record(delivery_id, True)
    fail(breaker, range(100, 105))
    assert breaker.state == "closed"  # 5 of 11 deliveries failed
    breaker.record(105, False)
    assert breaker.state == "open"  # 6 of 12
    assert changes == ["open"]


def test_one_delivery_failing_many_times_never_opens(breaker: CircuitBreaker) -> None:
    for _ in range(50):
        breaker.record(7, False)
    assert breaker.state == "closed"
    breaker.record(8, False)  # a second failing delivery: broad enough now
    assert breaker.state == "open"


def test_retries_do_not_dilute_the_ratio(breaker: CircuitBreaker) -> None:
    # Five deliveries, each failing on its first try and three retries: X is down.
    for _ in range(4):
        fail(breaker, range(5))
    assert breaker.state == "open"


def test_successes_count_as_x_being_up(breaker: CircuitBreaker) -> None:
    for delivery_id in range(100):
        breaker.record(delivery_id, delivery_id % 3 != 0)  # a third fail
    assert breaker.state == "closed"


def test_old_failures_slide_out_of_the_window(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, range(9))
    clock.now_s += 30.0
    breaker.record(9, False)
    assert breaker.state == "closed"  # the first nine are forgotten
    clock.now_s += 1.0
    fail(breaker, range(10, 19))
    assert breaker.state == "open"


def test_probe_is_due_after_the_interval(breaker: CircuitBreaker, clock: Clock) -> None:
    open_circuit(breaker)
    assert breaker.seconds_until_probe() == pytest.approx(5.0)
    clock.now_s += 4.0
    assert breaker.acquire() is None
    assert breaker.seconds_until_probe() == pytest.approx(1.0)
    clock.now_s += 1.0
    assert breaker.seconds_until_probe() == 0.0
    assert breaker.acquire() == "probe"
    assert breaker.state == "half_open"


def test_one_probe_at_a_time(breaker: CircuitBreaker, clock: Clock) -> None:
    open_circuit(breaker)
    clock.now_s += 60.0
    assert breaker.acquire() == "probe"
    assert breaker.acquire() is None
    assert breaker.seconds_until_probe() > 0


def test_probe_success_closes(breaker: CircuitBreaker, clock: Clock, changes: list[State]) -> None:
    open_circuit(breaker)
    clock.now_s += 5.0
    assert breaker.acquire() == "probe"
    breaker.record(42, True, probe=True)
    assert breaker.state == "closed"
    assert changes == ["open", "half_open", "closed"]
    assert breaker.acquire() == "send"
    # The failures that opened it are gone: it takes a new broad failure to open again.
    fail(breaker, range(100, 109))
    assert breaker.state == "closed"


def test_probe_failure_rearms_the_timer(
    breaker: CircuitBreaker, clock: Clock, changes: list[State]
) -> None:
    open_circuit(breaker)
    clock.now_s += 5.0
    assert breaker.acquire() == "probe"
    clock.now_s += 2.0
    breaker.record(42, False, probe=True)
    assert breaker.state == "open"
    assert breaker.seconds_until_probe() == pytest.approx(5.0)
    clock.now_s += 4.9
    assert breaker.acquire() is None
    clock.now_s += 0.1
    assert breaker.acquire() == "probe"
    assert changes == ["open", "half_open", "open", "half_open"]


def test_release_probe_keeps_the_probe_due(
    breaker: CircuitBreaker, clock: Clock, changes: list[State]
) -> None:
    open_circuit(breaker)
    clock.now_s += 5.0
    assert breaker.acquire() == "probe"
    breaker.release_probe()
    assert breaker.state == "open"
    assert breaker.acquire() == "probe"  # no penalty: still due
    breaker.release_probe()
    breaker.release_probe()  # not holding a probe: nothing happens
    assert changes == ["open", "half_open", "open", "half_open", "open"]


def test_answers_of_earlier_sends_do_not_close(breaker: CircuitBreaker, clock: Clock) -> None:
    open_circuit(breaker)
    breaker.record(50, False)  # in flight when it opened
    assert breaker.seconds_until_probe() == pytest.approx(5.0)
    clock.now_s += 1.0
    breaker.record(51, True)
    assert breaker.state == "open"  # only a probe closes
    assert breaker.acquire() == "probe"  # but X answered: probe at once
    breaker.record(52, True)  # while the probe is out
    assert breaker.state == "half_open"
    breaker.record(53, True, probe=True)
    assert breaker.state == "closed"
