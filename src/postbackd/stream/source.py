"""The Redis Stream event source: one daemon, one member of a consumer group (PRODUCT.md 5).

An entry's `event` field holds one Kochava-shaped JSON event, as one item of
`POST /track/json`, and goes through the same admission (`postbackd.admission`). Each batch
of entries goes:

    XREADGROUP  (own pending entries first, from ID 0; then new ones, ">")
      -> admit the valid events: committed with their deliveries
      -> MULTI: XADD each invalid entry to the dead-letter stream; XACK the batch; EXEC

so an entry is acknowledged only once its event is durable. At least once: a crash between
the commit and the XACK reads the entry again, and its event is then a duplicate (event ids
are given or derived from the content), which is harmless. An invalid entry is moved and
acknowledged in one transaction, so it is never retried forever nor moved twice.

A store that refuses the commit (store_unavailable) leaves the batch pending: after a pause
it is read again from ID 0. Redis lost: one warning a minute, reconnection with backoff, and
the pending entries first again. Entries a dead member left pending for `claim_idle_s` are
taken over with XAUTOCLAIM; a member silent for ten times that, with nothing pending (a
daemon killed, or one whose entries were taken over), is removed from the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from postbackd.admission import UNKNOWN_APP, Admission
from postbackd.errors import PostbackdError, StoreUnavailable
from postbackd.logs import RateLimitedLog
from postbackd.metrics import STREAM_BACKLOG_STATES, STREAM_DEAD_LETTER_REASONS, Metrics

from .config import StreamConfig

log = logging.getLogger(__name__)

# The field of an entry that holds the event (PRODUCT.md 5).
EVENT_FIELD: Final = b"event"
_BATCH: Final = 500
# XREADGROUP waits this long for new entries; below the socket timeout, so a wait is never
# taken for a dead connection.
_BLOCK_MS: Final = 1_000
_SOCKET_TIMEOUT_S: Final = 10.0
_CONNECT_TIMEOUT_S: Final = 5.0
_RETRY_MIN_S: Final = 0.1
_RETRY_MAX_S: Final = 5.0
_BACKLOG_EVERY_S: Final = 5.0
_LEAVE_TIMEOUT_S: Final = 2.0
# A member silent for this many times `claim_idle_s` is gone (a live one reads at least every
# few seconds); with nothing pending, removing it loses nothing.
_GONE_AFTER_IDLE_TIMES: Final = 10
# Atomic, so that a member cannot read (and get pending entries) between the check and its
# removal, which would drop those entries from the group. KEYS: the stream. ARGV: the group,
# the least idle time in ms, this member's own name. Returns the names removed.
_FORGET_GONE_MEMBERS: Final = """
local removed = {}
for _, member in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local m = {}
  for i = 1, #member, 2 do m[member[i]] = member[i + 1] end
  if m['name'] ~= ARGV[3] and m['pending'] == 0 and m['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], m['name'])
    table.insert(removed, m['name'])
  end
end
return removed
"""

Entry = tuple[bytes, dict[bytes, bytes]]


class StreamUnreachable(PostbackdError):
    """The event stream could not be reached or joined at start."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: bytes
    fields: dict[bytes, bytes]
    reason: str  # the metric's label
    message: str
    field: str


class StreamSource:
    def __init__(
        self,
        config: StreamConfig,
        admission: Admission,
        metrics: Metrics,
        *,
        batch: int = _BATCH,
        block_ms: int = _BLOCK_MS,
    ) -> None:
        self.config = config
        self._admission = admission
        self._batch = batch
        self._block_ms = block_ms
        # No retry inside redis-py: a lost connection ends the session, and the next one
        # starts with this member's pending entries.
        self._redis: Redis = Redis.from_url(
            config.redis_url,
            socket_timeout=_SOCKET_TIMEOUT_S,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._read = metrics.stream_read
        self._acked = metrics.stream_acked
        self._dead = {r: metrics.stream_dead_lettered.labels(r) for r in STREAM_DEAD_LETTER_REASONS}
        self._backlog = {s: metrics.stream_backlog.labels(s) for s in STREAM_BACKLOG_STATES}
        self._warn = RateLimitedLog(log)
        self._forget_gone = self._redis.register_script(_FORGET_GONE_MEMBERS)
        # Claims run every half idle time, so a dead member's entries wait at most 1.5 times it.
        self._claim_every_s = min(max(config.claim_idle_s / 2, 0.1), 30.0)
        self._next_claim = 0.0
        self._next_backlog = 0.0
        self._retry_s = _RETRY_MIN_S
        self._paused = False
        self._joined = False  # a member of the group: it has something to leave at close

    def describe(self) -> str:
        c = self.config
        return f"stream {c.stream} of {c.shown}, group {c.group} as consumer {c.consumer}"

    async def connect(self) -> None:
        """Reach Redis and join the group at start; `StreamUnreachable` in one line naming
        the URL without its password."""
        try:
            await self._join()
            await self._count_backlog()
        except (RedisError, OSError) as exc:
            raise StreamUnreachable(
                f"cannot read the event stream at {self.config.shown}: {_reason(exc)}"
            ) from None
        self._joined = True
        log.info("reading events from %s", self.describe())

    async def close(self) -> None:
        """After the reader has stopped: leave the group when nothing of this member is
        pending, so that ended daemons (a new consumer name each run) do not pile up in it.
        With entries pending it stays, and another member takes them over."""
        c = self.config
        try:
            if not self._joined:
                return
            # Bounded: a Redis that is gone must not hold up the daemon's shutdown.
            async with asyncio.timeout(_LEAVE_TIMEOUT_S):
                mine: Any = await self._redis.xpending_range(
                    c.stream, c.group, min="-", max="+", count=1, consumername=c.consumer
                )
                if not mine:
                    await self._redis.xgroup_delconsumer(c.stream, c.group, c.consumer)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("event stream %s: consumer %s left as it is (%s)", c.shown, c.consumer,
                     _reason(exc))  # fmt: skip
        finally:
            await self._redis.aclose()

    async def run(self) -> None:
        """Read until cancelled; failures of Redis or of the store pause reading, never end it."""
        while True:
            try:
                await self._join()
                if self._paused:
                    log.info("event stream %s reachable again: reading resumes", self.config.shown)
                    self._paused = False
                    self._retry_s = _RETRY_MIN_S
                await self._consume()
            except (RedisError, OSError) as exc:
                self._paused = True
                self._warn.warning(
                    "stream-lost",
                    f"event stream {self.config.shown} failed ({_reason(exc)}): reading paused, "
                    "retrying; entries wait in the stream",
                )
            except StoreUnavailable as exc:
                # Not acknowledged: the batch stays pending and is read again from ID 0.
                self._warn.warning(
                    "stream-store",
                    f"event stream entries not acknowledged, the store refused them: {exc}; "
                    "they are read again",
                )
            await asyncio.sleep(self._retry_s)
            self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)

    async def _join(self) -> None:
        c = self.config
        try:
            # From ID 0: what producers added before the group existed is read too.
            await self._redis.xgroup_create(c.stream, c.group, id="0", mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def _consume(self) -> None:
        # This member's pending entries first: read before a restart or a lost connection,
        # or refused by the store. Each batch is acknowledged before the next read, so
        # reading from ID 0 again goes on where the previous batch ended.
        start = "0"
        while True:
            now = time.monotonic()
            if now >= self._next_backlog:
                self._next_backlog = now + _BACKLOG_EVERY_S
                await self._count_backlog()
            if now >= self._next_claim:
                self._next_claim = now + self._claim_every_s
                await self._claim_idle()
            if start == "0":
                entries = await self._read_group("0", block_ms=None)
                if not entries:
                    start = ">"
                    continue
            else:
                entries = await self._read_group(">", block_ms=self._block_ms)
            if entries:
                await self._process(entries)

    async def _read_group(self, start: str, block_ms: int | None) -> list[Entry]:
        c = self.config
        reply: Any = await self._redis.xreadgroup(
            c.group, c.consumer, {c.stream: start}, count=self._batch, block=block_ms
        )
        # RESP2: [[stream, [(id, fields), ...]]]; None when the wait ended with nothing.
        return list(reply[0][1]) if reply else []

    async def _claim_idle(self) -> None:
        """Take over the entries a member left pending for `claim_idle_s` (it died), and
        remove the members gone long since with nothing pending."""
        c = self.config
        idle_ms = int(c.claim_idle_s * 1000)
        cursor: bytes | str = "0-0"
        while True:
            reply: Any = await self._redis.xautoclaim(
                c.stream, c.group, c.consumer, idle_ms, start_id=cursor, count=self._batch
            )
            cursor, claimed = reply[0], [e for e in reply[1] if e[0] is not None]
            if claimed:
                log.info(
                    "took over %d event stream entries pending for more than %g s",
                    len(claimed),
                    c.claim_idle_s,
                )
                await self._process(claimed)
            if cursor in (b"0-0", "0-0"):
                break
        gone_ms = idle_ms * _GONE_AFTER_IDLE_TIMES
        removed: Any = await self._forget_gone(keys=[c.stream], args=[c.group, gone_ms, c.consumer])
        if removed:
            log.info(
                "event stream: removed %d member(s) of group %s silent for over %g s with "
                "nothing pending: %s",
                len(removed),
                c.group,
                gone_ms / 1000,
                ", ".join(name.decode(errors="replace") for name in removed),
            )

    async def _process(self, entries: Sequence[Entry]) -> None:
        self._read.inc(len(entries))
        ids: list[bytes] = []
        items: list[object] = []
        owners: list[Entry] = []
        dead: list[DeadLetter] = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:
                continue  # deleted from the stream while pending: only acknowledged
            raw = fields.get(EVENT_FIELD)
            if raw is None:
                dead.append(DeadLetter(entry_id, fields, "no_event", "the entry has no event "
                                       "field", "event"))  # fmt: skip
                continue
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                dead.append(DeadLetter(entry_id, fields, "not_json",
                                       f"event is not JSON: {exc}", "event"))  # fmt: skip
                continue
            items.append(item)
            owners.append((entry_id, fields))
        if items:
            # Raises StoreUnavailable when the store refuses: nothing is acknowledged.
            admitted = await self._admission.admit(items)
            for r in admitted.rejected:
                entry_id, fields = owners[r.index]
                reason = "unknown_app" if r.code == UNKNOWN_APP else "invalid"
                dead.append(DeadLetter(entry_id, fields, reason, r.error, r.field or "event"))
        c = self.config
        async with self._redis.pipeline(transaction=True) as pipe:
            for d in dead:
                # The entry as it was, and why it was moved (PRODUCT.md 5).
                moved: dict[FieldT, EncodableT] = {k: v for k, v in d.fields.items()}
                moved |= {b"reason": d.message, b"field": d.field, b"entry_id": d.entry_id}
                # Exact trimming to the newest `dead_letter_maxlen`: dead letters are few,
                # and an operator reads the cap as a count.
                pipe.xadd(c.dead_letter, moved, maxlen=c.dead_letter_maxlen, approximate=False)
            pipe.xack(c.stream, c.group, *ids)
            await pipe.execute()
        self._acked.inc(len(ids))
        for d in dead:
            self._dead[d.reason].inc()
        self._retry_s = _RETRY_MIN_S

    async def _count_backlog(self) -> None:
        c = self.config
        summary: Any = await self._redis.xpending(c.stream, c.group)
        self._backlog["pending"].set(summary["pending"])
        groups: Any = await self._redis.xinfo_groups(c.stream)
        for group in groups:
            # `lag` is Redis 7's; None when Redis cannot tell (entries deleted meanwhile).
            if group["name"] == c.group.encode() and group.get("lag") is not None:
                self._backlog["lag"].set(group["lag"])


def _reason(exc: BaseException) -> str:
    # redis-py's own words ("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    # which name the host and port, never the password; the first line only.
    return (str(exc) or type(exc).__name__).splitlines()[0]
