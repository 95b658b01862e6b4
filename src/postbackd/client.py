"""The daemon's HTTP API as the command line uses it (PRODUCT.md 3, "Client commands").

`DaemonClient` knows where the daemon is and which bearer token to send, and turns the
daemon's `{"error": {"code", "message", "field"}}` answers into a `DaemonError` that shows
its message and field. `upload_ndjson` is the client side of `POST /track/json`: the input
cut into NDJSON batches, a few of them in flight at once, each resent after a connection
error or a 5xx.

Resending is safe because every event sent carries an `event_id`, and a second event with
the same id is a duplicate, not a new event (PRODUCT.md 3, "Ingest"). A line without one
gets an id derived from its content alone (`derive_event_id`), so a resent batch, or the
same events sent again from a renamed file, another directory or a pipe, add no event twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

import aiohttp
import orjson

from postbackd.delivery.retry import RetryPolicy
from postbackd.errors import PostbackdError
from postbackd.token import read_token_file, token_path

DEFAULT_URL: Final = "http://127.0.0.1:8080"
TOKEN_ENV: Final = "POSTBACKD_API_TOKEN"
NDJSON: Final = "application/x-ndjson"
# Well under the daemon's default body limit (setting max_body_bytes, 10 MiB), whatever the
# line count; a batch goes over it by at most its last line.
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
SEND_RETRIES: Final = 5
# 0.5, 1, 2, 4, 8 s before jitter: about 15 s in all, time enough for a daemon to restart.
SEND_BACKOFF: Final = RetryPolicy(base_s=0.5, factor=2.0, cap_s=8.0)
# A full batch waits for its group commit to disk before the daemon answers.
TIMEOUT_S: Final = 60.0
_UTF8_BOM: Final = b"\xef\xbb\xbf"


class ClientError(PostbackdError):
    """The daemon could not be used as asked."""


class Unreachable(ClientError):
    """No HTTP answer: connection refused or reset, or none in time."""


class DaemonError(ClientError):
    """An HTTP answer refusing the request, with the daemon's own message and field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        at = f" (field {field})" if field else ""
        super().__init__(f"the daemon answered {status}: {message}{at}")
        self.status = status
        self.message = message
        self.field = field


def resolve_token(given: str | None, environ: Mapping[str, str], data_dir: Path) -> str:
    """The API token: `given` (--token), else POSTBACKD_API_TOKEN, else the token file the
    daemon writes into its data directory (PRODUCT.md 3)."""
    if given:
        return given
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV]
    path = token_path(data_dir)
    try:
        found = read_token_file(data_dir)
    except OSError as e:
        raise ClientError(f"cannot read the API token file {path}: {e.strerror}") from None
    if found is None:
        raise ClientError(
            f"no API token: give --token, set {TOKEN_ENV}, or point --data-dir at the "
            f"daemon's data directory (there is no token file {path})"
        )
    return found


def _base_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (reading it is what checks the port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"--url must be an http or https URL, got {url!r}")
    return url.rstrip("/")


def _reason(exc: Exception, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        errno = exc.os_error.errno
        return os.strerror(errno) if errno > 0 else str(exc.os_error.strerror)
    return str(exc) or type(exc).__name__


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _refusal(status: int, data: Mapping[str, Any]) -> DaemonError:
    error = data.get("error")
    if not isinstance(error, dict) or _text(error.get("message")) is None:
        return DaemonError(status, "an answer without an error message")
    return DaemonError(status, error["message"], _text(error.get("field")))


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int  # the item's position in its batch; blank lines take none
    error: str
    field: str | None


@dataclass(frozen=True, slots=True)
class IngestAnswer:
    accepted: int
    duplicates: int
    refused: tuple[Refusal, ...]


def _ingest_answer(status: int, data: Mapping[str, Any]) -> IngestAnswer:
    accepted, duplicates, rejected = (data.get(k) for k in ("accepted", "duplicates", "rejected"))
    if isinstance(accepted, int) and isinstance(duplicates, int) and isinstance(rejected, list):
        refused = tuple(
            Refusal(r["index"], _text(r.get("error")) or "refused", _text(r.get("field")))
            for r in rejected
            if isinstance(r, dict) and isinstance(r.get("index"), int)
        )
        if len(refused) == len(rejected):
            return IngestAnswer(accepted, duplicates, refused)
    raise DaemonError(status, "an ingest answer of an unknown shape")


class DaemonClient:
    """One session with one daemon: `async with DaemonClient(url, token) as client`."""

    def __init__(self, url: str, token: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.url = _base_url(url)
        self.reached = False  # whether the daemon has answered at least once
        self._token = token
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DaemonClient:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def ingest(self, ndjson: bytes) -> IngestAnswer:
        """`POST /track/json` of one NDJSON batch."""
        status, data = await self._call("POST", "/track/json", ndjson, NDJSON)
        # A 400 that lists its refused items is an answer too: none could be accepted.
        if status == 202 or (status == 400 and "rejected" in data):
            return _ingest_answer(status, data)
        raise _refusal(status, data)

    async def replay(self, ids: Sequence[int] | None) -> int:
        """`POST /api/v1/deliveries/replay` of the dead deliveries `ids`, or of every dead
        one when None; how many were re-queued."""
        body = orjson.dumps({"state": "dead"} if ids is None else {"ids": list(ids)})
        status, data = await self._call("POST", "/api/v1/deliveries/replay", body)
        replayed = data.get("replayed")
        if status != 200 or not isinstance(replayed, int):
            raise _refusal(status, data)
        return replayed

    async def _call(
        self, method: str, path: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        assert self._session is not None, "use DaemonClient in `async with`"
        try:
            async with self._session.request(
                method, self.url + path, data=body, headers={"Content-Type": content_type}
            ) as response:
                status, reason, answer = response.status, response.reason, await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Unreachable(
                f"cannot reach the daemon at {self.url}: {_reason(e, self._timeout_s)}"
            ) from None
        self.reached = True
        try:
            data = orjson.loads(answer)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise DaemonError(
                status, f"{reason}, not a JSON object: is {self.url} a postbackd daemon?"
            )
        return status, data


def derive_event_id(item: Mapping[str, object]) -> str:
    """The `event_id` of an input object that has none: the first 32 hex digits of the
    SHA-256 of the object in canonical JSON (keys sorted at every level, no blanks, numbers
    in their shortest form) without its `event_id` key.

    It depends on the event alone, not on where it came from: the same line from a file of
    any name or from standard input is the same event. Two identical lines are therefore
    one event; distinct events that look alike need their own `event_id`.
    """
    rest = {k: v for k, v in item.items() if k != "event_id"}
    return hashlib.sha256(orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def with_event_id(line: bytes) -> bytes:
    """`line` with a derived `event_id` when it is a JSON object without one."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line  # sent as it is: the daemon refuses it and says why
    if not isinstance(item, dict) or item.get("event_id") is not None:
        return line
    item["event_id"] = derive_event_id(item)
    return orjson.dumps(item)


@dataclass(frozen=True, slots=True)
class Batch:
    line_numbers: tuple[int, ...]  # the input line of each item, in order
    body: bytes
    input_bytes: int  # input consumed, blank lines included


class BatchReader:
    """NDJSON input cut into batches of at most `max_lines` events (blank lines skipped).

    Its reads block, so run `next_batch` in a thread; only one batch is held at a time.
    """

    def __init__(
        self, source: BinaryIO, *, max_lines: int, max_bytes: int = MAX_BATCH_BYTES
    ) -> None:
        self._source = source
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._line_number = 0

    def next_batch(self) -> Batch | None:
        """The next batch, or None at the end of the input."""
        numbers: list[int] = []
        items: list[bytes] = []
        size = consumed = 0
        while len(items) < self._max_lines and size < self._max_bytes:
            raw = self._source.readline()
            if not raw:
                break
            self._line_number += 1
            consumed += len(raw)
            if self._line_number == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM) :]  # some Windows tools start UTF-8 files with it
            line = raw.strip()
            if line:
                item = with_event_id(line)
                numbers.append(self._line_number)
                items.append(item)
                size += len(item) + 1
        if not items:
            return None
        return Batch(tuple(numbers), b"\n".join(items) + b"\n", consumed)


@dataclass(frozen=True, slots=True)
class LineRefusal:
    line_number: int
    error: str
    field: str | None


def _line_refusal(batch: Batch, refusal: Refusal) -> LineRefusal:
    if not 0 <= refusal.index < len(batch.line_numbers):
        raise ClientError(f"the daemon refused item {refusal.index} of a {len(batch.line_numbers)}"
                          " item batch")  # fmt: skip
    # The daemon counts lines within the batch ("line 3: malformed JSON ..."), which would
    # contradict the input's line number shown beside it.
    error = refusal.error.removeprefix(f"line {refusal.index + 1}: ")
    return LineRefusal(batch.line_numbers[refusal.index], error, refusal.field)


@dataclass(slots=True)
class IngestTotals:
    """What the daemon answered so far, with the refusals of the lowest line numbers."""

    keep_refusals: int
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    input_bytes: int = 0
    first_refusals: list[LineRefusal] = field(default_factory=list)

    def add(self, batch: Batch, answer: IngestAnswer) -> None:
        self.sent += len(batch.line_numbers)
        self.accepted += answer.accepted
        self.duplicates += answer.duplicates
        self.refused += len(answer.refused)
        self.input_bytes += batch.input_bytes
        # Batches finish out of order; keeping the lowest line numbers makes the list the
        # same on every run.
        self.first_refusals += (_line_refusal(batch, r) for r in answer.refused)
        self.first_refusals.sort(key=lambda r: r.line_number)
        del self.first_refusals[self.keep_refusals :]


async def _send_batch(client: DaemonClient, batch: Batch, rng: random.Random) -> IngestAnswer:
    retry = 0
    while True:
        try:
            return await client.ingest(batch.body)
        except ClientError as e:
            # A daemon that never answered is misnamed, not restarting: fail at once. One that
            # answered before is probably restarting; a 5xx is the daemon's own trouble.
            transient = (isinstance(e, Unreachable) and client.reached) or (
                isinstance(e, DaemonError) and e.status >= 500
            )
            retry += 1
            if not transient or retry > SEND_RETRIES:
                raise
        await asyncio.sleep(SEND_BACKOFF.delay_s(retry, rng))


async def upload_ndjson(
    client: DaemonClient,
    reader: BatchReader,
    *,
    concurrency: int,
    keep_refusals: int,
    on_batch: Callable[[IngestTotals], None] | None = None,
) -> IngestTotals:
    """Send every batch of `reader`, at most `concurrency` at a time (a batch being read
    counts), so memory holds that many batches whatever the input's size. The first error
    that retries do not cure ends the upload."""
    totals = IngestTotals(keep_refusals)
    slots = asyncio.Semaphore(concurrency)
    rng = random.Random()

    async def send(batch: Batch) -> None:
        try:
            answer = await _send_batch(client, batch, rng)
        finally:
            slots.release()
        totals.add(batch, answer)
        if on_batch is not None:
            on_batch(totals)

    try:
        async with asyncio.TaskGroup() as tasks:
            while True:
                await slots.acquire()
                batch = await asyncio.to_thread(reader.next_batch)
                if batch is None:
                    break
                tasks.create_task(send(batch))
    except* ClientError as failed:
        # Other batches failing the same way at once add nothing to the first error.
        raise failed.exceptions[0] from None
    return totals
