"""One lane per X account: the deliveries it signs, waiting in order, with the account's rate
budget, its own circuit breaker and its own cap on requests in flight (PRODUCT.md 2,
"Isolation": an account at its limit, slow or failing never delays another account's
deliveries, and a burst larger than the connection pool cannot take every connection).

`Lane.step` decides what the lane does next from its policies alone, so it is tested with an
injected clock and no event loop; the engine runs one task per lane that acts on the step.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from postbackd.model import XAccount

from .circuit import BroadBreaker, CircuitBreaker
from .model import Delivery
from .ratelimit import Budget

# A lane whose circuit is open looks again at least this often (its probe may come due).
_MIN_NAP_S: Final = 0.05


# Not frozen, for the reason Event is not (postbackd/event.py): made per request.
@dataclass(slots=True)
class Ticket:
    """What a request took from the policies, given back or settled with its answer."""

    account: XAccount
    broad_probe: bool
    account_probe: bool


@dataclass(slots=True)
class Send:
    delivery: Delivery
    ticket: Ticket


@dataclass(slots=True)
class Wait:
    seconds: float
    rate_limited: bool  # waiting for the budget (counted in the rate-limit wait metric)


Idle = Literal["idle"]
Reroute = Literal["reroute"]
IDLE: Final[Idle] = "idle"
# The account is gone or unauthenticated: its queue goes back to the signing rule.
REROUTE: Final[Reroute] = "reroute"


class Lane:
    __slots__ = ("account_id", "breaker", "budget", "cap", "in_flight", "queue", "task", "wake")

    def __init__(self, account_id: str, cap: int, budget: Budget, breaker: CircuitBreaker) -> None:
        self.account_id = account_id
        self.cap = cap
        self.budget = budget
        self.breaker = breaker
        self.queue: deque[Delivery] = deque()
        # Requests of this lane at X (or waiting for a pooled connection), by delivery id.
        self.in_flight: dict[int, Delivery] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Nothing to do until woken: an empty queue, or the cap reached."""
        return not self.queue or len(self.in_flight) >= self.cap

    def step(self, account: XAccount | None, broad: BroadBreaker) -> Send | Wait | Idle | Reroute:
        """The next thing to do. A `Send` has taken its request from the budget and both
        breakers; the caller settles its ticket once the answer is known (`settle`)."""
        if self.busy:
            return IDLE
        if account is None or not account.authenticated:
            return REROUTE
        wait_s = self.budget.try_take()
        if wait_s > 0:
            return Wait(wait_s, rate_limited=True)
        broad_mode = broad.acquire()
        if broad_mode is None:
            self.budget.give_back()
            return Wait(max(broad.seconds_until_probe(), _MIN_NAP_S), rate_limited=False)
        own_mode = self.breaker.acquire()
        if own_mode is None:
            self.budget.give_back()
            if broad_mode == "probe":
                broad.release_probe()
            return Wait(max(self.breaker.seconds_until_probe(), _MIN_NAP_S), rate_limited=False)
        d = self.queue.popleft()
        self.in_flight[d.id] = d
        ticket = Ticket(account, broad_mode == "probe", own_mode == "probe")
        return Send(d, ticket)

    def settle(self, d: Delivery, ticket: Ticket, broad: BroadBreaker, x_ok: bool | None) -> None:
        """The request's answer: `x_ok` True when X answered (any status but a 5xx), False for
        a 5xx, timeout or connection error, None when it was never sent (its budget, and a
        probe it held, are given back)."""
        self.in_flight.pop(d.id, None)
        if x_ok is None:
            self.budget.give_back()
            if ticket.account_probe:
                self.breaker.release_probe()
            if ticket.broad_probe:
                broad.release_probe()
            return
        self.breaker.record(d.id, x_ok, probe=ticket.account_probe)
        broad.record(self.account_id, x_ok, probe=ticket.broad_probe)
