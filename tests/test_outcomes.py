"""What each answer of X means for its delivery (PRODUCT.md 2, "Retries", "Outages"; the
reference's "Errors"), a pure function of the answer and the policies."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from postbackd.delivery import outcomes
from postbackd.delivery.model import Delivery
from postbackd.delivery.retry import RetryPolicy
from postbackd.index import Index
from postbackd.x.response import NoAnswer, XResponse
from storekit import event

NOW_MS = 1_000_000
POLICY = RetryPolicy(1.0, 2.0, 300.0)


def d(attempts: int = 0, retry_attempts: int = 3) -> Delivery:
    return Delivery(7, "ev-1", "pb", "kogame0123456789abcdef", "x_ios", "purchase", "333",
                    "PURCHASE", None, retry_attempts, attempts, 500, 500, "acct",
                    event(1).to_json())  # fmt: skip


def answer(status: int, body: object = None, **kw: Any) -> XResponse:
    raw = orjson.dumps(body) if body is not None else b""
    return XResponse(status=status, body=raw, rate_limit=None, duration_s=0.01, **kw)


def judge(delivery: Delivery, response: XResponse, **kw: Any) -> outcomes.Outcome:
    args: dict[str, Any] = {
        "account_id": "acct",
        "credentials_current": True,
        "circuit_closed": True,
        "probe": False,
        "policy": POLICY,
        "rng": random.Random(1),
        "now_ms": NOW_MS,
    } | kw
    return outcomes.judge(delivery, event(1), response, Index(), **args)


def test_200_is_delivered_with_its_claim() -> None:
    body = {"data": {"twitter_attribution": None, "tpn_attribution": None}}
    outcome = judge(d(attempts=1), answer(200, body))
    assert outcome.result is not None and outcome.result.state == "delivered"
    assert outcome.result.attempts == 2 and outcome.result.last_status == 200
    assert outcome.result.claim is not None and outcome.result.claim.outcome == "not_claimed"
    assert outcome.decision is not None


def test_429_goes_back_to_the_lane_without_a_retry() -> None:
    assert judge(d(), answer(429)) is outcomes.REQUEUE


def test_401_holds_unless_the_credentials_changed_since() -> None:
    held = judge(d(), answer(401))
    assert held.result is not None
    assert (held.result.state, held.result.reason) == ("held", "account_unauthenticated")
    # A late 401 for credentials the account no longer has (authenticated again since):
    # the delivery is sent again with the account as it is now, not held.
    assert judge(d(), answer(401), credentials_current=False) is outcomes.REQUEUE


@pytest.mark.parametrize(
    "response",
    [
        answer(503),
        answer(500),
        answer(408),
        answer(0, error="timeout", failure=NoAnswer.TIMEOUT),
        answer(0, error="connection error: reset", failure=NoAnswer.CONNECTION),
    ],
)
def test_x_failures_are_retried_with_backoff_then_dead(response: XResponse) -> None:
    retried = judge(d(attempts=0, retry_attempts=2), response)
    assert retried.result is not None and retried.result.state == "scheduled"
    assert retried.result.attempts == 1
    # Equal jitter of the first retry: between half the base and the base.
    assert NOW_MS + 500 <= retried.result.due_ms <= NOW_MS + 1000
    dead = judge(d(attempts=2, retry_attempts=2), response)
    assert dead.result is not None and dead.result.state == "dead"
    assert dead.result.attempts == 3 and dead.result.last_error


def test_behind_an_open_circuit_and_for_a_probe_no_retry_is_used() -> None:
    assert judge(d(), answer(503), circuit_closed=False) is outcomes.REQUEUE
    assert judge(d(), answer(503), probe=True) is outcomes.REQUEUE


def test_other_4xx_are_dead_with_x_code() -> None:
    body = {"errors": [{"code": "INVALID_PARAMETER", "message": "bad app_id"}]}
    dead = judge(d(), answer(400, body))
    assert dead.result is not None and dead.result.state == "dead"
    assert "INVALID_PARAMETER" in (dead.result.last_error or "")
    assert dead.result.attempts == 1
