"""The metrics of PRODUCT.md 3: names, types, units, bounded labels that read 0 from the
start, one registry per daemon, and `GET /metrics` serving it."""

from __future__ import annotations

from typing import get_args

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from conftest import Running, seed_config
from postbackd import __version__
from postbackd.attribution import OUTCOMES
from postbackd.delivery import circuit
from postbackd.delivery import model as delivery_model
from postbackd.metrics import (
    CIRCUIT_STATES,
    CLAIM_OUTCOMES,
    DELIVERY_OUTCOMES,
    ENGAGEMENT_TYPES,
    EVENT_RESULTS,
    QUEUE_STATES,
    RETENTION_KINDS,
    STATUS_CLASSES,
    STREAM_BACKLOG_STATES,
    STREAM_DEAD_LETTER_REASONS,
    UNAUTHORIZED_REASONS,
    X_ANSWER_KINDS,
    Metrics,
)
from postbackd.store.base import STORE_ERROR_KINDS
from postbackd.x.response import classify

# name: (type, label, values); the first ten are PRODUCT.md 3's list.
EXPECTED = {
    "postbackd_events_received": ("counter", "result", EVENT_RESULTS),
    "postbackd_x_requests": ("counter", "status_class", STATUS_CLASSES),
    "postbackd_x_request_duration_seconds": ("histogram", None, ()),
    "postbackd_delivery_lag_seconds": ("histogram", None, ()),
    "postbackd_deliveries": ("counter", "outcome", DELIVERY_OUTCOMES),
    "postbackd_claims": ("counter", "outcome", CLAIM_OUTCOMES),
    "postbackd_attributions": ("counter", "engagement_type", ENGAGEMENT_TYPES),
    "postbackd_queue_depth": ("gauge", "state", QUEUE_STATES),
    "postbackd_rate_limit_wait_seconds": ("counter", None, ()),
    "postbackd_build_info": ("gauge", None, ()),
    "postbackd_x_accounts_unauthenticated": ("gauge", None, ()),
    "postbackd_x_answers": ("counter", "kind", X_ANSWER_KINDS),
    "postbackd_circuit_state": ("gauge", "state", CIRCUIT_STATES),
    "postbackd_x_accounts_circuit_open": ("gauge", None, ()),
    "postbackd_store_errors": ("counter", "kind", STORE_ERROR_KINDS),
    "postbackd_retention_deleted": ("counter", "kind", RETENTION_KINDS),
    "postbackd_store_bytes": ("gauge", None, ()),
    "postbackd_api_unauthorized": ("counter", "reason", UNAUTHORIZED_REASONS),
    "postbackd_stream_read": ("counter", None, ()),
    "postbackd_stream_acked": ("counter", None, ()),
    "postbackd_stream_dead_lettered": ("counter", "reason", STREAM_DEAD_LETTER_REASONS),
    "postbackd_stream_backlog": ("gauge", "state", STREAM_BACKLOG_STATES),
}


def exposed(metrics: Metrics) -> dict[str, tuple[str, list[Sample]]]:
    """What a scrape reads: family name -> (type, samples)."""
    text = prometheus_client.generate_latest(metrics.registry).decode()
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def values(samples: list[Sample], name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if s.name == name}


def test_every_metric_is_exposed_with_its_type() -> None:
    families = exposed(Metrics())
    for name, (kind, _, _) in EXPECTED.items():
        assert name in families, name
        assert families[name][0] == kind, (name, families[name][0])
    postbackd = {n for n in families if n.startswith("postbackd_") and not n.endswith("_created")}
    assert postbackd == set(EXPECTED), "a new metric needs its line in EXPECTED"


def test_units_are_base_units_and_counters_end_in_total() -> None:
    text = prometheus_client.generate_latest(Metrics().registry).decode()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert {s.name for s in family.samples} <= {
                f"{family.name}_total",
                f"{family.name}_created",
            }, family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert not any(unit in family.name for unit in ("_ms", "milli", "minutes")), family.name


def test_every_label_child_exists_from_the_start_and_reads_0() -> None:
    families = exposed(Metrics())
    for name, (kind, label, expected) in EXPECTED.items():
        if label is None:
            continue
        sample = f"{name}_total" if kind == "counter" else name
        got = values(families[name][1], sample, label)
        assert set(got) == set(expected), name
        if name != "postbackd_circuit_state":
            assert set(got.values()) == {0.0}, (name, got)


def test_labels_are_small_fixed_sets_never_ids() -> None:
    metrics = Metrics()
    metrics.queue_depth.labels("ready").set(5)
    metrics.x_request_duration.observe(0.2)
    allowed = {"result", "status_class", "kind", "outcome", "engagement_type", "state", "le"}
    allowed.add("reason")  # postbackd_api_unauthorized_total: missing or wrong
    for family, (_, samples) in exposed(metrics).items():
        if family == "postbackd_build_info":
            continue
        for s in samples:
            assert set(s.labels) <= allowed, (family, s.labels)
        assert len({tuple(sorted(s.labels.items())) for s in samples}) <= 60, family


def test_label_values_follow_the_domain() -> None:
    assert CLAIM_OUTCOMES == OUTCOMES
    states = set(get_args(delivery_model.State))
    assert set(QUEUE_STATES) == states - {"delivered", "skipped", "cancelled"}
    assert set(DELIVERY_OUTCOMES) == (states - {"scheduled", "ready", "in_flight"}) | {"retried"}
    assert set(X_ANSWER_KINDS) == {classify(status) for status in range(600)}
    assert set(CIRCUIT_STATES) == set(get_args(circuit.State))


def test_build_info_names_the_running_version() -> None:
    (sample,) = exposed(Metrics())["postbackd_build_info"][1]
    assert sample.labels["version"] == __version__
    assert sample.value == 1.0


def test_circuit_state_starts_closed_and_reads_one_state_at_a_time() -> None:
    metrics = Metrics()

    def states() -> dict[str, float]:
        samples = exposed(metrics)["postbackd_circuit_state"][1]
        return values(samples, "postbackd_circuit_state", "state")

    assert states() == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    metrics.set_circuit_state("open")
    assert states() == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    metrics.set_circuit_state("half_open")
    assert states() == {"closed": 0.0, "open": 0.0, "half_open": 1.0}


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.events_received.labels("accepted").inc(3)
    assert values(
        exposed(second)["postbackd_events_received"][1],
        "postbackd_events_received_total",
        "result",
    ) == dict.fromkeys(EVENT_RESULTS, 0.0)
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("postbackd_") for n in global_names)


def test_tallies_read_exactly_as_the_metrics_they_stand_for() -> None:
    # The engine counts per claim in tallies; every read of the registry, a scrape or a
    # restricted one, sees them as if each claim had moved the metric itself.
    tallied, direct = Metrics(), Metrics()
    counts = tallied.counter_tally(tallied.deliveries, DELIVERY_OUTCOMES).counts
    lag = tallied.histogram_tally(tallied.delivery_lag)
    observed = (0.0, 0.005, 0.0051, 0.3, 1, 42.5, 3600, 3601, 10**6)
    for value in observed:
        lag.observe(value)
        direct.delivery_lag.observe(value)
        counts["delivered"] += 1
        direct.deliveries.labels("delivered").inc()
    counts["cancelled"] += 3
    direct.deliveries.labels("cancelled").inc(3)

    def series(metrics: Metrics, names: list[str] | None = None) -> dict[str, list[Sample]]:
        registry = metrics.registry.restricted_registry(names) if names else metrics.registry
        return {
            f.name: [s for s in f.samples if not s.name.endswith("_created")]
            for f in registry.collect()
            if f.name.startswith("postbackd_delivery")
        }

    lag_name = "postbackd_delivery_lag_seconds"
    assert series(tallied, [f"{lag_name}_bucket", f"{lag_name}_sum"]) == series(
        direct, [f"{lag_name}_bucket", f"{lag_name}_sum"]
    )
    assert series(tallied) == series(direct)
    assert tallied.registry.get_sample_value(
        "postbackd_deliveries_total", {"outcome": "delivered"}
    ) == len(observed)
    # Read twice: a tally adds what came since the last read, never the same again.
    counts["delivered"] += 1
    direct.deliveries.labels("delivered").inc()
    assert series(tallied) == series(direct)


def test_process_metrics_show_restarts_and_memory() -> None:
    families = exposed(Metrics())
    if "process_start_time_seconds" not in families:
        pytest.skip("process metrics need /proc (Linux)")
    assert families["process_resident_memory_bytes"][1][0].value > 0


async def test_metrics_endpoint_serves_the_daemons_registry_without_a_token(
    running: Running,
) -> None:
    seeded = await seed_config(running.api)
    event = {
        "action": "event",
        "kochava_app_id": seeded["app"]["id"],
        "device_ids": {"idfa": "ab12cd34-0000-4000-8000-00000000abcd"},
        "data": {"event_name": "purchase"},
    }
    body = [event, {"action": "event", "kochava_app_id": "kounknown"}]
    await running.api.ok("POST", "/track/json", 202, json=body)
    async with running.api.session.get(running.api.base + "/metrics") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        text = await r.text()
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    received = values(
        families["postbackd_events_received"], "postbackd_events_received_total", "result"
    )
    assert received == {"accepted": 1.0, "duplicate": 0.0, "rejected": 1.0}
    (unauthenticated,) = families["postbackd_x_accounts_unauthenticated"]
    assert unauthenticated.value == 0.0
    assert families["postbackd_build_info"][0].labels["version"] == __version__


async def test_refused_tokens_are_counted_and_logged_without_the_token(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Bearer not-the-token-1d2e3f"
    for headers in ({}, {"Authorization": wrong}, {"Authorization": wrong}):
        status, _ = await running.api.request("GET", "/api/v1/apps", auth=False, headers=headers)
        assert status == 401
    status, _ = await running.api.request("POST", "/track/json", auth=False)
    assert status == 401
    families = exposed(running.daemon.metrics)
    refused = values(
        families["postbackd_api_unauthorized"][1], "postbackd_api_unauthorized_total", "reason"
    )
    assert refused == {"missing": 2.0, "wrong": 2.0}
    # One line for the first refusal; the repeats within the minute are counted, not logged.
    lines = [r for r in caplog.records if "bearer token" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelname == "WARNING"
    assert lines[0].fields == {  # type: ignore[attr-defined]
        "reason": "missing", "method": "GET", "path": "/api/v1/apps", "remote": "127.0.0.1",
    }  # fmt: skip
    assert "not-the-token" not in caplog.text
