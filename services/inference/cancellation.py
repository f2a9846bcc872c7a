"""A request whose client went away stops generating: the non-streaming routes race the work with a watch
on the connection (streams notice by themselves, when a write fails)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from shared.errors import AionError

T = TypeVar("T")


class ClientGone(AionError):
    status_code = 499
    code = "client_disconnected"


async def _disconnected(request: Request) -> None:
    # The body was read already: the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """The result of `work`, or, when the client disconnects first, `work` cancelled and ClientGone raised."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientGone("the client disconnected; the generation was cancelled")
    return task.result()
