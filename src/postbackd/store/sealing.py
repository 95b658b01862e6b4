"""X account tokens encrypted at rest (setting `secret_key`, POSTBACKD_SECRET_KEY).

An X account's `access_token` and `access_token_secret` sign claims in its name, so a copy of
the database (a backup, a disk image) must not hand them out. With a key, each is stored as
`fernet:` + a Fernet token (AES-128-CBC with an HMAC-SHA256 over it, from `cryptography`):
unreadable without the key and refused when altered. They are decrypted once, when the
configuration is loaded; the in-memory index holds them in plain text to sign.

Rotation: `secret_key` holds one or more comma-separated keys; the first encrypts, every one
decrypts (MultiFernet). At start every row not encrypted with the first key (a plain row,
or one under an older key) is rewritten with it, in one transaction, with secure_delete so
the replaced cell is zeroed, then the file is rebuilt (VACUUM) so that no old copy stays in
free space, and the WAL is truncated.

Without a key, tokens are stored as given (the daemon warns at start). Encrypted rows and no
key, or no key that opens them: the daemon refuses to start, naming the setting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import aiosqlite
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from postbackd.errors import PostbackdError

log = logging.getLogger(__name__)

# X's OAuth tokens are "digits-letters" and their secrets letters and digits, so no plain
# token starts with this; it tells an encrypted value from a plain one row by row.
PREFIX: Final = "fernet:"
SETTING: Final = "secret_key (POSTBACKD_SECRET_KEY)"
SEALED_COLUMNS: Final = ("access_token", "access_token_secret")


class SecretKeyError(PostbackdError):
    """The stored tokens cannot be read with the configured keys: the daemon cannot start."""


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


class Sealer:
    """Encrypts and decrypts token values with the keys of `secret_key` (none: plain)."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._primary = Fernet(keys[0]) if keys else None
        self._all = MultiFernet([Fernet(k) for k in keys]) if keys else None

    @property
    def enabled(self) -> bool:
        return self._primary is not None

    def seal(self, plain: str) -> str:
        """The stored form of `plain`: encrypted with the first key, or as it is without one."""
        if self._primary is None:
            return plain
        return PREFIX + self._primary.encrypt(plain.encode()).decode("ascii")

    def unseal(self, stored: str) -> str:
        """The plain value of a stored one; SecretKeyError when no key opens it."""
        if not is_sealed(stored):
            return stored
        if self._all is None:
            raise SecretKeyError(
                f"the X account tokens in the database are encrypted and {SETTING} is not "
                "set: set it to the key they were encrypted with"
            )
        try:
            return self._all.decrypt(stored[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                f"no key in {SETTING} decrypts the X account tokens in the database: give "
                "the key they were encrypted with (during a rotation, the new key first, "
                "then the old one, comma-separated)"
            ) from None

    def needs_sealing(self, stored: str) -> bool:
        """Whether a stored value must be rewritten: plain, or not under the first key."""
        if self._primary is None:
            return False
        if not is_sealed(stored):
            return True
        try:
            self._primary.decrypt(stored[len(PREFIX) :].encode("ascii"))
        except InvalidToken:
            return True
        return False


async def seal_stored_tokens(conn: aiosqlite.Connection, sealer: Sealer) -> int:
    """Bring every X account row to the first key (or refuse to start); how many were
    rewritten. Runs at start, before anything else writes."""
    async with conn.execute(
        "SELECT id, access_token, access_token_secret FROM x_accounts ORDER BY rowid"
    ) as cur:
        rows = [(str(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]
    # Every row must open with the keys given, even one that needs no rewrite.
    plain = [(account_id, sealer.unseal(t), sealer.unseal(s)) for account_id, t, s in rows]
    if not sealer.enabled:
        log.warning(
            "%s is not set: X account tokens are stored in plain text in the database and "
            "in every copy or backup of it (docs/operations.md, Secrets at rest)",
            SETTING,
        )
        return 0
    stale = [
        (sealer.seal(token), sealer.seal(secret), account_id)
        for (account_id, token, secret), (_, stored_t, stored_s) in zip(plain, rows, strict=True)
        if sealer.needs_sealing(stored_t) or sealer.needs_sealing(stored_s)
    ]
    if not stale:
        return 0
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.executemany(
            "UPDATE x_accounts SET access_token = ?, access_token_secret = ? WHERE id = ?", stale
        )
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    # The old values may still sit in free space of the table's pages (earlier updates of
    # the row left copies there) and in WAL frames: rebuild the file, then empty the WAL.
    await conn.execute("VACUUM")
    async with conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
        busy = await cur.fetchone()
    if busy is not None and busy[0]:
        log.warning(
            "the write-ahead log could not be truncated (another process is reading the "
            "database): old copies of the X account tokens stay in it until the next checkpoint"
        )
    log.info("X account tokens of %d account(s) encrypted with the first key of %s",
             len(stale), SETTING)  # fmt: skip
    return len(stale)
