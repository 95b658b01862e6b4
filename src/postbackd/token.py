"""The admin API's bearer token: configured, or generated once into the data directory."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

TOKEN_FILE: Final = "api-token"


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def read_token_file(data_dir: Path) -> str | None:
    try:
        token = token_path(data_dir).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return token or None


def ensure_api_token(configured: str | None, data_dir: Path) -> str:
    """The configured token, else the token file's, else a new one written with mode 0600.

    Only the file's path is ever logged, never the token.
    """
    if configured:
        return configured
    path = token_path(data_dir)
    existing = read_token_file(data_dir)
    if existing is not None:
        os.chmod(path, 0o600)
        log.info("API token read from %s", path)
        return existing
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    log.info("API token generated into %s (mode 0600)", path)
    return token
