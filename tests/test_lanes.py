"""A lane's next step (PRODUCT.md 2, "Isolation", "Rate limits", "Outages") and the two
breakers, driven by an injected clock: no event loop and no sleeping needed to test them."""

from __future__ import annotations

import pytest

from factories import account
from postbackd.delivery.circuit import BroadBreaker, CircuitBreaker
from postbackd.delivery.lanes import IDLE, REROUTE, Lane, Send, Wait
from postbackd.delivery.model import Delivery
from postbackd.delivery.ratelimit import AccountBudget
from test_ratelimit import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


def d(n: int) -> Delivery:
    return Delivery(n, f"ev-{n}", "pb", "app", "x_ios", "purchase", "333", "PURCHASE", None, 3,
                    0, 0, 0, "acct", b"{}")  # fmt: skip


def breaker(clock: Clock, **kw: float) -> CircuitBreaker:
    return CircuitBreaker(
        **(
            {"min_requests": 4, "window_s": 30.0, "failure_ratio": 0.5, "probe_interval_s": 5.0}
            | kw
        ),
        clock=clock,
    )  # type: ignore[arg-type]


def broad(clock: Clock) -> BroadBreaker:
    return BroadBreaker(4, 30.0, 0.5, 5.0, clock=clock)


def lane(clock: Clock, cap: int = 2, limit: int = 100) -> Lane:
    return Lane("acct", cap, AccountBudget(limit, 900.0, clock), breaker(clock))


def test_sends_until_its_own_cap_then_idles(clock: Clock) -> None:
    ln, wide = lane(clock, cap=2), broad(clock)
    ln.queue.extend([d(1), d(2), d(3)])
    first, second = ln.step(account(), wide), ln.step(account(), wide)
    assert isinstance(first, Send) and isinstance(second, Send)
    assert ln.step(account(), wide) == IDLE  # the cap, not the pool, stops it
    assert set(ln.in_flight) == {1, 2}
    ln.settle(first.delivery, first.ticket, wide, True)
    assert isinstance(ln.step(account(), wide), Send)


def test_an_empty_budget_waits_for_the_window(clock: Clock) -> None:
    ln, wide = lane(clock, cap=5, limit=1), broad(clock)
    ln.queue.extend([d(1), d(2)])
    assert isinstance(ln.step(account(), wide), Send)
    step = ln.step(account(), wide)
    assert step == Wait(pytest.approx(900.0), rate_limited=True)  # type: ignore[arg-type]


def test_an_unsent_request_gives_its_budget_back(clock: Clock) -> None:
    ln, wide = lane(clock, cap=5, limit=1), broad(clock)
    ln.queue.extend([d(1), d(2)])
    step = ln.step(account(), wide)
    assert isinstance(step, Send)
    ln.settle(step.delivery, step.ticket, wide, None)
    assert isinstance(ln.step(account(), wide), Send)


def test_an_unauthenticated_or_deleted_account_reroutes(clock: Clock) -> None:
    ln, wide = lane(clock), broad(clock)
    ln.queue.append(d(1))
    assert ln.step(account(authenticated=False), wide) == REROUTE
    assert ln.step(None, wide) == REROUTE


def test_an_open_account_circuit_pauses_only_that_lane_and_probes(clock: Clock) -> None:
    failing, healthy, wide = lane(clock, cap=10), lane(clock, cap=10), broad(clock)
    healthy.account_id = "other"
    failing.queue.extend(d(n) for n in range(1, 8))
    for _ in range(4):
        step = failing.step(account(), wide)
        assert isinstance(step, Send)
        failing.settle(step.delivery, step.ticket, wide, False)
    assert failing.breaker.state == "open"
    waiting = failing.step(account(), wide)
    assert isinstance(waiting, Wait) and not waiting.rate_limited
    assert wide.state == "closed"  # one account failing is not X failing
    healthy.queue.append(d(50))
    assert isinstance(healthy.step(account(id="other"), wide), Send)
    clock.now_s += 5
    probe = failing.step(account(), wide)
    assert isinstance(probe, Send) and probe.ticket.account_probe
    assert isinstance(failing.step(account(), wide), Wait)  # one probe at a time
    failing.settle(probe.delivery, probe.ticket, wide, True)
    assert failing.breaker.state == "closed"


def test_a_probe_that_was_never_sent_is_given_back(clock: Clock) -> None:
    # A probe whose sending failed unexpectedly used to leave the circuit half open for
    # good: nothing was ever sent for that account again.
    ln, wide = lane(clock, cap=10), broad(clock)
    ln.queue.extend(d(n) for n in range(1, 8))
    for _ in range(4):
        step = ln.step(account(), wide)
        assert isinstance(step, Send)
        ln.settle(step.delivery, step.ticket, wide, False)
    clock.now_s += 5
    probe = ln.step(account(), wide)
    assert isinstance(probe, Send) and ln.breaker.state == "half_open"
    ln.settle(probe.delivery, probe.ticket, wide, None)
    assert ln.breaker.state == "open"
    assert isinstance(ln.step(account(), wide), Send)  # the probe is due again at once


def test_one_failing_account_never_opens_the_broad_breaker(clock: Clock) -> None:
    wide = broad(clock)
    for n in range(50):
        wide.record("slow", False)
        wide.record("healthy", n % 2 == 0)
    wide.account_failing("slow", True)
    assert wide.state == "closed"


def test_most_accounts_failing_opens_the_broad_breaker(clock: Clock) -> None:
    wide = broad(clock)
    for account_id in ("a", "b", "c"):
        wide.record(account_id, False)
    wide.record("d", True)
    wide.account_failing("a", True)
    assert wide.state == "closed"
    wide.account_failing("b", True)  # two of the four accounts that sent: half
    assert wide.state == "open"
    assert wide.acquire() is None
    clock.now_s += 5
    assert wide.acquire() == "probe"
    wide.record("d", True, probe=True)
    assert wide.state == "closed"


def test_the_broad_breaker_counts_only_accounts_active_in_its_window(clock: Clock) -> None:
    wide = broad(clock)
    for account_id in ("a", "b", "c", "d"):
        wide.record(account_id, True)
    clock.now_s += 31  # those requests left the window
    for _ in range(4):
        wide.record("a", False)
        wide.record("b", False)
    wide.account_failing("a", True)
    wide.account_failing("b", True)
    assert wide.state == "open"  # a and b are all that sent lately


def test_a_broad_probe_is_given_back_when_the_lane_cannot_use_it(clock: Clock) -> None:
    ln, wide = lane(clock, cap=10), broad(clock)
    for account_id in ("a", "b"):
        for _ in range(2):
            wide.record(account_id, False)
        wide.account_failing(account_id, True)
    assert wide.state == "open"
    clock.now_s += 5
    ln.breaker._open(clock.now_s)  # this lane's own circuit just opened
    ln.queue.append(d(1))
    assert isinstance(ln.step(account(), wide), Wait)
    assert wide.state == "open"  # the broad probe went back, still due
    assert wide.acquire() == "probe"
