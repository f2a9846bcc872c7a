"""A real HTTP server in front of the real inference service that starts failing after N embedding calls.

It stands in for an inference service that dies part-way through a document (the failure the gateway
must survive without leaving partial chunks); everything it does pass on is the real model's answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fixtures.servers import free_port


class FaultyInference:
    def __init__(self, upstream: str, fail_after: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail_after = fail_after
        self.calls = 0

    def app(self) -> Starlette:
        async def embeddings(request: Request) -> Response:
            self.calls += 1
            if self.calls > self.fail_after:
                return JSONResponse({"error": {"message": "injected failure", "type": "server_error",
                                               "code": "injected"}}, status_code=500)
            async with httpx.AsyncClient(timeout=60) as client:
                upstream = await client.post(f"{self.upstream}/v1/embeddings", content=await request.body(),
                                             headers={"content-type": "application/json"})
            return Response(upstream.content, status_code=upstream.status_code,
                            media_type=upstream.headers.get("content-type"))

        return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@contextmanager
def faulty_inference(upstream: str, fail_after: int) -> Iterator[tuple[str, FaultyInference]]:
    proxy = FaultyInference(upstream, fail_after)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(proxy.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "proxy did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", proxy
    finally:
        server.should_exit = True
        thread.join(5)
