"""The configuration as a service: checks a change against the rules, commits it, and swaps
the lookup `Index` so the next event sees it (no restart)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from postbackd import ids, rules
from postbackd.errors import Conflict, Invalid, NotFound
from postbackd.fields import Form
from postbackd.index import Index
from postbackd.model import App, Campaign, Entity, Postback, Segment, Tracker, XAccount
from postbackd.store.base import Change, Op, Store

log = logging.getLogger(__name__)

Check = Callable[[Mapping[str, object], Index, Any], Entity]


@dataclass(frozen=True, slots=True)
class Kind:
    """One entity kind of the admin API: its path, its rules and its request fields."""

    name: str  # as in the API path
    cls: type[Entity]
    check: Check
    form: Form

    @property
    def label(self) -> str:  # as in messages
        return self.form.label

    def entities(self, index: Index) -> dict[str, Entity]:
        return getattr(index, _INDEX_ATTR[self.cls])  # type: ignore[no-any-return]


_INDEX_ATTR: Final[dict[type[Entity], str]] = {
    App: "apps",
    XAccount: "accounts",
    Campaign: "campaigns",
    Segment: "segments",
    Tracker: "trackers",
    Postback: "postbacks",
}

KINDS: Final[dict[str, Kind]] = {
    k.name: k
    for k in (
        Kind("apps", App, rules.check_app, rules.APP),
        Kind("x-accounts", XAccount, rules.check_account, rules.X_ACCOUNT),
        Kind("campaigns", Campaign, rules.check_campaign, rules.CAMPAIGN),
        Kind("segments", Segment, rules.check_segment, rules.SEGMENT),
        Kind("trackers", Tracker, rules.check_tracker, rules.TRACKER),
        Kind("postbacks", Postback, rules.check_postback, rules.POSTBACK),
    )
}


def _fields(entity: Entity) -> dict[str, object]:
    """Every field, secrets included, in the JSON form the rules read."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(entity):
        value = getattr(entity, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True, slots=True)
class Saved:
    entity: Entity
    # A tracker made default takes the flag from this one (PRODUCT.md: "the response names it").
    replaced_default: Tracker | None = None


Listener = Callable[[Index], None]


class Catalog:
    def __init__(self, store: Store, index: Index, version: int = 0) -> None:
        self._store = store
        self.index = index
        self._version = version  # the store's configuration version `index` reflects
        # One writer at a time: each change is checked against the index it will replace.
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._reloads: set[asyncio.Task[None]] = set()
        store.watch_config(self._changed_elsewhere)

    @classmethod
    async def load(cls, store: Store) -> Catalog:
        """The stored configuration; X account tokens brought to the first key of
        `secret_key` first (SecretKeyError when the keys cannot open them)."""
        await store.seal_tokens()
        version = await store.config_version()
        return cls(store, await store.load_index(), version)

    def _changed_elsewhere(self, version: int) -> None:
        """Another daemon of a shared store changed the configuration (PRODUCT.md 5): the
        next event here sees it too, with no restart."""
        if version != self._version:
            task = asyncio.get_running_loop().create_task(self.reload(), name="config-reload")
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _apply(self, changes: list[Change]) -> None:
        """Commit the changes and swap the index (the caller holds the lock)."""
        version = await self._store.apply(changes)
        # Not the next version: another daemon's change came in between, which the index
        # does not have yet; it is read again once this change is done.
        missed = version != self._version + 1
        self._version = -1 if missed else version
        self._swap(_with(self.index, changes))
        if missed:
            self._changed_elsewhere(version)

    async def reload(self) -> None:
        """Read the configuration again when the store's version is not the index's."""
        async with self._lock:
            version = await self._store.config_version()
            if version == self._version:
                return
            index = await self._store.load_index()
            self._version = version
            self._swap(index)
        log.info("configuration changed by another daemon: reloaded (version %d)", version)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with the new index after every committed change."""
        self._listeners.append(listener)

    def get(self, kind: Kind, entity_id: str) -> Entity:
        entity = kind.entities(self.index).get(entity_id)
        if entity is None:
            raise NotFound(f"{kind.label} {entity_id!r} does not exist", field="id")
        return entity

    async def create(self, kind: Kind, data: Mapping[str, object]) -> Saved:
        kind.form.check_names(data)
        async with self._lock:
            index = self.index
            changes: list[Change] = []
            if kind.cls is Tracker and "segment_id" not in data:
                data, changes = self._segment_on_the_fly(data, index)
                index = _with(index, changes)
            entity = kind.check(data, index, None)
            return await self._commit(kind, entity, changes, "insert", index)

    async def update(self, kind: Kind, entity_id: str, data: Mapping[str, object]) -> Saved:
        kind.form.check_names(data)
        async with self._lock:
            existing = self.get(kind, entity_id)
            current = _fields(existing)
            for name in sorted(kind.form.immutable):
                if name in data and data[name] != current.get(name):
                    raise Invalid(
                        f"{name} cannot change once the {kind.label} exists",
                        field=name,
                        code="immutable",
                    )
            entity = kind.check({**current, **data}, self.index, existing)
            followers = _bundle_followers(existing, entity, self.index)
            return await self._commit(kind, entity, followers, "update", self.index)

    async def delete(self, kind: Kind, entity_id: str) -> None:
        async with self._lock:
            entity = self.get(kind, entity_id)
            changes = self._delete_changes(entity)
            await self._apply(changes)
        log.info("%s %s deleted", kind.label, entity_id)

    async def record_authentication(
        self, account_id: str, ok: bool, error: str | None, *, sent_with: XAccount | None = None
    ) -> XAccount | None:
        """Keep the result of a signed call to X with this account's credentials.

        `sent_with`: the account as the call used it. When the account has changed since
        (new credentials, or authenticated again after the call left), X's answer is about
        credentials it no longer has: nothing is recorded, and None is returned. A failure
        already recorded for the same credentials is not written again.
        """
        async with self._lock:
            account = self.index.accounts.get(account_id)
            if account is None:
                raise NotFound(f"X account {account_id!r} does not exist", field="id")
            if sent_with is not None:
                if _credentials(account) != _credentials(sent_with):
                    return None
                if not ok and not account.authenticated:
                    return account
            updated = dataclasses.replace(
                account,
                authenticated=ok,
                authenticated_at=ids.now_iso() if ok else account.authenticated_at,
                last_auth_error=None if ok else error,
            )
            changes: list[Change] = [("update", updated)]
            await self._apply(changes)
        return updated

    async def _commit(
        self,
        kind: Kind,
        entity: Entity,
        changes: list[Change],
        op: Op,
        index: Index,
    ) -> Saved:
        *changes, (_, entity) = _in_creation_order([*changes, (op, entity)], self.index)
        replaced = rules.replaced_default(entity, index) if isinstance(entity, Tracker) else None
        if replaced is not None:
            # The old default loses its flag first: one default per (app, network).
            changes.append(("update", dataclasses.replace(replaced, default=False)))
        changes.append((op, entity))
        await self._apply(changes)
        log.info("%s %s %s", kind.label, entity.id, "created" if op == "insert" else "updated")
        if replaced is not None:
            log.info("tracker %s is no longer the default, %s is", replaced.id, entity.id)
        return Saved(entity, replaced)

    def _swap(self, index: Index) -> None:
        self.index = index
        for listener in self._listeners:
            listener(index)

    def _segment_on_the_fly(
        self, data: Mapping[str, object], index: Index
    ) -> tuple[dict[str, object], list[Change]]:
        """Seed: "Select the desired Campaign & Segment, or create new ones"."""
        form = rules.TRACKER
        campaign_name = form.text("campaign_name").read_optional(data)
        if campaign_name is None:
            raise Invalid(
                "segment_id is required (or campaign_name and segment_name to create them)",
                field="segment_id",
                code="required",
            )
        app_id = form.text("app_id").read(data)
        segment_name = form.text("segment_name").read_optional(data) or "Default"
        changes: list[Change] = []
        campaign = next(
            (c for c in index.campaigns.values()
             if c.app_id == app_id and c.name.lower() == campaign_name.lower()),
            None,
        )  # fmt: skip
        if campaign is None:
            campaign = rules.check_campaign({"app_id": app_id, "name": campaign_name}, index, None)
            changes.append(("insert", campaign))
        segment = next(
            (s for s in index.segments.values()
             if s.campaign_id == campaign.id and s.name.lower() == segment_name.lower()),
            None,
        )  # fmt: skip
        if segment is None:
            segment = Segment(
                id=ids.kochava_id(segment_name, ids.ENTITY_HEX),
                campaign_id=campaign.id,
                name=segment_name,
                created_at=ids.now_iso(),
            )
            changes.append(("insert", segment))
        rest = {k: v for k, v in data.items() if k not in ("campaign_name", "segment_name")}
        return {**rest, "segment_id": segment.id}, changes

    def _delete_changes(self, entity: Entity) -> list[Change]:
        index = self.index
        users: list[str] = []
        extra: list[Change] = []
        if isinstance(entity, App):
            users = [c.id for c in index.campaigns.values() if c.app_id == entity.id]
            users += [p.id for p in index.postbacks.values() if p.app_id == entity.id]
        elif isinstance(entity, XAccount):
            users = [t.id for t in index.trackers.values() if entity.id in t.x_account_ids]
            users += [p.id for p in index.postbacks.values() if p.x_account_id == entity.id]
        elif isinstance(entity, Campaign):
            segments = [s for s in index.segments.values() if s.campaign_id == entity.id]
            ids_ = {s.id for s in segments}
            users = [t.id for t in index.trackers.values() if t.segment_id in ids_]
            extra = [("delete", s) for s in segments]  # empty segments go with their campaign
        elif isinstance(entity, Segment):
            users = [t.id for t in index.trackers.values() if t.segment_id == entity.id]
        if users:
            shown = ", ".join(users[:5]) + (" ..." if len(users) > 5 else "")
            raise Conflict(
                f"still in use by {len(users)} other object(s): {shown}; delete those first",
                field="id",
                code="in_use",
            )
        return [*extra, ("delete", entity)]


def _credentials(account: XAccount) -> tuple[str, str, str | None]:
    """What an answer of X to a signed call is about: the tokens, as of one authentication."""
    return account.access_token, account.access_token_secret, account.authenticated_at


def _bundle_followers(existing: Entity, entity: Entity, index: Index) -> list[Change]:
    """The trackers and postbacks of an app whose bundle id follows the app's, carried to
    its new value in the same transaction (PRODUCT.md 1: a tracker's `bundle_id` and a
    postback's `x_app_id` taken from the app "follow the app's when it changes").

    A value equal to the app's old bundle id is taken as following it: that is what a
    default looks like, and one given equal to the app's is the same id of the same app.
    A value set to something else stays as it was.
    """
    if not isinstance(existing, App) or not isinstance(entity, App):
        return []
    old, new = existing.bundle_id, entity.bundle_id
    if old is None or new is None or old == new:
        return []
    changes: list[Change] = [
        ("update", dataclasses.replace(t, bundle_id=new))
        for t in index.trackers.values()
        if t.app_id == entity.id and t.bundle_id == old
    ]
    changes += [
        ("update", dataclasses.replace(p, x_app_id=new))
        for p in index.postbacks.values()
        if p.app_id == entity.id and p.x_app_id == old
    ]
    if changes:
        log.info("app %s bundle_id changed: %d tracker(s) and postback(s) follow it",
                 entity.id, len(changes))  # fmt: skip
    return changes


def _later_ms(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return ids.iso_ms(int(moment.timestamp() * 1000) + 1)


def _in_creation_order(changes: list[Change], index: Index) -> list[Change]:
    """The inserts with a `created_at` later than that of every object of their kind.

    Configuration lists are ordered by (`created_at`, `id`) and page with a cursor on that
    key (api/paging.py); a new object must sort after every existing one so that paging
    while the list grows skips nothing. The wall clock may step back (NTP) or give the same
    millisecond twice: then the new object takes the next millisecond.
    """
    latest: dict[type[Entity], str] = {}
    out: list[Change] = []
    for op, entity in changes:
        if op == "insert":
            cls = type(entity)
            if cls not in latest:
                existing = getattr(index, _INDEX_ATTR[cls]).values()
                latest[cls] = max((e.created_at for e in existing), default="")
            if entity.created_at <= latest[cls]:
                entity = dataclasses.replace(entity, created_at=_later_ms(latest[cls]))
            latest[cls] = entity.created_at
        out.append((op, entity))
    return out


def _with(index: Index, changes: list[Change]) -> Index:
    """A new index with the changes applied (creation order kept)."""
    tables: dict[type[Entity], dict[str, Entity]] = {
        cls: dict(getattr(index, attr)) for cls, attr in _INDEX_ATTR.items()
    }
    for op, entity in changes:
        table = tables[type(entity)]
        if op == "delete":
            table.pop(entity.id, None)
        else:
            table[entity.id] = entity
    return Index(
        apps=tables[App].values(),  # type: ignore[arg-type]
        accounts=tables[XAccount].values(),  # type: ignore[arg-type]
        campaigns=tables[Campaign].values(),  # type: ignore[arg-type]
        segments=tables[Segment].values(),  # type: ignore[arg-type]
        trackers=tables[Tracker].values(),  # type: ignore[arg-type]
        postbacks=tables[Postback].values(),  # type: ignore[arg-type]
    )
