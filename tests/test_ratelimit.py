"""Per-account rate budgets of PRODUCT.md 2, "Rate limits", corrected from X's
`x-rate-limit-*` headers (reference, "Rate limits")."""

from __future__ import annotations

import pytest

from postbackd.delivery.ratelimit import AccountBudget, RateBudgets

T0 = 1_800_000_000.0  # an epoch second, like X's reset


class Clock:
    def __init__(self) -> None:
        self.now_s = T0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def take(budget: AccountBudget, n: int) -> None:
    for _ in range(n):
        assert budget.try_take() == 0.0


def test_takes_until_empty_then_waits_for_the_window_end(clock: Clock) -> None:
    budget = AccountBudget(3, 900.0, clock)
    assert budget.reset_at is None
    take(budget, 1)
    assert budget.reset_at == T0 + 900  # the window opens at the first take
    clock.now_s += 100
    take(budget, 2)
    assert budget.remaining == 0
    assert budget.try_take() == pytest.approx(800.0)
    clock.now_s += 799
    assert budget.try_take() == pytest.approx(1.0)


def test_a_new_window_restores_the_full_limit(clock: Clock) -> None:
    budget = AccountBudget(2, 900.0, clock)
    take(budget, 2)
    clock.now_s += 900
    assert budget.remaining == 2
    assert budget.reset_at is None
    take(budget, 2)
    assert budget.reset_at == T0 + 1800
    assert budget.try_take() > 0


def test_give_back_returns_an_unsent_request(clock: Clock) -> None:
    budget = AccountBudget(2, 900.0, clock)
    take(budget, 2)
    budget.give_back()
    take(budget, 1)
    assert budget.try_take() > 0
    budget.give_back()
    budget.give_back()
    budget.give_back()
    assert budget.remaining == 2  # never above the limit


def test_x_remaining_lowers_the_local_count(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 1)
    budget.observe(100, 10, T0 + 901)  # another client shares the token
    assert budget.remaining == 10
    assert budget.reset_at == T0 + 901  # X's end replaces the local guess


def test_x_remaining_never_raises_the_count_within_the_window(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 50)  # 50 in flight, X has counted one so far
    budget.observe(100, 99, T0 + 900)
    assert budget.remaining == 50
    budget.observe(100, 40, T0 + 900)
    budget.observe(100, 45, T0 + 900)  # an earlier answer arriving late
    assert budget.remaining == 40


def test_a_later_reset_from_x_starts_a_new_window(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 1)
    budget.observe(100, 0, T0 + 900)
    assert budget.try_take() == pytest.approx(900.0)
    # X's window has rolled over before ours (the clocks differ): X's count is the one.
    clock.now_s += 899.5
    budget.observe(100, 97, T0 + 1800)
    assert (budget.remaining, budget.reset_at) == (97, T0 + 1800)
    take(budget, 1)
    assert budget.remaining == 96


def test_a_reset_after_our_window_ended_starts_a_new_window(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 100)
    clock.now_s += 1000
    budget.observe(100, 70, T0 + 1500)
    assert (budget.remaining, budget.reset_at) == (70, T0 + 1500)


def test_an_answer_from_an_older_window_is_ignored(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 1)
    budget.observe(100, 99, T0 + 900)
    clock.now_s += 901
    take(budget, 1)
    budget.observe(100, 99, T0 + 1801)  # the new window, confirmed by X
    budget.observe(100, 2, T0 + 900)  # a late answer of the old window: its reset is past
    budget.block_until(T0 + 900)
    assert (budget.remaining, budget.reset_at) == (99, T0 + 1801)


def test_a_late_answer_under_clock_skew_costs_only_until_its_end(clock: Clock) -> None:
    # Our clock lags X's by 2 s: a late answer of the old window names an end 1 s ahead,
    # which could as well be X's window ending sooner than it said (X's to say). Taken as
    # such, it costs at most that second; X's next answer puts the window right again.
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 1)
    budget.observe(100, 99, T0 + 900)
    clock.now_s += 899
    budget.observe(100, 99, T0 + 1801)  # X's new window, confirmed
    budget.observe(100, 2, T0 + 900)  # the late one
    assert budget.remaining <= 2 and budget.reset_at == T0 + 900
    clock.now_s += 1
    take(budget, 1)
    budget.observe(100, 98, T0 + 1801)
    assert (budget.remaining, budget.reset_at) == (98, T0 + 1801)


def test_a_429_blocks_until_x_reset(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 5)
    budget.block_until(T0 + 300)
    assert budget.remaining == 0
    assert budget.try_take() == pytest.approx(300.0)
    clock.now_s += 300
    take(budget, 100)  # the next window is whole


def test_a_429_without_reset_blocks_a_full_window(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 5)
    clock.now_s += 60
    budget.block_until(None)
    assert budget.try_take() == pytest.approx(900.0)


def test_a_429_without_reset_keeps_the_end_x_gave(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 1)
    budget.observe(None, None, T0 + 400)
    budget.block_until(None)
    assert budget.try_take() == pytest.approx(400.0)


def test_missing_headers_are_tolerated(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    budget.observe(None, None, None)
    budget.observe(None, 5, None)  # no window open: nothing to correct
    take(budget, 1)
    budget.observe(None, None, None)
    assert (budget.remaining, budget.reset_at) == (99, T0 + 900)
    budget.observe(None, 7, None)  # no reset: only ever lowers the open window
    assert budget.remaining == 7
    budget.observe(None, -3, None)
    assert budget.remaining == 0


def test_x_limit_is_adopted(clock: Clock) -> None:
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 1)
    budget.observe(20, None, None)
    assert budget.remaining == 20
    budget.observe(0, None, None)  # nonsense from X does not stall the account
    clock.now_s += 900
    assert budget.remaining == 20
    take(budget, 20)
    assert budget.try_take() > 0


def test_budgets_are_per_account(clock: Clock) -> None:
    budgets = RateBudgets(1, 900.0, clock)
    a = budgets.get("a")
    assert budgets.get("a") is a
    take(a, 1)
    assert a.try_take() > 0
    assert budgets.get("b").try_take() == 0.0  # a limited account never delays another
    budgets.forget("a")
    budgets.forget("never-seen")
    assert budgets.get("a") is not a
    assert budgets.get("a").remaining == 1


def test_a_429_whose_reset_is_not_ahead_pauses_and_backs_off(clock: Clock) -> None:
    # X's clock lags ours: its 429 names a reset already past here. Sending again at once
    # would be refused again, in a loop; the budget pauses, longer at each refusal in a row.
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 1)
    pauses = []
    for _ in range(4):
        budget.observe(100, 0, int(clock.now_s) - 2, limited=True)
        budget.block_until(int(clock.now_s) - 2)
        wait = budget.try_take()
        assert wait > 0
        pauses.append(wait)
        clock.now_s += wait
        take(budget, 1)  # the pause ends with a whole budget to try again
    assert pauses == [pytest.approx(1.0), pytest.approx(2.0), pytest.approx(4.0),
                      pytest.approx(8.0)]  # fmt: skip
    # Any other answer ends the run of refusals: the next pause is short again.
    budget.observe(100, 50, None)
    budget.block_until(int(clock.now_s) - 2)
    assert budget.try_take() == pytest.approx(1.0)


def test_a_past_reset_pause_never_exceeds_a_window(clock: Clock) -> None:
    budget = AccountBudget(10, 5.0, clock)
    for _ in range(10):
        budget.block_until(clock.now_s - 1)
        wait = budget.try_take()
        assert 0 < wait <= 5.0
        clock.now_s += wait


def test_x_raising_its_limit_mid_window_is_used_at_once(clock: Clock) -> None:
    budget = AccountBudget(20, 900.0, clock)
    take(budget, 1)
    budget.observe(5, 4, T0 + 900)  # X allows 5 for now
    take(budget, 4)
    assert budget.try_take() > 0
    budget.observe(20, 15, T0 + 900)  # X now allows 20 in this window: 15 are left
    take(budget, 15)
    assert budget.try_take() > 0


def test_x_shortening_its_window_is_followed(clock: Clock) -> None:
    # X confirmed a window ending in 900 s, then names one ending sooner (its limits
    # changed): the sooner end, which has not passed, is X's to say.
    budget = AccountBudget(100, 900.0, clock)
    take(budget, 100)
    budget.observe(100, 0, T0 + 900)
    clock.now_s += 5
    budget.observe(100, 0, T0 + 10)
    assert budget.try_take() == pytest.approx(5.0)
    clock.now_s += 5
    take(budget, 100)  # the next window is whole


def test_the_configured_limit_is_a_cap_on_what_x_says(clock: Clock) -> None:
    # The operator set 5 per window (say, leaving room for another tool on the token): X's
    # 60,000 does not raise it; X's 3 lowers it, and X's 4 later raises it within the cap.
    budget = AccountBudget(5, 900.0, clock)
    take(budget, 1)
    budget.observe(60_000, 59_999, T0 + 900)
    take(budget, 4)
    assert budget.try_take() > 0
    clock.now_s += 900
    budget.observe(3, 3, T0 + 1800)
    take(budget, 3)
    assert budget.try_take() > 0
    budget.observe(4, 1, T0 + 1800)
    take(budget, 1)
    assert budget.try_take() > 0
