"""The six scenarios, one module each; every `run(ctx)` returns an `Outcome`."""

from __future__ import annotations
