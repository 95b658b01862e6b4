"""The daemon's configuration for a run, made through its admin API the way an operator
would: X accounts (authenticated against the simulated X), an iOS app, a reengagement
tracker, and the postbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from benchmarks import workload

# Admin calls in flight while configuring: account creation waits on X's answer.
_PARALLEL = 8


@dataclass(frozen=True, slots=True)
class Setup:
    app_id: str
    # The event name of each postback; with several accounts, postback i is signed by
    # account i (PRODUCT.md 1, "Claim request": the postback's own x_account_id).
    event_names: tuple[str, ...]


async def _post(
    session: aiohttp.ClientSession, url: str, body: Mapping[str, object]
) -> dict[str, object]:
    async with session.post(url, json=body, headers=workload.api_headers()) as answer:
        data: dict[str, object] = await answer.json()
        if answer.status != 201:
            raise RuntimeError(f"POST {url}: {answer.status} {data}")
        return data


async def configure(
    session: aiohttp.ClientSession,
    api: str,
    accounts: Sequence[workload.Account],
    *,
    delay_s: int = 0,
) -> Setup:
    """One account: one postback for "purchase", signed by the tracker's account. Several:
    one postback per account, each for its own event name and signed by its account."""
    limit = asyncio.Semaphore(_PARALLEL)

    async def add_account(account: workload.Account) -> None:
        async with limit:
            body = {
                "id": account.id,
                "name": f"Bench {account.id}",
                "access_token": account.token,
                "access_token_secret": account.secret,
            }
            made = await _post(session, f"{api}/api/v1/x-accounts", body)
            if made.get("authenticated") is not True:
                raise RuntimeError(f"account {account.id} did not authenticate: {made}")

    await asyncio.gather(*(add_account(a) for a in accounts))
    app = await _post(
        session,
        f"{api}/api/v1/apps",
        {"name": "Bench Game", "platform": "ios", "bundle_id": workload.BUNDLE_ID},
    )
    app_id = str(app["id"])
    await _post(
        session,
        f"{api}/api/v1/trackers",
        {
            "app_id": app_id,
            "campaign_name": "Bench",
            "segment_name": "All",
            "name": "Bench reengagement",
            "network": "x_ios",
            "x_account_ids": [accounts[0].id],
            "target_event": workload.CONVERSION_TYPE,
            "event_matching_event": workload.EVENT_NAME,
            "post_engagement_window_days": workload.WINDOWS[0],
            "post_view_window_days": workload.WINDOWS[1],
        },
    )
    if len(accounts) == 1:
        signed_by: list[tuple[str, str | None]] = [(workload.EVENT_NAME, None)]
    else:
        signed_by = [(f"{workload.EVENT_NAME}_{i:04d}", a.id) for i, a in enumerate(accounts)]

    async def add_postback(event_name: str, account_id: str | None) -> None:
        async with limit:
            body: dict[str, object] = {
                "app_id": app_id,
                "network": "x_ios",
                "event_name": event_name,
                "conversion_type": workload.CONVERSION_TYPE,
                "delivery_delay_s": delay_s,
            }
            if account_id is not None:
                body["x_account_id"] = account_id
            await _post(session, f"{api}/api/v1/postbacks", body)

    await asyncio.gather(*(add_postback(name, account) for name, account in signed_by))
    return Setup(app_id, tuple(name for name, _ in signed_by))
