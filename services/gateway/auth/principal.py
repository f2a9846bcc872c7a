"""Who is calling: the key's id, name, role and the tenant it acts for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID | None  # None: AION_AUTH=off, the local developer
    name: str
    role: Role
    tenant_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def caller(self) -> str | None:
        """Who rate limits and budget shares count against (None: the local developer, not counted)."""
        return f"key:{self.key_id}" if self.key_id else None
