"""The aiohttp application: routes, middlewares, health and metrics, and the web console."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from postbackd.catalog import Catalog
from postbackd.console import make_console
from postbackd.metrics import Metrics

from .admin import AdminRoutes, Authenticate
from .http import auth_middleware, errors_middleware, json_response
from .ingest import IngestRoute
from .openapi import PATH as OPENAPI_PATH
from .openapi import document
from .results import ResultRoutes


def make_app(
    *,
    catalog: Catalog,
    metrics: Metrics,
    api_token: str,
    authenticate: Authenticate,
    max_body_bytes: int,
    is_ready: Callable[[], bool],
    ingest: IngestRoute,
    results: ResultRoutes,
) -> web.Application:
    # client_max_size makes aiohttp refuse larger bodies itself; the middleware turns its
    # 413 into our JSON error.
    app = web.Application(
        middlewares=[
            errors_middleware,
            auth_middleware(api_token, metrics, open_paths={OPENAPI_PATH}),
        ],
        client_max_size=max_body_bytes,
    )
    AdminRoutes(catalog, authenticate, max_body_bytes, results.pending_deliveries).add_to(app)
    results.add_to(app)
    app.router.add_post("/track/json", ingest.handle)

    _add_health_routes(app, metrics, is_ready)
    # Made once: it describes the routes and settings of this process, which do not change.
    description = document(max_body_bytes=max_body_bytes, max_items=ingest.max_items)

    async def openapi(_: web.Request) -> web.Response:
        return json_response(description)

    app.router.add_get(OPENAPI_PATH, openapi)
    # The web console: HTML for people, its own sessions and headers (PRODUCT.md 6); it
    # works through the same catalog, authentication and results as the routes above.
    app.add_subapp(
        "/console",
        make_console(
            catalog=catalog, authenticate=authenticate, results=results, api_token=api_token
        ),
    )
    return app


def make_metrics_app(metrics: Metrics, is_ready: Callable[[], bool]) -> web.Application:
    """`/metrics`, `/healthz` and `/readyz` alone, for `metrics_listen`: the figures of this
    process only, where the main port may be shared by several workers."""
    app = web.Application(middlewares=[errors_middleware])
    _add_health_routes(app, metrics, is_ready)
    return app


def _add_health_routes(
    app: web.Application, metrics: Metrics, is_ready: Callable[[], bool]
) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready = is_ready()
        return json_response({"ready": ready}, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
