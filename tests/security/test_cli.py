"""`aion keys` and `aion gateway` as a person runs them: real processes on the test database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from services.gateway.auth.keys import looks_like_key
from tests.fixtures.servers import REPO, base_env

from .conftest import bearer


def aion(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aion", *args], env=base_env(data_dir, **env), cwd=REPO,
                          capture_output=True, text=True, timeout=120)


async def test_keys_create_list_revoke_round_trip(clean_db, tmp_path, secure_gateway):
    created = aion(tmp_path, "keys", "create", "--name", "laptop", "--role", "admin", DATABASE_URL=clean_db,
                   PRIMARY_TENANT_ID="test-tenant")  # the default tenant of a new key
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert looks_like_key(key) and "cannot be shown again" in created.stderr
    phone = aion(tmp_path, "keys", "create", "--name", "phone", "--tenant", "tenant-b", DATABASE_URL=clean_db)
    assert phone.returncode == 0, phone.stderr

    listed = aion(tmp_path, "keys", "list", DATABASE_URL=clean_db)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[2]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["laptop"][1] == key[:13] and rows["laptop"][3:5] == ["admin", "test-tenant"]
    assert rows["phone"][3:5] == ["user", "tenant-b"]  # user is the default role
    assert key not in listed.stdout

    async with secure_gateway() as client:
        assert (await client.get("/api/ai/budget", headers=bearer(key))).status_code == 200

        revoked = aion(tmp_path, "keys", "revoke", key[:13], DATABASE_URL=clean_db)
        assert revoked.returncode == 0 and "revoked key 'laptop'" in revoked.stdout
        assert (await client.get("/api/ai/budget", headers=bearer(key))).status_code == 401

    again = aion(tmp_path, "keys", "revoke", rows["laptop"][0], DATABASE_URL=clean_db)  # by id this time
    assert again.returncode == 0 and "already revoked" in again.stdout
    active = aion(tmp_path, "keys", "list", DATABASE_URL=clean_db).stdout
    assert "laptop" not in active and "phone" in active
    everything = aion(tmp_path, "keys", "list", "--all", DATABASE_URL=clean_db).stdout
    laptop = next(line for line in everything.splitlines() if " laptop " in line)
    assert laptop.rstrip().split()[-1] != "-"  # a revocation time

    unknown = aion(tmp_path, "keys", "revoke", "aion_nothing", DATABASE_URL=clean_db)
    assert unknown.returncode == 1 and "no key with id or prefix" in unknown.stderr
    with psycopg.connect(clean_db) as conn:  # two keys whose shown prefixes start alike
        for n in (1, 2):
            conn.execute("INSERT INTO api_keys (id, name, role, tenant_id, key_prefix, key_hash) "
                         "VALUES (gen_random_uuid(), %s, 'user', 't', %s, %s)", (f"dup{n}", f"aion_dup{n}xxxx", f"{n}" * 64))
    ambiguous = aion(tmp_path, "keys", "revoke", "aion_dup", DATABASE_URL=clean_db)
    assert ambiguous.returncode == 1 and "matches 2 keys" in ambiguous.stderr


def test_keys_on_an_unmigrated_database_says_what_to_run(scratch_database, tmp_path):
    r = aion(tmp_path, "keys", "list", DATABASE_URL=scratch_database)
    assert r.returncode == 1 and "run `aion db upgrade` first" in r.stderr and "Traceback" not in r.stderr


def test_gateway_refuses_to_start_without_auth_on_a_public_address(tmp_path):
    r = aion(tmp_path, "gateway", "--host", "0.0.0.0", AION_AUTH="off", OPENAI_API_KEY="sk-should-not-show-123")
    assert r.returncode == 2
    assert "AION_AUTH=off is for local development only" in r.stderr and "aion keys create" in r.stderr
    assert "Traceback" not in r.stderr and "sk-should-not-show-123" not in r.stderr
