"""The in-memory lookup snapshot of the configuration.

Built from the store at start and rebuilt on every change; the daemon swaps the reference
in one assignment, so a task that holds an `Index` sees one consistent configuration and
the next event sees the new one (PRODUCT.md: a saved tracker or postback acts on the next
event, with no restart).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from postbackd.model import App, Campaign, Postback, Segment, Tracker, XAccount

# Bounded cache of campaign name -> tracker id per (app, network); X sends few distinct
# campaign names, so this turns the match into one dict lookup per claim.
_CAMPAIGN_CACHE_SIZE: Final = 4096
_MISS: Final = ""


@dataclass(slots=True)
class AppNetworkTrackers:
    """The reengagement trackers of one (app, network), in creation order."""

    trackers: tuple[Tracker, ...]
    by_id: dict[str, Tracker] = field(init=False)
    default: Tracker | None = field(init=False)
    newest: Tracker | None = field(init=False)
    _pattern: re.Pattern[str] | None = field(init=False)
    _cache: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {t.id: t for t in self.trackers}
        self.default = next((t for t in self.trackers if t.default), None)
        self.newest = self.trackers[-1] if self.trackers else None
        if self.trackers:
            # PRODUCT.md 1, attribution step 3: the id is a token bounded by the string's
            # ends or a character outside [a-z0-9-], compared case-insensitively. Longer
            # ids first so that an id which prefixes another cannot shadow it.
            ids = sorted(self.by_id, key=len, reverse=True)
            alternatives = "|".join(re.escape(i) for i in ids)
            self._pattern = re.compile(f"(?<![a-z0-9-])(?:{alternatives})(?![a-z0-9-])")
        else:
            self._pattern = None

    def in_campaign_name(self, campaign_name: str | None) -> Tracker | None:
        """The tracker of this (app, network) whose id appears in X's campaign name."""
        if not campaign_name or self._pattern is None:
            return None
        hit = self._cache.get(campaign_name)
        if hit is None:
            found = self._pattern.search(campaign_name.lower())
            hit = found.group(0) if found else _MISS
            if len(self._cache) >= _CAMPAIGN_CACHE_SIZE:
                self._cache.clear()
            self._cache[campaign_name] = hit
        return self.by_id.get(hit) if hit else None

    def resolve(self, campaign_name: str | None) -> Tracker | None:
        """Seed: tracker id in the campaign name, else the default tracker, else the most
        recently created tracker for the network ("NOTE" under Default Tracker)."""
        return self.in_campaign_name(campaign_name) or self.default or self.newest


_NO_TRACKERS: Final = AppNetworkTrackers(())


class Index:
    """Every configuration entity, plus the lookups the hot path needs."""

    def __init__(
        self,
        *,
        apps: Iterable[App] = (),
        accounts: Iterable[XAccount] = (),
        campaigns: Iterable[Campaign] = (),
        segments: Iterable[Segment] = (),
        trackers: Iterable[Tracker] = (),
        postbacks: Iterable[Postback] = (),
    ) -> None:
        # Dicts keep creation order: the store loads rows in insertion order.
        self.apps: dict[str, App] = {a.id: a for a in apps}
        self.accounts: dict[str, XAccount] = {a.id: a for a in accounts}
        self.campaigns: dict[str, Campaign] = {c.id: c for c in campaigns}
        self.segments: dict[str, Segment] = {s.id: s for s in segments}
        self.trackers: dict[str, Tracker] = {t.id: t for t in trackers}
        self.postbacks: dict[str, Postback] = {p.id: p for p in postbacks}

        grouped: dict[tuple[str, str], list[Tracker]] = {}
        for t in self.trackers.values():
            grouped.setdefault((t.app_id, t.network), []).append(t)
        self._trackers_of: dict[tuple[str, str], AppNetworkTrackers] = {
            key: AppNetworkTrackers(tuple(ts)) for key, ts in grouped.items()
        }
        self._postbacks_of: dict[tuple[str, str], tuple[Postback, ...]] = {}
        by_event: dict[tuple[str, str], list[Postback]] = {}
        for p in self.postbacks.values():
            by_event.setdefault((p.app_id, p.event_name), []).append(p)
        self._postbacks_of = {k: tuple(v) for k, v in by_event.items()}
        # Per snapshot, so a configuration change starts it afresh.
        self._windows: dict[tuple[str, str, str], tuple[int, int] | None] = {}
        self._tracker_accounts: dict[tuple[str, str], XAccount | None] = {}

    def trackers_of(self, app_id: str, network: str) -> AppNetworkTrackers:
        return self._trackers_of.get((app_id, network), _NO_TRACKERS)

    def postbacks_of(self, app_id: str, event_name: str) -> tuple[Postback, ...]:
        """Every postback (enabled or not) of the app for this event name."""
        return self._postbacks_of.get((app_id, event_name), ())

    def signing_account(self, postback: Postback) -> tuple[XAccount | None, str | None]:
        """The X account whose token signs this postback's claims, or the hold reason.

        PRODUCT.md 1, "Claim request": the postback's own `x_account_id` when set, with no
        fallback; else the earliest-created authenticated account named on the app's
        trackers for the network.
        """
        return self._signer(postback.app_id, postback.network, postback.x_account_id)

    def signer_of_delivery(
        self, postback_id: str, app_id: str, network: str, accepted_account_id: str | None
    ) -> tuple[XAccount | None, str | None]:
        """`signing_account` for an accepted delivery: with its postback as it is now (an
        edit may give it an account), else, the postback deleted, as it was accepted."""
        current = self.postbacks.get(postback_id)
        account_id = current.x_account_id if current is not None else accepted_account_id
        return self._signer(app_id, network, account_id)

    def _signer(
        self, app_id: str, network: str, account_id: str | None
    ) -> tuple[XAccount | None, str | None]:
        if account_id is not None:
            account = self.accounts.get(account_id)
            if account is None or not account.authenticated:
                return None, "account_unauthenticated"
            return account, None
        key = (app_id, network)
        if key not in self._tracker_accounts:
            # Once per snapshot, not per delivery: it scans every account.
            named: set[str] = set()
            for t in self.trackers_of(*key).trackers:
                named.update(t.x_account_ids)
            self._tracker_accounts[key] = next(
                (a for a in self.accounts.values() if a.id in named and a.authenticated), None
            )
        account = self._tracker_accounts[key]
        return (account, None) if account is not None else (None, "no_x_account")

    def claim_windows(self, app_id: str, network: str, event_name: str) -> tuple[int, int] | None:
        """(click_window, view_through_window) for a claim: the largest windows among the
        app's trackers for the network whose event-matching event is this event; None
        when there is no such tracker (both parameters are then left out)."""
        matching = [
            t
            for t in self.trackers_of(app_id, network).trackers
            if t.event_matching_event == event_name
        ]
        if not matching:
            return None
        return (
            max(t.post_engagement_window_days for t in matching),
            max(t.post_view_window_days for t in matching),
        )
