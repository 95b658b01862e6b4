"""Every Prometheus metric of postbackd, in one registry the daemon owns.

Conventions (PRODUCT.md 3): base units, `_total` counters, labels from small fixed sets
created at start so that they read 0; never an id, URL or device in a label.

What each metric answers for an operator (the dashboard's rows, grafana/dashboards):

    keeping up?        events_received, deliveries, queue_depth, delivery_lag
    X healthy?         x_requests, x_answers, x_request_duration, circuit_state,
                       x_accounts_unauthenticated
    numbers off?       claims (by attribution outcome), attributions, deliveries skipped/held
    rate limiting      rate_limit_wait_seconds, x_answers{kind="rate_limited"} (429)
    one account bad?   x_accounts_circuit_open (accounts whose own circuit is open)
    the process        process_* (restarts, memory, CPU, open files), build_info,
                       store_errors (commits that failed: disk full, I/O errors),
                       store_bytes and retention_deleted (disk use kept flat by the janitor)
    who knocks?        api_unauthorized (requests refused for a missing or wrong token)
    event stream       stream_read, stream_acked, stream_dead_lettered, stream_backlog
                       (only move when `event_stream_url` is set)
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import RestrictedRegistry

from postbackd import __version__
from postbackd.attribution import CLICK, OUTCOMES, VIEW
from postbackd.delivery.circuit import State as CircuitState
from postbackd.store.base import STORE_ERROR_KINDS
from postbackd.x.response import ResponseKind

EVENT_RESULTS: Final = ("accepted", "duplicate", "rejected")
STATUS_CLASSES: Final = ("2xx", "3xx", "4xx", "5xx", "timeout", "connection_error")
X_ANSWER_KINDS: Final = tuple(kind.value for kind in ResponseKind)
DELIVERY_OUTCOMES: Final = ("delivered", "skipped", "held", "retried", "dead", "cancelled")
CLAIM_OUTCOMES: Final = OUTCOMES
ENGAGEMENT_TYPES: Final = (CLICK, VIEW)
RETENTION_KINDS: Final = ("events", "deliveries", "claims", "attributions", "devices")
QUEUE_STATES: Final = ("scheduled", "ready", "in_flight", "held", "dead")
# Why a request to a guarded path was refused with 401: no Authorization header, or one that
# is not the daemon's bearer token.
UNAUTHORIZED_REASONS: Final = ("missing", "wrong")
CIRCUIT_STATES: Final[tuple[CircuitState, ...]] = ("closed", "open", "half_open")
# Why an entry of the event stream went to the dead-letter stream: no `event` field, an
# `event` that is not JSON, JSON that is not a valid event, or an event of an unknown app.
STREAM_DEAD_LETTER_REASONS: Final = ("no_event", "not_json", "invalid", "unknown_app")
# lag: entries the consumer group has not read yet; pending: read, not yet acknowledged.
STREAM_BACKLOG_STATES: Final = ("lag", "pending")

# X answers in milliseconds to seconds; a claim's lag spans retries and delays (minutes).
_X_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip


K = TypeVar("K", bound=str)


class Registry(CollectorRegistry):
    """A registry that brings the hot path's tallies into their metrics before any read of
    it (a scrape, a restricted scrape, `get_sample_value`): no read sees a stale value."""

    def __init__(self) -> None:
        super().__init__()
        self._before_read: list[Callable[[], None]] = []

    def before_read(self, flush: Callable[[], None]) -> None:
        self._before_read.append(flush)

    def _flush(self) -> None:
        for flush in self._before_read:
            flush()

    def collect(self) -> Iterator[Metric]:
        self._flush()
        yield from super().collect()

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        self._flush()
        return super().restricted_registry(names)


class CounterTally(Generic[K]):
    """Increments of a labelled counter on the hot path, as plain ints (`counts[label] += 1`),
    added to the counter when the registry is read: each claim moves several counters, and
    a counter's increment (a lock, a method call) costs many times an int's."""

    __slots__ = ("_children", "counts")

    def __init__(self, counter: Counter, labels: Iterable[K]) -> None:
        labels = tuple(labels)
        self._children = {label: counter.labels(label) for label in labels}
        self.counts: dict[K, float] = dict.fromkeys(labels, 0)

    def flush(self) -> None:
        counts = self.counts
        for label, n in counts.items():
            if n:
                counts[label] = 0
                self._children[label].inc(n)


class HistogramTally:
    """Observations of an unlabelled histogram on the hot path: a bucket count and the sum,
    added to the histogram when the registry is read."""

    __slots__ = ("_bounds", "_counts", "_histogram", "_sum")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        # Its bounds but +Inf, which bisect_left stands for by an index past the end: the
        # first bound at or above a value is its bucket, as in `Histogram.observe`.
        self._bounds = histogram._upper_bounds[:-1]
        self._counts = [0] * len(histogram._upper_bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        if not self._sum and not any(self._counts):
            return
        # Bulk `observe`: prometheus-client keeps a count per bucket (cumulated at collect)
        # and the sum; there is no public call that adds many observations at once.
        for bucket, n in zip(self._histogram._buckets, self._counts, strict=True):
            if n:
                bucket.inc(n)
        self._histogram._sum.inc(self._sum)
        self._counts = [0] * len(self._counts)
        self._sum = 0.0


class Metrics:
    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        # process_*: a restart shows as a new start time; memory, CPU and descriptors as well.
        ProcessCollector(registry=r)
        self.build_info = Info("postbackd_build", "Version of the running postbackd", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self.events_received = Counter(
            "postbackd_events_received_total",
            "Events received on ingest, by result",
            ["result"],
            registry=r,
        )
        self.x_requests = Counter(
            "postbackd_x_requests_total",
            "Requests to X, by HTTP status class or failure",
            ["status_class"],
            registry=r,
        )
        self.x_answers = Counter(
            "postbackd_x_answers_total",
            "Answers of X by what they mean for the delivery: ok, rate_limited (429, waits "
            "for the reset), unauthorized (401, holds), retryable (5xx, 408, timeout, "
            "connection error), permanent (any other 4xx, dead)",
            ["kind"],
            registry=r,
        )
        self.x_request_duration = Histogram(
            "postbackd_x_request_duration_seconds",
            "Time from sending a request to X to its answer",
            buckets=_X_LATENCY_BUCKETS,
            registry=r,
        )
        self.circuit_state = Gauge(
            "postbackd_circuit_state",
            "1 for the state the circuit breaker in front of X is in, 0 for the others",
            ["state"],
            registry=r,
        )
        self.delivery_lag = Histogram(
            "postbackd_delivery_lag_seconds",
            "Time from a delivery's first due time to X's final answer",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.deliveries = Counter(
            "postbackd_deliveries_total",
            "Deliveries by outcome (retried counts each retry)",
            ["outcome"],
            registry=r,
        )
        self.claims = Counter(
            "postbackd_claims_total",
            "X claim answers, by attribution outcome",
            ["outcome"],
            registry=r,
        )
        self.attributions = Counter(
            "postbackd_attributions_total",
            "Re-engagement attributions recorded, by engagement type",
            ["engagement_type"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "postbackd_queue_depth", "Deliveries by state", ["state"], registry=r
        )
        self.rate_limit_wait = Counter(
            "postbackd_rate_limit_wait_seconds_total",
            "Time deliveries waited for an X account's rate budget",
            registry=r,
        )
        self.accounts_unauthenticated = Gauge(
            "postbackd_x_accounts_unauthenticated",
            "X accounts whose credentials do not work (their deliveries are held)",
            registry=r,
        )
        self.accounts_circuit_open = Gauge(
            "postbackd_x_accounts_circuit_open",
            "X accounts whose own circuit is open: X fails their requests, so they are paused "
            "and probed while the other accounts send",
            registry=r,
        )
        self.store_errors = Counter(
            "postbackd_store_errors_total",
            "Store commits that failed, by kind (disk_full, io_error, busy, corrupt, closed); "
            "ingest answers 503 store_unavailable meanwhile",
            ["kind"],
            registry=r,
        )
        self.api_unauthorized = Counter(
            "postbackd_api_unauthorized_total",
            "Requests to the API or ingest refused with 401, by reason: missing (no "
            "Authorization header) or wrong (not the daemon's bearer token)",
            ["reason"],
            registry=r,
        )
        self.retention_deleted = Counter(
            "postbackd_retention_deleted_total",
            "Rows the janitor deleted once aged out (retention_days, attribution_retention_days)"
            ", by kind: events, deliveries, claims, attributions, devices",
            ["kind"],
            registry=r,
        )
        self.store_bytes = Gauge(
            "postbackd_store_bytes",
            "Size of the store's files on disk (database, WAL and shared memory)",
            registry=r,
        )
        self.stream_read = Counter(
            "postbackd_stream_read_total",
            "Entries read from the event stream, new or taken over from a dead member "
            "(an entry read again after a failure counts again)",
            registry=r,
        )
        self.stream_acked = Counter(
            "postbackd_stream_acked_total",
            "Entries of the event stream acknowledged (XACK): once their event is committed, "
            "or once moved to the dead-letter stream",
            registry=r,
        )
        self.stream_dead_lettered = Counter(
            "postbackd_stream_dead_lettered_total",
            "Entries of the event stream moved to the dead-letter stream, by reason: no_event, "
            "not_json, invalid, unknown_app",
            ["reason"],
            registry=r,
        )
        self.stream_backlog = Gauge(
            "postbackd_stream_backlog",
            "Entries of the event stream not done yet, by state: lag (not read by the consumer "
            "group yet) and pending (read by a member, not acknowledged yet); counted every 5 s",
            ["state"],
            registry=r,
        )
        # Pre-create every label child so that each series reads 0 from the first scrape.
        for labels, values in (
            (self.events_received, EVENT_RESULTS),
            (self.x_requests, STATUS_CLASSES),
            (self.x_answers, X_ANSWER_KINDS),
            (self.deliveries, DELIVERY_OUTCOMES),
            (self.claims, CLAIM_OUTCOMES),
            (self.attributions, ENGAGEMENT_TYPES),
            (self.queue_depth, QUEUE_STATES),
            (self.circuit_state, CIRCUIT_STATES),
            (self.store_errors, STORE_ERROR_KINDS),
            (self.retention_deleted, RETENTION_KINDS),
            (self.api_unauthorized, UNAUTHORIZED_REASONS),
            (self.stream_dead_lettered, STREAM_DEAD_LETTER_REASONS),
            (self.stream_backlog, STREAM_BACKLOG_STATES),
        ):
            for value in values:
                labels.labels(value)
        # The breaker starts closed (delivery/circuit.py).
        self.set_circuit_state("closed")

    def counter_tally(self, counter: Counter, labels: Iterable[K]) -> CounterTally[K]:
        tally = CounterTally(counter, labels)
        self.registry.before_read(tally.flush)
        return tally

    def histogram_tally(self, histogram: Histogram) -> HistogramTally:
        tally = HistogramTally(histogram)
        self.registry.before_read(tally.flush)
        return tally

    def set_circuit_state(self, state: CircuitState) -> None:
        for name in CIRCUIT_STATES:
            self.circuit_state.labels(name).set(1 if name == state else 0)
