"""X account tokens encrypted at rest with `secret_key` (store/sealing.py), proven on the
bytes of the database files the real daemon (`postbackd serve`, a separate process) leaves
on disk, and on the claims the simulated X accepts after a restart."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from conftest import ACCOUNT_ID, ACCOUNT_SECRET, ACCOUNT_TOKEN, API_TOKEN, seed_config
from postbackd.store.db import DB_NAME
from procs import Proc, client, key_env, postbackd, start_daemon, start_mock, wait_for

SECRETS = (ACCOUNT_TOKEN.encode(), ACCOUNT_SECRET.encode())
KEY_1 = Fernet.generate_key().decode()
KEY_2 = Fernet.generate_key().decode()


@pytest.fixture
async def mock() -> AsyncIterator[Proc]:
    proc = await start_mock()
    try:
        yield proc
    finally:
        await proc.stop()


def database_bytes(data_dir: Path) -> bytes:
    """The database with its WAL and shared-memory files, as a copy of the directory holds."""
    return b"".join(
        path.read_bytes()
        for suffix in ("", "-wal", "-shm")
        if (path := data_dir / (DB_NAME + suffix)).exists()
    )


def plain_tokens_in(data_dir: Path) -> list[bytes]:
    found = database_bytes(data_dir)
    return [secret for secret in SECRETS if secret in found]


async def configure(proc: Proc) -> dict[str, Any]:
    """The seed's configuration, then the account's row rewritten a few times (each update
    of a row can leave its old copy in the page's free space)."""
    async with client(proc) as api:
        seeded = await seed_config(api)
        for name in ("Renamed", "Ads"):
            await api.ok("PATCH", f"/api/v1/x-accounts/{ACCOUNT_ID}", json={"name": name})
        await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
    return seeded


async def claim_is_delivered(proc: Proc, app_id: str) -> None:
    """One event in; its claim, signed with the account's token, accepted by the simulated
    X (which checks the OAuth signature, so a wrong token would answer 401)."""
    event = {
        "action": "event",
        "event_id": f"ev-{uuid.uuid4().hex}",
        "kochava_app_id": app_id,
        "device_ids": {"idfa": "6d92078a-8246-4ba4-ae5b-76104861e7dc"},
        "data": {"event_name": "purchase"},
    }
    async with client(proc) as api:
        await api.ok("POST", "/track/json", 202, json=event)

        async def delivered() -> bool:
            found = await api.ok("GET", f"/api/v1/events/{event['event_id']}")
            states = [d["state"] for d in found["deliveries"]]
            assert states in (["ready"], ["in_flight"], ["delivered"]), found
            return states == ["delivered"]

        await wait_for(delivered)
        account = await api.ok("GET", f"/api/v1/x-accounts/{ACCOUNT_ID}")
        assert account["authenticated"] is True, account


async def refused_start(data_dir: Path, x_url: str, **env: str) -> tuple[int, list[str]]:
    """`postbackd serve` that must refuse to start: its exit code and stderr lines."""
    proc = await asyncio.create_subprocess_exec(
        *postbackd("serve"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            **key_env(),
            "POSTBACKD_LISTEN": "127.0.0.1:0",
            "POSTBACKD_DATA_DIR": str(data_dir),
            "POSTBACKD_X_API_URL": x_url,
            "POSTBACKD_API_TOKEN": API_TOKEN,
            **env,
        },
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode().splitlines()


async def test_with_a_key_no_token_reaches_the_database_files(tmp_path: Path, mock: Proc) -> None:
    data_dir = tmp_path / "data"
    daemon = await start_daemon(data_dir, mock.url, secret_key=KEY_1)
    try:
        seeded = await configure(daemon)
        await claim_is_delivered(daemon, seeded["app"]["id"])
        # While it runs: the database, its WAL and shared memory as a copy would take them.
        assert plain_tokens_in(data_dir) == []
    finally:
        assert await daemon.stop() == 0
    assert plain_tokens_in(data_dir) == []
    assert "are stored in plain text" not in daemon.log

    # Restarted with the key, it signs with the decrypted tokens and X accepts the claim.
    daemon = await start_daemon(data_dir, mock.url, secret_key=KEY_1)
    try:
        await claim_is_delivered(daemon, seeded["app"]["id"])
    finally:
        await daemon.stop()
    assert plain_tokens_in(data_dir) == []
    for secret in (*SECRETS, KEY_1.encode()):
        assert secret.decode() not in daemon.log


async def test_plain_tokens_are_encrypted_at_the_first_start_with_a_key(
    tmp_path: Path, mock: Proc
) -> None:
    data_dir = tmp_path / "data"
    daemon = await start_daemon(data_dir, mock.url)
    try:
        seeded = await configure(daemon)
    finally:
        await daemon.stop()
    # Without a key the tokens are in the file (which is what this test would catch), and
    # the daemon said so at start.
    assert plain_tokens_in(data_dir) == list(SECRETS)
    assert "secret_key (POSTBACKD_SECRET_KEY) is not set" in daemon.log

    daemon = await start_daemon(data_dir, mock.url, secret_key=KEY_1)
    try:
        assert plain_tokens_in(data_dir) == []
        await claim_is_delivered(daemon, seeded["app"]["id"])
    finally:
        await daemon.stop()
    assert plain_tokens_in(data_dir) == []
    assert "X account tokens of 1 account(s) encrypted with the first key" in daemon.log


async def test_keys_rotate_and_a_missing_or_wrong_key_is_refused_in_one_line(
    tmp_path: Path, mock: Proc
) -> None:
    data_dir = tmp_path / "data"
    daemon = await start_daemon(data_dir, mock.url, secret_key=KEY_1)
    try:
        seeded = await configure(daemon)
    finally:
        await daemon.stop()
    app_id = seeded["app"]["id"]

    # Encrypted rows: no key, or a key that is not theirs, and the daemon does not start.
    code, lines = await refused_start(data_dir, mock.url)
    assert code != 0
    assert lines[-1] == (
        "postbackd: error: cannot start: the X account tokens in the database are encrypted "
        "and secret_key (POSTBACKD_SECRET_KEY) is not set: set it to the key they were "
        "encrypted with"
    )
    code, lines = await refused_start(data_dir, mock.url, POSTBACKD_SECRET_KEY=KEY_2)
    assert code != 0
    assert lines[-1].startswith(
        "postbackd: error: cannot start: no key in secret_key (POSTBACKD_SECRET_KEY) decrypts "
        "the X account tokens in the database"
    )
    for refused in (lines, (await refused_start(data_dir, mock.url))[1]):
        assert not [line for line in refused if "Traceback" in line]
        assert not [line for line in refused if KEY_2 in line]

    # Rotation: the new key first, the old one after it; rows move to the new key at start.
    daemon = await start_daemon(data_dir, mock.url, secret_key=f"{KEY_2},{KEY_1}")
    try:
        await claim_is_delivered(daemon, app_id)
    finally:
        await daemon.stop()
    assert "encrypted with the first key" in daemon.log
    # The old key alone no longer opens them; the new key alone does.
    code, lines = await refused_start(data_dir, mock.url, POSTBACKD_SECRET_KEY=KEY_1)
    assert code != 0 and "no key in secret_key" in lines[-1]
    daemon = await start_daemon(data_dir, mock.url, secret_key=KEY_2)
    try:
        await claim_is_delivered(daemon, app_id)
    finally:
        await daemon.stop()
    assert "encrypted with the first key" not in daemon.log
    assert plain_tokens_in(data_dir) == []


async def test_a_settings_file_with_a_secret_readable_by_others_is_warned_of(
    tmp_path: Path, mock: Proc
) -> None:
    config = tmp_path / "postbackd.toml"
    config.write_text(f'secret_key = "{KEY_1}"\n')
    os.chmod(config, 0o640)
    daemon = await start_daemon(tmp_path / "data", mock.url, config=str(config))
    await daemon.stop()
    (warning,) = [line for line in daemon.log.splitlines() if "holds secrets" in line]
    assert " WARNING " in warning
    assert f"{config} holds secrets (secret_key)" in warning and "(mode 0640)" in warning
    assert KEY_1 not in daemon.log
    # The start-up line of effective settings shows the key as set, never its value.
    (settings,) = [line for line in daemon.log.splitlines() if "settings: listen=" in line]
    assert "secret_key=*** " in settings and "api_token=*** " in settings
