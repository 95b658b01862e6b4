"""The daemon against its own OpenAPI description (PRODUCT.md 3): schemathesis generates
requests from `GET /api/v1/openapi.json` for every operation, then walks the description's
links (app -> campaign, tracker, postback -> events -> deliveries) statefully, against the
real daemon (`postbackd serve`) and the simulated X as processes. No answer may be a 5xx,
every answer must conform to the description, and the daemon must still be healthy, with no
traceback in its log, at the end.

Deterministic for CI: a fixed seed, derandomized generation and bounded examples.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import events, from_schema

from conftest import ACCOUNT_ID, ACCOUNT_SECRET, ACCOUNT_TOKEN, API_TOKEN
from procs import start_daemon, start_mock

# Bounded for CI: every operation's examples, coverage and fuzzing phases, then stateful
# scenarios along the links; a few thousand requests in all.
MAX_EXAMPLES = 60
STATEFUL_STEPS = 30
STATEFUL_EXAMPLES = 100
SEED = 20261202
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
MIN_REQUESTS = 2000


@dataclass
class Tally:
    requests: int = 0
    operations: set[str] = field(default_factory=set)
    phases: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, recorder: Any) -> None:
        for interaction in recorder.interactions.values():
            self.requests += 1
            if interaction.response is not None:
                self.by_status[interaction.response.status_code] += 1
        for case_id, checks in recorder.checks.items():
            for check in checks:
                if check.failure_info is None:
                    continue
                node = recorder.cases.get(case_id)
                case = node.value if node is not None else None
                where = f"{case.method} {case.formatted_path}" if case is not None else "?"
                failure = check.failure_info.failure
                self.failures.append(
                    f"{check.name} at {where}: {failure.title}\n{failure.message[:600]}\n"
                    f"{check.failure_info.code_sample[:1500]}"
                )


def run_schemathesis(url: str) -> Tally:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {API_TOKEN}"},
            "request-timeout": 30,
            "workers": 1,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
            },
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in CHECKS},
            },
            "phases": {
                "stateful": {
                    "max-steps": STATEFUL_STEPS,
                    # Only the description's own links: the seed's workflow, not guesses.
                    "inference": {"algorithms": []},
                    # Valid requests, so that the links' chains get far.
                    "generation": {"mode": "positive", "max-examples": STATEFUL_EXAMPLES},
                }
            },
            "warnings": False,
        }
    )
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", config=config)

    @schema.hook
    def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
        # A tracker needs authenticated X accounts, which generated ids never are: half of
        # the generated trackers name the one the test authenticated, so that the chain
        # app -> tracker -> postback -> events gets past its first link.
        operation = context.operation
        if (
            operation is not None
            and operation.label == "POST /api/v1/trackers"
            and isinstance(body, dict)
        ):
            return st.sampled_from([body, {**body, "x_account_ids": [ACCOUNT_ID]}])
        return st.just(body)

    tally = Tally()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tally.operations.add(event.recorder.label)
            tally.phases[str(event.phase.value)] += len(event.recorder.interactions)
            tally.add(event.recorder)
        elif isinstance(event, events.NonFatalError):
            tally.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            tally.errors.append(f"fatal: {event.exception!r}")
    return tally


@pytest.mark.timeout(300)  # about 70 s on two cores; room for a busy CI machine
async def test_every_answer_conforms_to_the_openapi_description(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mock = await start_mock()
    daemon = await start_daemon(tmp_path / "data", mock.url)
    try:
        # The account the description's example names, known to the simulated X, so that
        # generated trackers can be valid.
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as s:
            body = {"id": ACCOUNT_ID, "name": "Ads", "access_token": ACCOUNT_TOKEN,
                    "access_token_secret": ACCOUNT_SECRET}  # fmt: skip
            async with s.post(f"{daemon.url}/api/v1/x-accounts", json=body) as r:
                assert r.status == 201, await r.text()
        tally = await asyncio.to_thread(run_schemathesis, daemon.url)
        async with aiohttp.ClientSession() as s, s.get(f"{daemon.url}/healthz") as r:
            assert r.status == 200
    finally:
        code = await daemon.stop()
        await mock.stop()
    operations = {label for label in tally.operations if label.split(" ")[0].isupper()}
    with capsys.disabled():
        print(  # noqa: T201
            f"\nschemathesis: {tally.requests} requests, {len(operations)} operations, "
            f"{len(tally.failures)} failures, {len(tally.errors)} errors; statuses "
            f"{dict(sorted(tally.by_status.items()))}; requests by phase {dict(tally.phases)}"
        )
    assert not tally.errors, "\n".join(tally.errors[:10])
    assert not tally.failures, "\n\n".join(tally.failures[:10])
    assert tally.requests >= MIN_REQUESTS
    assert code == 0, daemon.log[-3000:]
    trouble = re.search(r"Traceback|internal error", daemon.log)
    assert trouble is None, daemon.log[max(0, trouble.start() - 500) : trouble.start() + 3000]
