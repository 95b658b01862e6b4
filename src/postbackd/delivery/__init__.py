"""Delivery engine: scheduling, per-account rate budgets, retry policy, circuit breaker, sender."""
