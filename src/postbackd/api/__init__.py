"""The HTTP side: one aiohttp application for the admin API, ingest, health and metrics."""
