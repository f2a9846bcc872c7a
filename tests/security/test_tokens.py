"""Signed tokens on the real gateway: an API key exchanged for a short-lived JWT (HS256 or RS256) that
works in its place, renews, and dies with its key; an external issuer's tokens checked against a JWKS
served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.utils import base64url_encode

from services.gateway.auth import repository
from services.gateway.auth.tokens import AUDIENCE, ISSUER
from tests.fixtures.servers import run_asgi

from .conftest import bearer, create_key


def _message(response) -> str:
    return response.json()["error"]["message"]


async def _exchange(client, credential: str) -> dict:
    r = await client.post("/api/auth/token", headers=bearer(credential))
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_key_becomes_a_token_that_works_renews_and_dies_with_the_key(secure_gateway, tmp_path: Path):
    async with secure_gateway(AION_DATA_DIR=str(tmp_path), AION_JWT_TTL=60) as client:
        user = await create_key(client, role="user", name="browser")
        issued = await _exchange(client, user)
        token = issued["access_token"]
        assert issued["token_type"] == "Bearer" and issued["expires_in"] == 60 and issued["algorithm"] == "HS256"
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["role"] == "user" and claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
        assert uuid.UUID(claims["key_id"]) and user not in token
        # With no AION_JWT_SECRET, a secret made once in the data dir, readable by its owner only.
        secret_file = tmp_path / "jwt-secret"
        assert secret_file.stat().st_mode & 0o077 == 0
        secret = secret_file.read_text()

        assert (await client.get("/api/ai/documents", headers=bearer(token))).status_code == 200
        r = await client.delete(f"/api/ai/documents/{uuid.uuid4()}", headers=bearer(token))
        assert r.status_code == 403 and "admin" in _message(r)  # the role travels with the token

        renewed = await _exchange(client, token)
        new_claims = jwt.decode(renewed["access_token"], options={"verify_signature": False})
        assert new_claims["auth_time"] == claims["auth_time"] and new_claims["jti"] != claims["jti"]

        # Forged, expired, or past the session's age: refused with what to do.
        forged = jwt.encode({**claims, "role": "admin"}, "not-the-secret" * 4, algorithm="HS256")
        assert (await client.get("/api/ai/documents", headers=bearer(forged))).status_code == 401
        expired = jwt.encode({**claims, "exp": int(time.time()) - 120}, secret, algorithm="HS256")
        r = await client.get("/api/ai/documents", headers=bearer(expired))
        assert r.status_code == 401 and "expired" in _message(r) and "/api/auth/token" in _message(r)
        old = jwt.encode({**claims, "auth_time": int(time.time()) - 50_000}, secret, algorithm="HS256")
        assert (await client.get("/api/ai/documents", headers=bearer(old))).status_code == 200
        r = await client.post("/api/auth/token", headers=bearer(old))
        assert r.status_code == 401 and "AION_JWT_SESSION_MAX" in _message(r)

        # Revoking the key ends every token made from it, at once.
        async with client.app.state.gateway.sessions() as session:
            row = await repository.find(session, user[:13])
            assert row is not None and await repository.revoke(session, row)
            await session.commit()
        for credential in (token, renewed["access_token"]):
            r = await client.get("/api/ai/documents", headers=bearer(credential))
            assert r.status_code == 401 and "revoked" in _message(r)


def _rsa_pair(folder: Path, name: str) -> tuple[Path, Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, key


async def test_rs256_tokens_and_no_algorithm_confusion(secure_gateway, tmp_path: Path):
    private, public, _ = _rsa_pair(tmp_path, "aion")
    async with secure_gateway(AION_JWT_PRIVATE_KEY_FILE=str(private), AION_JWT_PUBLIC_KEY_FILE=str(public)) as client:
        admin = await create_key(client, role="admin")
        issued = await _exchange(client, admin)
        assert issued["algorithm"] == "RS256" and jwt.get_unverified_header(issued["access_token"])["alg"] == "RS256"
        assert (await client.get("/api/ai/adapters", headers=bearer(issued["access_token"]))).status_code == 200
        # The classic forgery: HS256 "signed" with the public key as the HMAC secret.
        claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
        signing_input = b".".join(base64url_encode(json.dumps(part).encode())
                                  for part in ({"alg": "HS256", "typ": "JWT"}, claims))
        signature = hmac.new(public.read_bytes(), signing_input, hashlib.sha256).digest()
        forged = (signing_input + b"." + base64url_encode(signature)).decode()
        r = await client.get("/api/ai/documents", headers=bearer(forged))
        assert r.status_code == 401


@pytest.fixture
def identity_provider(tmp_path: Path) -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """A JWKS on 127.0.0.1 with one RS256 key (kid `idp-1`), as an OpenID provider publishes it."""
    _, _, key = _rsa_pair(tmp_path, "idp")
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())),
           "kid": "idp-1", "use": "sig", "alg": "RS256"}
    app = FastAPI()

    @app.get("/jwks.json")
    async def jwks() -> dict:
        return {"keys": [jwk]}

    with run_asgi(app) as url:
        yield url + "/jwks.json", key


def _idp_token(key, *, kid: str = "idp-1", **claims) -> str:
    now = int(time.time())
    body = {"iss": "https://idp.test", "aud": "aion", "sub": "u-1", "email": "ana@example.com", "iat": now,
            "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


async def test_an_external_issuers_tokens_sign_people_in(secure_gateway, identity_provider, clean_db):
    jwks_url, key = identity_provider
    async with secure_gateway(AION_JWT_JWKS_URL=jwks_url, AION_JWT_ISSUER="https://idp.test",
                              AION_JWT_AUDIENCE="aion") as client:
        user = _idp_token(key)
        assert (await client.get("/api/ai/documents", headers=bearer(user))).status_code == 200
        r = await client.get("/api/ai/adapters", headers=bearer(user))
        assert r.status_code == 403  # no role claim: AION_JWT_DEFAULT_ROLE (user)
        admin = _idp_token(key, sub="u-2", email="bo@example.com", aion_role=["admin", "staff"])
        assert (await client.get("/api/ai/adapters", headers=bearer(admin))).status_code == 200
        r = await client.post("/api/auth/token", headers=bearer(admin))
        assert r.status_code == 400 and "identity provider" in _message(r)

        for bad in (_idp_token(key, aud="someone-else"), _idp_token(key, kid="unknown-kid"),
                    _idp_token(key, exp=int(time.time()) - 600),
                    _idp_token(rsa.generate_private_key(public_exponent=65537, key_size=2048))):
            assert (await client.get("/api/ai/documents", headers=bearer(bad))).status_code == 401
        other_issuer = _idp_token(key, iss="https://evil.test")
        r = await client.get("/api/ai/documents", headers=bearer(other_issuer))
        assert r.status_code == 401 and "https://evil.test" in _message(r)

        # Each person is a row of their own: listed, limited and revocable like a key.
        with psycopg.connect(clean_db) as conn:
            rows = conn.execute("SELECT name, role, key_prefix FROM api_keys WHERE external_subject IS NOT NULL "
                                "ORDER BY name").fetchall()
            assert rows == [("sso:ana@example.com", "user", "sso"), ("sso:bo@example.com", "admin", "sso")]
            conn.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'sso:ana@example.com'")
        r = await client.get("/api/ai/documents", headers=bearer(user))
        assert r.status_code == 403 and "revoked" in _message(r)


async def test_auth_off_needs_no_token(clean_db):
    from tests.gateway.conftest import gateway_settings, running_gateway

    from .conftest import dead_inference_url

    async with running_gateway(gateway_settings(clean_db, dead_inference_url())) as client:
        r = await client.post("/api/auth/token")
        assert r.status_code == 400 and "AION_AUTH=off" in _message(r)
