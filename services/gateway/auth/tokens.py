"""Signed tokens (JWT, through PyJWT): AION's own, exchanged for an API key, and an external issuer's.

AION's tokens are short-lived and carry the key's id and role; every request with one still checks
that the key is not revoked (one indexed row, as for a key), so revoking a key ends its tokens at
once. A token may be renewed with itself until AION_JWT_SESSION_MAX after the key was exchanged.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jwt

from shared.errors import Unauthorized

from ..settings import GatewaySettings
from .principal import ROLES, Principal, Role

ISSUER = "aion"
AUDIENCE = "aion-gateway"
# Small clock differences between replicas and the identity provider.
LEEWAY_S = 30


def looks_like_jwt(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 3 and all(parts[:2])


def unverified_issuer(token: str) -> str | None:
    """Whose token this says it is; only to pick the key that verifies it."""
    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return issuer if isinstance(issuer, str) else None


def _refused(message: str) -> Unauthorized:
    return Unauthorized(message, code="invalid_token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: int
    expires_in: int


@dataclass(frozen=True)
class TokenClaims:
    key_id: uuid.UUID
    role: Role
    auth_time: int


class TokenAuthority:
    """Issues and verifies AION's own tokens: RS256 with the configured key pair, else HS256."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.ttl_s = settings.jwt_ttl_s
        self.session_max_s = settings.jwt_session_max_s
        self._keys: tuple[str, Any, Any] | None = None  # (algorithm, signing key, verifying key)
        self._lock = threading.Lock()

    @property
    def algorithm(self) -> str:
        return self._load()[0]

    def _load(self) -> tuple[str, Any, Any]:
        """Keys read on first use (the secret file may need creating; the app may never issue a token)."""
        with self._lock:
            if self._keys is None:
                s = self.settings
                if s.jwt_private_key_file and s.jwt_public_key_file:
                    private = s.jwt_private_key_file.expanduser().read_text()
                    public = s.jwt_public_key_file.expanduser().read_text()
                    self._keys = ("RS256", private, public)
                else:
                    secret = s.jwt_secret or _stored_secret(s.jwt_secret_path())
                    self._keys = ("HS256", secret, secret)
            return self._keys

    def issue(self, principal: Principal, *, auth_time: int | None = None) -> IssuedToken:
        if principal.key_id is None:
            raise ValueError("only a key's principal gets a token")
        algorithm, signing, _ = self._load()
        now = int(time.time())
        expires = now + self.ttl_s
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"key:{principal.key_id}", "key_id": str(principal.key_id),
                  "role": principal.role, "tenant": principal.tenant_id, "name": principal.name, "iat": now,
                  "nbf": now, "exp": expires, "auth_time": auth_time or now, "jti": uuid.uuid4().hex}
        return IssuedToken(jwt.encode(claims, signing, algorithm=algorithm), expires, self.ttl_s)

    def verify(self, token: str) -> TokenClaims:
        algorithm, _, verifying = self._load()
        try:
            claims = jwt.decode(token, verifying, algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER,
                                leeway=LEEWAY_S,
                                options={"require": ["exp", "iat", "iss", "aud", "sub", "key_id", "auth_time"]})
            key_id = uuid.UUID(str(claims["key_id"]))
            role = claims.get("role")
            auth_time = int(claims["auth_time"])
        except jwt.ExpiredSignatureError as exc:
            raise _refused("the token expired; exchange the API key for a new one (POST /api/auth/token)") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _refused(f"the token is not valid here ({exc}); exchange an API key for one with "
                           "POST /api/auth/token") from exc
        if role not in ROLES:
            raise _refused(f"the token's role '{role}' is not one of {', '.join(ROLES)}")
        return TokenClaims(key_id=key_id, role=role, auth_time=auth_time)

    def renewable(self, auth_time: int | None) -> bool:
        return auth_time is not None and time.time() - auth_time < self.session_max_s


@dataclass(frozen=True)
class ExternalIdentity:
    subject: str  # "<issuer>|<sub>"
    name: str
    role: Role


class ExternalIssuer:
    """Tokens of an owner's identity provider: signature from its JWKS, issuer and audience checked."""

    def __init__(self, jwks_url: str, *, issuer: str, audience: str, role_claim: str, default_role: Role) -> None:
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.default_role = default_role
        # Keys are cached and refetched when a token names a key id the cache lacks (key rotation).
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=10)

    async def verify(self, token: str) -> ExternalIdentity:
        try:
            # The JWKS fetch is a blocking urllib call: off the event loop.
            key = await anyio.to_thread.run_sync(self.jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(token, key.key, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                                audience=self.audience, issuer=self.issuer, leeway=LEEWAY_S,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise _refused("the identity provider's token expired; sign in again") from exc
        except jwt.PyJWKClientConnectionError as exc:
            raise _refused(f"the identity provider's keys could not be fetched from AION_JWT_JWKS_URL ({exc})") from exc
        except jwt.PyJWTError as exc:
            raise _refused(f"the identity provider's token was refused ({exc})") from exc
        name = next((str(claims[c]) for c in ("email", "preferred_username", "name", "sub") if claims.get(c)), "")
        return ExternalIdentity(subject=f"{self.issuer}|{claims['sub']}", name=name[:100],
                                role=self._role(claims.get(self.role_claim)))

    def _role(self, value: Any) -> Role:
        values = value if isinstance(value, list) else [value]
        if "admin" in values:
            return "admin"
        if "user" in values:
            return "user"
        return self.default_role


def _stored_secret(path: Path) -> str:
    """A secret made once and kept in the data dir (mode 0600), so tokens outlive a restart."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    try:
        os.link(tmp, path)  # never replaces a secret another process wrote first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def build_external_issuer(settings: GatewaySettings) -> ExternalIssuer | None:
    if not settings.jwt_jwks_url:
        return None
    assert settings.jwt_issuer and settings.jwt_audience  # the settings check insists
    return ExternalIssuer(settings.jwt_jwks_url, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                          role_claim=settings.jwt_role_claim, default_role=settings.jwt_default_role)
