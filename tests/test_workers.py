"""What `serve --workers` gives each worker, and the settings it refuses (the processes
themselves: test_many_daemons.py)."""

from __future__ import annotations

import pytest

from postbackd.settings import Settings, SettingsError
from postbackd.workers import worker_settings

PG = "postgresql://postbackd:secret@db:5432/postbackd"


def test_each_worker_has_a_metrics_port_of_its_own() -> None:
    conf = Settings.load(
        environ={"POSTBACKD_DATABASE_URL": PG, "POSTBACKD_WORKERS": "3",
                 "POSTBACKD_METRICS_LISTEN": "[::1]:9100"},
    )  # fmt: skip
    assert [worker_settings(conf, n).metrics_listen for n in range(3)] == [
        "[::1]:9100", "[::1]:9101", "[::1]:9102",
    ]  # fmt: skip
    # Port 0: each worker asks the system for a free one of its own.
    anywhere = Settings.load(environ={"POSTBACKD_METRICS_LISTEN": "127.0.0.1:0"})
    assert worker_settings(anywhere, 1).metrics_listen == "127.0.0.1:0"


def test_a_named_stream_consumer_is_one_member_per_worker() -> None:
    named = "redis://:pw@redis:6379/0?stream=events&consumer=host-a&group=g"
    conf = Settings.load(environ={"POSTBACKD_EVENT_STREAM_URL": named})
    url = worker_settings(conf, 2).event_stream_url
    assert url == "redis://:pw@redis:6379/0?stream=events&consumer=host-a-2&group=g"
    # Unnamed: the default, host and pid, already differs per worker.
    plain = Settings.load(environ={"POSTBACKD_EVENT_STREAM_URL": "redis://redis/0?stream=e"})
    assert worker_settings(plain, 1).event_stream_url == "redis://redis/0?stream=e"


def test_more_than_one_worker_needs_postgresql() -> None:
    for environ in ({}, {"POSTBACKD_DATABASE_URL": "sqlite:"}):
        with pytest.raises(SettingsError, match=r"^--workers 2: .*PostgreSQL.*SQLite"):
            Settings.load(environ={**environ, "POSTBACKD_WORKERS": "2"})
    assert Settings.load(environ={"POSTBACKD_WORKERS": "1"}).workers == 1
    assert Settings.load(environ={"POSTBACKD_WORKERS": "2", "POSTBACKD_DATABASE_URL": PG})
    with pytest.raises(SettingsError, match="POSTBACKD_WORKERS: must be at least 1"):
        Settings.load(environ={"POSTBACKD_WORKERS": "0"})


def test_metrics_ports_beyond_65535_are_refused() -> None:
    environ = {"POSTBACKD_DATABASE_URL": PG, "POSTBACKD_WORKERS": "4",
               "POSTBACKD_METRICS_LISTEN": "127.0.0.1:65534"}  # fmt: skip
    with pytest.raises(SettingsError, match="metrics_listen: port 65534 \\+ 3"):
        Settings.load(environ=environ)
