"""Who is calling: the key's id, name, role and the tenant it acts for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")
# How the caller proved who it is: an API key, AION's own token, an external issuer's token, or nothing
# (AION_AUTH=off).
Credential = Literal["key", "token", "external", "local"]


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID | None  # None: AION_AUTH=off, the local developer
    name: str
    role: Role
    tenant_id: str
    via: Credential = "key"
    auth_time: int | None = None  # AION tokens: when the key was exchanged (renewals keep it)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def caller(self) -> str | None:
        """Who rate limits and budget shares count against (None: the local developer, not counted)."""
        return f"key:{self.key_id}" if self.key_id else None
