"""What `aion ingest` and `aion search` share: the gateway's URL and key, and readable errors."""

from __future__ import annotations

import sys

import httpx
from pydantic import Field

from shared.settings import CommonSettings


class ClientSettings(CommonSettings):
    """Where the CLI finds the gateway; kept apart from GatewaySettings so a CLI call imports no DB code."""

    gateway_url: str = Field(default="http://127.0.0.1:3000", validation_alias="AION_GATEWAY_URL")
    api_key: str | None = Field(default=None, validation_alias="AION_API_KEY")
    # What `aion chat` keeps of the questions typed at its prompt (arrow-up recalls them); empty: kept in
    # memory for the session only.
    chat_history: str = Field(default="~/.aion_chat_history", validation_alias="AION_CHAT_HISTORY")


def gateway_client(url: str | None, timeout: float) -> httpx.Client:
    settings = ClientSettings()
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.Client(base_url=(url or settings.gateway_url).rstrip("/"), timeout=timeout, headers=headers)


def error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def unreachable(client: httpx.Client, exc: Exception) -> int:
    sys.stderr.write(f"aion: the gateway at {client.base_url} is not reachable ({type(exc).__name__}); start it "
                     "with `aion gateway` or set AION_GATEWAY_URL / --url\n")
    return 2
