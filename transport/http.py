"""The daemon's HTTP face: incoming webhooks, ``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from marmot.transport.webhooks import HOOKS_PATH, METHODS, WebhookReceiver


def build_app(
    registry: CollectorRegistry,
    health: Callable[[], dict[str, Any]],
    webhooks: WebhookReceiver | None = None,
) -> Starlette:
    """The Starlette app serving health and metrics, and ``/hooks/<slug>`` when given
    a webhook receiver."""

    async def healthz(request: Request) -> Response:
        body = health()
        return JSONResponse(body, status_code=200 if body.get("ok") else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/metrics", metrics)]
    if webhooks is not None:
        routes.append(Route(HOOKS_PATH, webhooks.handle, methods=list(METHODS)))
    return Starlette(routes=routes)
