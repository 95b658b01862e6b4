"""What an answer of X means for its delivery (PRODUCT.md 2, "Retries" and "Outages";
reference, "Errors"): a pure function of the answer, the delivery and the policies, so every
branch is tested without a network.

    200       delivered, with the claim judged by the attribution rules
    429       back to the lane's front: the budget waits for X's reset, no retry used
    401       held (the account's credentials stopped working); back to the lane when the
              401 answers credentials that have been replaced or authenticated since
    5xx, timeout, connection error
              a retry later (scheduled, with backoff), or dead when none is left; behind an
              open circuit, and for a failed probe, back to the lane with no retry used
    other 4xx dead, with X's code
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from postbackd.attribution import ClaimDecision
from postbackd.event import Event
from postbackd.index import Index
from postbackd.x.response import ResponseKind, XResponse

from .claim import judge_answer
from .model import Delivery, Result, State
from .retry import RetryPolicy


# Not frozen, for the reason Event is not (postbackd/event.py): made per answer of X.
@dataclass(slots=True)
class Outcome:
    """`result` is the new state to record; None sends the delivery back to its lane."""

    result: Result | None
    decision: ClaimDecision | None = None


REQUEUE = Outcome(None)


def result(
    d: Delivery,
    state: State,
    reason: str | None,
    *,
    account_id: str | None,
    status: int | None = None,
    error: str | None = None,
    attempts: int | None = None,
    due_ms: int | None = None,
) -> Result:
    return Result(
        delivery_id=d.id,
        state=state,
        reason=reason,
        attempts=d.attempts if attempts is None else attempts,
        due_ms=d.due_ms if due_ms is None else due_ms,
        account_id=account_id,
        last_status=status,
        last_error=error,
    )


def retry_or_dead(
    d: Delivery,
    status: int | None,
    error: str,
    account_id: str | None,
    policy: RetryPolicy,
    rng: random.Random,
    now_ms: int,
) -> Result:
    """One more attempt used: scheduled after the backoff, or dead when none is left."""
    attempts = d.attempts + 1
    if attempts > d.retry_attempts:
        return result(d, "dead", error, account_id=account_id, status=status, error=error,
                      attempts=attempts)  # fmt: skip
    due = now_ms + int(policy.delay_s(attempts, rng) * 1000)
    return result(d, "scheduled", None, account_id=account_id, status=status, error=error,
                  attempts=attempts, due_ms=due)  # fmt: skip


def judge(
    d: Delivery,
    event: Event,
    response: XResponse,
    index: Index,
    *,
    account_id: str,
    credentials_current: bool,
    circuit_closed: bool,
    probe: bool,
    policy: RetryPolicy,
    rng: random.Random,
    now_ms: int,
) -> Outcome:
    """`credentials_current`: the account still has the credentials the request was signed
    with, and has not been authenticated again since it was sent. `circuit_closed`: neither
    the broad breaker nor the account's own is open (after recording this answer)."""
    kind = response.kind
    if kind is ResponseKind.OK:
        decision, claim, attribution = judge_answer(d, event, response.body, index)
        # Built at once, with its claim: the most common answer by far, and a `replace`
        # would build it twice.
        done = Result(d.id, "delivered", None, d.attempts + 1, d.due_ms, account_id,
                      response.status, None, claim, attribution)  # fmt: skip
        return Outcome(done, decision)
    if kind is ResponseKind.RATE_LIMITED:
        return REQUEUE
    if kind is ResponseKind.UNAUTHORIZED:
        if not credentials_current:
            return REQUEUE  # X refused credentials that are no longer the account's
        return Outcome(
            result(d, "held", "account_unauthenticated", account_id=account_id,
                   status=response.status, error=response.describe())
        )  # fmt: skip
    if kind is ResponseKind.RETRYABLE:
        if probe or not circuit_closed:
            return REQUEUE
        return Outcome(
            retry_or_dead(d, response.status or None, response.describe(), account_id, policy,
                          rng, now_ms)
        )  # fmt: skip
    # Reference, "Errors": other 4xx are permanent; X's code is kept.
    error = response.describe()
    return Outcome(
        result(d, "dead", error, account_id=account_id, status=response.status, error=error,
               attempts=d.attempts + 1)
    )  # fmt: skip
