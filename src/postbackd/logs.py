"""Logging of the "postbackd" logger hierarchy: text or JSON lines, secrets redacted.

Structured fields travel in `extra`: `log.info("sent", extra=log_fields(account=a, status=200))`.
Text:  `2026-11-28T12:00:00.123Z INFO postbackd.daemon: sent account=a status=200`
JSON:  `{"ts": "...", "level": "INFO", "logger": "postbackd.daemon", "msg": "sent", "account": ...}`

Secrets must never reach a log line (COMMON rules); code must not log them in the first place,
and `register_secret` is the safety net behind that: every registered value is replaced with
`***` in messages, fields and tracebacks before any handler writes the record.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

import orjson
from aiohttp.http_exceptions import HttpProcessingError

ROOT_LOGGER: Final = "postbackd"
LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
REDACTED: Final = "***"
# Shorter values would blank out ordinary words and numbers.
MIN_SECRET_LEN: Final = 4
_RESERVED: Final = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})

_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(*values: str) -> None:
    """Keep each value out of every log line from now on (values under 4 characters are
    ignored). Register many at once: the pattern is compiled once per call."""
    global _secret_pattern
    fresh = {v for v in values if len(v) >= MIN_SECRET_LEN and v not in _secrets}
    if not fresh:
        return
    _secrets.update(fresh)
    # Longest first, so a secret that contains another is replaced whole.
    ordered = sorted(_secrets, key=len, reverse=True)
    _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    pattern = _secret_pattern
    return text if pattern is None else pattern.sub(REDACTED, text)


def log_fields(**fields: object) -> dict[str, object]:
    """The `extra` argument that attaches structured fields to one log call."""
    return {"fields": fields}


def _redact_value(value: object) -> object:
    """A JSON-ready copy of `value` with secrets redacted (the caller's dict is left alone)."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {redact(str(k)): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    return redact(str(value))


class RedactSecrets(logging.Filter):
    """Renders the message, fields and traceback of a record once, with secrets replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        fields = getattr(record, "fields", None)
        record.fields = _redact_value(fields) if isinstance(fields, Mapping) else {}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    # UTC with milliseconds, so lines from several hosts sort together.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _text_value(value: object) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return orjson.dumps(value, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, object] = getattr(record, "fields", {})
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        line += "".join(f" {key}={_text_value(value)}" for key, value in fields.items())
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields: Mapping[str, object] = getattr(record, "fields", {})
        # A field never overwrites the record's own keys; it is kept under another name.
        line.update((f"field_{k}" if k in _RESERVED else k, v) for k, v in fields.items())
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class ClientMistakes(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a bad chunk size) with a
    traceback at ERROR, although it answers 400 and the fault is the client's: any client
    could fill the log with tracebacks. Such a record becomes one DEBUG line, as aiohttp
    itself does for an unknown method."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            message = record.getMessage()
            record.msg, record.args = "%s: %s", (message, " ".join(str(error).split()))
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_client_mistakes() -> None:
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientMistakes) for f in server.filters):
        server.addFilter(ClientMistakes())


class ReopenableFileHandler(logging.FileHandler):
    """A log file that `reopen()` opens again by name: after logrotate renamed it, the next
    lines go to a new file of that name (PRODUCT.md 2, "Shutdown": SIGHUP reopens it)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def configure_logging(
    level: str, fmt: str, stream: TextIO | None = None, file: Path | None = None
) -> None:
    """Send the "postbackd" hierarchy to `file` when given, else to `stream` (stderr by
    default); calling again replaces."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    formatter = {"text": TextFormatter, "json": JsonFormatter}.get(fmt)
    if formatter is None:
        raise ValueError(f"unknown log format {fmt!r}")
    handler: logging.Handler
    if file is not None:
        handler = ReopenableFileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter())
    # On the handler, not the logger: a logger's filters skip records of its children.
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger(ROOT_LOGGER)
    for old in logger.handlers[:]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    # The daemon owns its output: no second copy through whatever the root logger has.
    logger.propagate = False
    quiet_client_mistakes()


class _Tags(logging.Filter):
    def __init__(self, tags: Mapping[str, object]) -> None:
        super().__init__()
        self._tags = dict(tags)

    def filter(self, record: logging.LogRecord) -> bool:
        record.fields = {**self._tags, **getattr(record, "fields", {})}
        return True


def tag_records(**tags: object) -> None:
    """Give every record from now on these fields (a worker of `serve --workers` its
    number), so that the lines of processes sharing one log tell which wrote them."""
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        handler.addFilter(_Tags(tags))


def reopen_log_file() -> bool:
    """Open the log file again (after a rotation); False when logging goes to a stream."""
    reopened = False
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
            reopened = True
    return reopened


@dataclass(slots=True)
class _Repeats:
    last_logged: float
    suppressed: int = 0


class RateLimitedLog:
    """Warnings for failures that repeat: the first, then at most one per key per interval.

    Each line after the first says how many were left out since the previous one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._repeats: dict[str, _Repeats] = {}

    def warning(self, key: str, msg: str, **fields: object) -> None:
        now = self._clock()
        repeats = self._repeats.get(key)
        if repeats is None:
            self._repeats[key] = _Repeats(now)
        else:
            elapsed_s = now - repeats.last_logged
            if elapsed_s < self._interval_s:
                repeats.suppressed += 1
                return
            if n := repeats.suppressed:
                msg += f" (repeated {n} time{'' if n == 1 else 's'} in the last {elapsed_s:.0f} s)"
            repeats.last_logged, repeats.suppressed = now, 0
        # `msg` goes out without args, so a "%" in it is printed as it is.
        self._logger.warning(msg, extra=log_fields(**fields), stacklevel=2)
