"""Typed dependencies: routes receive the state they need, or a 503 while the model loads."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from shared.errors import ServiceUnavailable, Unauthorized

from .state import InferenceState


def get_state(request: Request) -> InferenceState:
    return request.app.state.inference


StateDep = Annotated[InferenceState, Depends(get_state)]


def ready_state(state: StateDep) -> InferenceState:
    if state.status == "loading":
        raise ServiceUnavailable("the model is still loading; retry in a few seconds",
                                 headers={"Retry-After": "5"})
    if state.status != "ready":
        raise ServiceUnavailable(f"the model failed to load: {state.error}; fix the setting and restart")
    return state


ReadyDep = Annotated[InferenceState, Depends(ready_state)]


def require_token(request: Request) -> None:
    """When AION_INFERENCE_TOKEN is set, every route but /health needs it as a Bearer token."""
    expected = request.app.state.inference.settings.inference_token
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise Unauthorized("this inference service needs 'Authorization: Bearer <AION_INFERENCE_TOKEN>'",
                           headers={"WWW-Authenticate": "Bearer"})
