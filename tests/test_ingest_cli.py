"""`postbackd ingest` and `postbackd replay` as subprocesses against the real daemon (in this
process, on a loopback port) and the simulated X; the batching and resending underneath
against a small stand-in daemon."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from conftest import API_TOKEN, MockX, Running, seed_config
from postbackd import client as client_module
from postbackd.client import (
    Batch,
    BatchReader,
    DaemonClient,
    DaemonError,
    IngestAnswer,
    IngestTotals,
    LineRefusal,
    Refusal,
    Unreachable,
    derive_event_id,
    upload_ndjson,
)
from postbackd.delivery.retry import RetryPolicy

POSTBACKD = str(Path(sys.executable).with_name("postbackd"))
SUMMARY = re.compile(
    r"^(\d+) sent, (\d+) accepted, (\d+) duplicates, (\d+) refused in [\d.]+ s \(\d+ events/s\)$"
)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def summary(self) -> tuple[int, ...]:
        """(sent, accepted, duplicates, refused) of the summary, the last line of stdout."""
        found = SUMMARY.fullmatch(self.out.rstrip("\n").rpartition("\n")[2])
        assert found, self
        return tuple(int(n) for n in found.groups())


async def postbackd(
    *args: str, cwd: Path, stdin: bytes | None = None, timeout_s: float = 60.0, **env: str
) -> Result:
    """The real `postbackd` console script; the test's event loop keeps serving meanwhile."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACKD_")}
    proc = await asyncio.create_subprocess_exec(
        POSTBACKD, *args, cwd=cwd, env=environ | env,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def event(app_id: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "action": "event",
        "kochava_app_id": app_id,
        "kochava_device_id": f"KD{n:06d}",
        "device_ids": {"idfa": f"{n:08x}-0000-4000-8000-00000000abcd"},
        "data": {"event_name": "purchase", "event_data": {"sum": 4.99, "currency": "USD"}},
        **extra,
    }


def ndjson(*items: object) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout_s: float = 20.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while not (value := await check()):
            await asyncio.sleep(0.05)
    return value


@dataclass
class Setup:
    running: Running
    app_id: str
    url: str


@pytest.fixture
async def setup(running: Running) -> Setup:
    seeded = await seed_config(running.api)
    return Setup(running, seeded["app"]["id"], f"http://127.0.0.1:{running.daemon.port}")


async def test_ingest_reports_refused_lines_by_their_line_number(
    setup: Setup, tmp_path: Path
) -> None:
    good = [orjson.dumps(event(setup.app_id, n)) for n in range(30)]
    given = orjson.dumps(event(setup.app_id, 31, event_id="given-31"))
    unknown_app = orjson.dumps(event("konotanapp", 99))
    no_name = orjson.dumps({**event(setup.app_id, 32), "data": {}})
    lines = [*good[:10], b"", b"not json {", *good[10:20], b"   ", unknown_app, given,
             *good[20:], no_name]  # fmt: skip
    line_of = {line: n for n, line in enumerate(lines, start=1)}
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")

    result = await postbackd("ingest", str(path), "--batch-size", "4", "--url", setup.url,
                             "--token", API_TOKEN, cwd=tmp_path)  # fmt: skip

    assert result.code == 1, result
    assert result.summary() == (34, 31, 0, 3)
    malformed, *others = result.err.splitlines()
    # The daemon's reason, under the input's line number (not the line within the batch).
    assert re.fullmatch(
        rf"line {line_of[b'not json {']}: refused: malformed JSON: [^:]+", malformed
    )
    assert others == [
        f"line {line_of[unknown_app]}: refused: kochava_app_id 'konotanapp' is not a known app "
        "(field kochava_app_id)",
        f"line {line_of[no_name]}: refused: data.event_name is required (field data.event_name)",
    ]
    # Each accepted line went in under its own id or the one derived by the documented rule.
    expected = {"given-31"} | {derive_event_id(orjson.loads(g)) for g in good}
    canonical = orjson.dumps(orjson.loads(good[0]), option=orjson.OPT_SORT_KEYS)
    assert derive_event_id(orjson.loads(good[0])) == hashlib.sha256(canonical).hexdigest()[:32]
    deliveries = await setup.running.api.ok("GET", "/api/v1/deliveries?limit=1000")
    assert {d["event_id"] for d in deliveries["items"]} == expected
    assert deliveries["count"] == 31


async def test_only_the_first_20_refusals_are_listed(setup: Setup, tmp_path: Path) -> None:
    # Batches made only of refused lines answer 400 with their refusals: counted all the same.
    (tmp_path / "bad.ndjson").write_bytes(b"".join(b"{oops %d\n" % n for n in range(25)))
    result = await postbackd("ingest", "bad.ndjson", "--batch-size", "2", "--url", setup.url,
                             "--token", API_TOKEN, cwd=tmp_path)  # fmt: skip
    assert (result.code, result.summary()) == (1, (25, 0, 0, 25)), result
    listed = result.err.splitlines()
    assert [line.partition(":")[0] for line in listed[:-1]] == [f"line {n}" for n in range(1, 21)]
    assert listed[-1] == "... and 5 more refused lines"


async def test_sending_the_same_events_again_adds_nothing_however_they_arrive(
    setup: Setup, tmp_path: Path
) -> None:
    body = ndjson(*(event(setup.app_id, n) for n in range(25)))
    (tmp_path / "events.ndjson").write_bytes(body)
    args = ("--url", setup.url, "--token", API_TOKEN, "--batch-size", "10")

    first = await postbackd("ingest", "events.ndjson", *args, cwd=tmp_path)
    again = await postbackd("ingest", "events.ndjson", *args, cwd=tmp_path)
    # The id derives from the line's content alone: the file renamed and moved, its lines
    # piped through standard input, reordered, re-spaced and with CRLF line ends are the
    # same events.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "events.ndjson").rename(tmp_path / "elsewhere" / "renamed.json")
    renamed = await postbackd("ingest", "elsewhere/renamed.json", *args, cwd=tmp_path)
    piped = await postbackd("ingest", "-", *args, cwd=tmp_path, stdin=body)
    reshaped = b"\n" + b"\r\n".join(
        orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).replace(b"\n", b" ")
        for line in reversed(body.splitlines())
    )
    rewritten = await postbackd("ingest", "-", *args, cwd=tmp_path, stdin=reshaped)

    assert (first.code, first.summary()) == (0, (25, 25, 0, 0)), first
    for resent in (again, renamed, piped, rewritten):
        assert (resent.code, resent.summary()) == (0, (25, 0, 25, 0)), resent
    deliveries = await setup.running.api.ok("GET", "/api/v1/deliveries?limit=1000")
    assert deliveries["count"] == 25


async def test_standard_input_is_read_to_its_end(setup: Setup, tmp_path: Path) -> None:
    body = b"\n" + ndjson(*(event(setup.app_id, n) for n in range(7)))
    result = await postbackd("ingest", "-", "--url", setup.url, "--batch-size", "3", cwd=tmp_path,
                             stdin=body, POSTBACKD_API_TOKEN=API_TOKEN)  # fmt: skip
    assert (result.code, result.summary()) == (0, (7, 7, 0, 0)), result
    deliveries = await setup.running.api.ok("GET", "/api/v1/deliveries")
    lines = body.split(b"\n")
    assert {d["event_id"] for d in deliveries["items"]} == {
        derive_event_id(orjson.loads(lines[n - 1])) for n in range(2, 9)
    }


async def test_token_from_the_data_dir_and_a_wrong_token(setup: Setup, tmp_path: Path) -> None:
    # replay, as the daemon checks the token on /api calls (ingest sends it all the same).
    (tmp_path / "postbackd-data").mkdir()
    (tmp_path / "postbackd-data" / "api-token").write_text(API_TOKEN + "\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "api-token").write_text("wrong-token\n")
    replay = ("replay", "--all-dead", "--url", setup.url)

    by_default_dir = await postbackd(*replay, cwd=tmp_path)
    by_env_dir = await postbackd(*replay, cwd=tmp_path, POSTBACKD_DATA_DIR="other")
    by_flag_dir = await postbackd(*replay, "--data-dir", "postbackd-data", cwd=tmp_path,
                                  POSTBACKD_DATA_DIR="other")  # fmt: skip
    flag_wins = await postbackd(*replay, "--token", API_TOKEN, cwd=tmp_path,
                                POSTBACKD_API_TOKEN="wrong-token")  # fmt: skip
    env_wins = await postbackd(*replay, cwd=tmp_path, POSTBACKD_API_TOKEN="wrong-token")
    none = await postbackd(*replay, cwd=tmp_path / "other", POSTBACKD_DATA_DIR="nowhere")

    for ok in (by_default_dir, by_flag_dir, flag_wins):
        assert (ok.code, ok.out) == (0, "0 dead deliveries re-queued\n"), ok
    for wrong in (by_env_dir, env_wins):
        assert (wrong.code, wrong.out) == (2, ""), wrong
        assert wrong.err == (
            "postbackd: error: the daemon answered 401: missing or wrong bearer token "
            "(Authorization: Bearer <token>) (field Authorization)\n"
        )
    assert none.code == 2
    assert none.err.startswith("postbackd: error: no API token: give --token, set "
                               "POSTBACKD_API_TOKEN, or point --data-dir at")  # fmt: skip


async def test_unreachable_daemon_exits_2_at_once(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "events.ndjson").write_bytes(ndjson({"event_name": "x"}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await postbackd("ingest", "events.ndjson", "--url", url, "--token", "t", cwd=tmp_path)
    assert result.code == 2
    assert result.err == f"postbackd: error: cannot reach the daemon at {url}: Connection refused\n"
    # A daemon that never answered is not retried: nothing suggests it is restarting.
    assert loop.time() - started < 5


async def test_replay_requeues_dead_deliveries(setup: Setup, mock_x: MockX, tmp_path: Path) -> None:
    api = setup.running.api
    postbacks = await api.ok("GET", "/api/v1/postbacks")
    await api.ok("PATCH", f"/api/v1/postbacks/{postbacks['items'][0]['id']}",
                 json={"retry_attempts": 0})  # fmt: skip
    await mock_x.call("PATCH", "/_mock/config", json={"error_rate": 1.0})
    (tmp_path / "events.ndjson").write_bytes(ndjson(*(event(setup.app_id, n) for n in (1, 2))))
    client = ("--url", setup.url, "--token", API_TOKEN)
    sent = await postbackd("ingest", "events.ndjson", *client, cwd=tmp_path)
    assert sent.code == 0, sent

    async def deliveries(state: str, count: int) -> list[dict[str, Any]] | None:
        found = await api.ok("GET", f"/api/v1/deliveries?state={state}")
        return found["items"] if found["count"] == count else None

    first, second = sorted(d["id"] for d in await wait_for(lambda: deliveries("dead", 2)))
    await mock_x.call("PATCH", "/_mock/config", json={"error_rate": 0.0})

    one = await postbackd("replay", "--id", str(first), "--id", "999999", *client, cwd=tmp_path)
    assert (one.code, one.out) == (0, "1 dead delivery re-queued; 1 of the given ids are not "
                                      "dead deliveries\n"), one  # fmt: skip
    delivered = await wait_for(lambda: deliveries("delivered", 1))
    assert delivered[0]["id"] == first
    rest = await postbackd("replay", "--all-dead", *client, cwd=tmp_path)
    assert (rest.code, rest.out) == (0, "1 dead delivery re-queued\n"), rest
    delivered = await wait_for(lambda: deliveries("delivered", 2))
    assert sorted(d["id"] for d in delivered) == [first, second]
    none = await postbackd("replay", "--all-dead", *client, cwd=tmp_path)
    assert (none.code, none.out) == (0, "0 dead deliveries re-queued\n"), none


def test_batches_skip_blank_lines_and_keep_given_ids() -> None:
    text = b'\xef\xbb\xbf{"a": 1}\n\n  \n[1]\n{"event_id": "mine"}\n{"event_id": null}\noops\n'
    reader = BatchReader(io.BytesIO(text), max_lines=2)
    batches = []
    while batch := reader.next_batch():
        batches.append(batch)
    assert [b.line_numbers for b in batches] == [(1, 4), (5, 6), (7,)]
    assert sum(b.input_bytes for b in batches) == len(text)
    first, second, third = (b.body.splitlines() for b in batches)
    assert orjson.loads(first[0]) == {"a": 1, "event_id": derive_event_id({"a": 1})}
    assert first[1] == b"[1]"
    assert second[0] == b'{"event_id": "mine"}'
    assert orjson.loads(second[1])["event_id"] == derive_event_id({})
    assert third == [b"oops"]


def test_batches_stay_under_the_byte_limit() -> None:
    line = orjson.dumps({"event_id": "x" * 90})  # 107 bytes with its newline
    reader = BatchReader(io.BytesIO((line + b"\n") * 10), max_lines=100, max_bytes=300)
    sizes = []
    while batch := reader.next_batch():
        sizes.append(len(batch.line_numbers))
    assert sizes == [3, 3, 3, 1]


def test_the_lowest_line_numbers_are_kept_whatever_order_batches_finish_in() -> None:
    totals = IngestTotals(keep_refusals=2)
    late, early = Batch((5, 6, 8), b"", 30), Batch((1, 2), b"", 20)
    totals.add(late, IngestAnswer(1, 0, (Refusal(0, "a", None), Refusal(2, "c", None))))
    totals.add(early, IngestAnswer(0, 1, (Refusal(1, "line 2: b", "f"),)))
    assert (totals.sent, totals.accepted, totals.duplicates, totals.refused) == (5, 1, 1, 3)
    assert totals.input_bytes == 50
    assert totals.first_refusals == [LineRefusal(2, "b", "f"), LineRefusal(5, "a", None)]


# The client's wait for an answer, and a "slow" answer's delay: far apart, so that a busy
# machine neither makes an answer that should count late nor a slow one in time.
CLIENT_TIMEOUT_S = 1.0
SLOW_S = 3.0


class StandIn:
    """A daemon's POST /track/json that plays `script`, one step a request: "ok" accepts the
    batch, "slow" answers after the client gave up, a status fails; then it accepts all."""

    def __init__(self, *script: str | int) -> None:
        self.script = list(script)
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow":
            await asyncio.sleep(SLOW_S)
        elif isinstance(step, int):
            error = {"error": {"code": "x", "message": "not now", "field": "body"}}
            return web.json_response(error, status=step)
        count = len(body.splitlines())
        return web.json_response({"accepted": count, "duplicates": 0, "rejected": []}, status=202)


@pytest.fixture
async def stand_in(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StandIn, str]]:
    fake = StandIn(*request.param)
    app = web.Application()
    app.router.add_post("/track/json", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "SEND_BACKOFF", RetryPolicy(0.001, 1.0, 0.001))


async def upload(url: str, text: bytes, *, timeout_s: float = 10.0) -> IngestTotals:
    reader = BatchReader(io.BytesIO(text), max_lines=1)
    async with DaemonClient(url, "t", timeout_s=timeout_s) as daemon:
        return await upload_ndjson(daemon, reader, concurrency=1, keep_refusals=20)


@pytest.mark.parametrize("stand_in", [(503, 503, 503)], indirect=True)
async def test_a_batch_is_resent_unchanged_after_5xx(
    stand_in: tuple[StandIn, str], quick_backoff: None
) -> None:
    fake, url = stand_in
    totals = await upload(url, b'{"n": 1}\n')
    assert (totals.sent, totals.accepted) == (1, 1)
    assert len(fake.bodies) == 4
    assert len(set(fake.bodies)) == 1  # the same derived id each time: a resend is a duplicate


@pytest.mark.parametrize("stand_in", [("ok", "slow")], indirect=True)
async def test_a_daemon_that_answered_before_is_retried_when_it_does_not_answer(
    stand_in: tuple[StandIn, str], quick_backoff: None
) -> None:
    fake, url = stand_in
    totals = await upload(url, b'{"n": 1}\n{"n": 2}\n', timeout_s=CLIENT_TIMEOUT_S)
    assert (totals.sent, totals.accepted) == (2, 2)
    assert len(fake.bodies) == 3
    assert fake.bodies[1] == fake.bodies[2] == b'{"n":2,"event_id":"%s"}\n' % derive_event_id(
        {"n": 2}).encode()  # fmt: skip


@pytest.mark.parametrize("stand_in", [(503,) * 9, (413,), ("slow",)], indirect=True)
async def test_retries_end_and_other_refusals_are_final(
    stand_in: tuple[StandIn, str], quick_backoff: None
) -> None:
    fake, url = stand_in
    first = fake.script[0]
    with pytest.raises((DaemonError, Unreachable)) as refused:
        await upload(url, b'{"n": 1}\n', timeout_s=CLIENT_TIMEOUT_S)
    if first == 503:
        assert str(refused.value) == "the daemon answered 503: not now (field body)"
        assert len(fake.bodies) == 1 + client_module.SEND_RETRIES
    elif first == 413:
        assert str(refused.value) == "the daemon answered 413: not now (field body)"
        assert len(fake.bodies) == 1
    else:  # a daemon that never answered is not restarting: no retry
        assert str(refused.value) == (
            f"cannot reach the daemon at {url}: no answer within {CLIENT_TIMEOUT_S:g} s"
        )
        assert len(fake.bodies) == 1


def test_derived_ids_depend_on_the_content_alone() -> None:
    one = {"a": 1, "data": {"y": [1, 2], "x": 9.99}}
    assert derive_event_id(one) == derive_event_id({"data": {"x": 9.990, "y": [1, 2]}, "a": 1})
    assert derive_event_id(one) == derive_event_id({**one, "event_id": None})
    assert derive_event_id(one) != derive_event_id({**one, "a": 2})
    assert re.fullmatch(r"[0-9a-f]{32}", derive_event_id(one))
