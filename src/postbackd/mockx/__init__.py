"""The simulated X Ads API (`postbackd mock-x`): the reference wire format, OAuth 1.0a checks,
rate limits, injected faults and scripted or seeded claims. Tests, benchmarks and the demo
run it in-process with `start_mock` or as a command."""

from __future__ import annotations
