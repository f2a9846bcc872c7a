"""Prometheus metrics of the gateway, on a registry of its own (one per app), and the middleware that
counts every request by route template and status.

The JSON panel (`GET /api/ai/metrics`) reads the event log in Postgres; this is the scrape side:
counters in memory, cheap to update on the answer path, readable while the database is down.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# Budget gauges are read from Postgres at scrape time; a slow or absent database must not stall a scrape.
BUDGET_READ_TIMEOUT_S = 2.0

# Warnings of the answer path that mean an upstream model failed (see services/answer.py).
_UPSTREAM_WARNINGS = {"local_unavailable": "local", "fallback_failed": "fallback"}


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("aion_gateway_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("aion_gateway_request_seconds",
                                         "HTTP request latency, to the last byte (whole streams included)",
                                         ["route"], registry=r,
                                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self.in_progress = Gauge("aion_gateway_requests_in_progress", "Requests (and open streams) being served",
                                 registry=r)
        self.time_to_first_token = Histogram("aion_gateway_time_to_first_token_seconds",
                                             "From the question to the first answer token (retrieval included)",
                                             ["used"], registry=r,
                                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.answers = Counter("aion_gateway_answers", "Answers by the model that gave them and outcome",
                               ["used", "outcome"], registry=r)
        self.fallback_spend = Counter("aion_gateway_fallback_spend_usd", "Settled cost of fallback calls (USD)",
                                      registry=r)
        self.upstream_errors = Counter("aion_gateway_upstream_errors",
                                       "Failures of the local model, the fallback or the embeddings service",
                                       ["upstream"], registry=r)
        self.budget_cap = Gauge("aion_gateway_budget_cap_usd", "Fallback budget per period (USD)", registry=r)
        self.budget_spent = Gauge("aion_gateway_budget_spent_usd", "Fallback spend this period (USD)", registry=r)
        self.budget_remaining = Gauge("aion_gateway_budget_remaining_usd",
                                      "Fallback budget left this period, reservations deducted (USD)", registry=r)
        self.fallback_share = Gauge("aion_gateway_fallback_share", "Share of this period's answers that used "
                                    "the fallback", registry=r)

    def observe_answer(self, meta: dict[str, Any]) -> None:
        """Called once per answer with the meta of its `answer` event (whatever the outcome)."""
        used = meta.get("used") or "none"
        self.answers.labels(used=used, outcome="complete" if meta.get("complete") else "failed").inc()
        if meta.get("first_token_ms") is not None:
            self.time_to_first_token.labels(used=used).observe(meta["first_token_ms"] / 1000)
        if meta.get("cost_usd"):
            self.fallback_spend.inc(float(meta["cost_usd"]))
        for warning in meta.get("warnings") or ():
            if warning in _UPSTREAM_WARNINGS:
                self.upstream_errors.labels(upstream=_UPSTREAM_WARNINGS[warning]).inc()

    def inference_error(self, what: str) -> None:
        """The inference service's non-chat routes (embeddings) failed or were unreachable."""
        self.upstream_errors.labels(upstream=what).inc()

    async def refresh_budget(self, state: Any) -> None:
        try:
            with anyio.fail_after(BUDGET_READ_TIMEOUT_S):
                status = await state.budget.status(state.settings.tenant_id)
        except Exception as exc:  # the scrape still answers with everything else
            logger.warning("budget gauges not refreshed: %s", type(exc).__name__)
            return
        self.budget_cap.set(status["cap_usd"])
        self.budget_spent.set(status["spent_usd"])
        self.budget_remaining.set(status["remaining_usd"])
        self.fallback_share.set(status["fallback_share"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests by route template (never the raw path, so ids do not explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        self.metrics.in_progress.inc()

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            self.metrics.in_progress.dec()
            # The router writes the matched route into this same scope dict.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            self.metrics.request_seconds.labels(route=route).observe(time.perf_counter() - started)


router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format (the JSON panel is /api/ai/metrics)."""
    metrics: GatewayMetrics = request.app.state.metrics
    state = getattr(request.app.state, "gateway", None)
    if state is not None:
        await metrics.refresh_budget(state)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")


def install_metrics(app: FastAPI) -> GatewayMetrics:
    """Registry on app.state.metrics, the counting middleware, and GET /metrics."""
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
    return metrics
