"""Uploaded file names are labels, never paths: nothing is written where a name points."""

from __future__ import annotations

import os

from tests.gateway.conftest import upload

from .conftest import bearer, create_key


async def test_file_names_never_touch_the_filesystem(secure_gateway, inference_url, tmp_path):
    target = tmp_path / "escaped"
    target.mkdir()
    names = [f"../../../../../../..{target}/pwned.md", f"{target}/absolute.md", "..\\..\\windows\\evil.md",
             "sub/../../dots.md"]
    before = set(os.listdir(target))
    async with secure_gateway(inference_url=inference_url) as client:
        admin = await create_key(client, role="admin")
        files = [upload(name, f"# Nota {i}\n\nTexto distinto número {i} sobre girassóis.\n".encode(), "text/markdown")
                 for i, name in enumerate(names)]
        r = await client.post("/api/ai/documents", headers=bearer(admin), files=files)
        assert r.status_code == 201, r.text
        stored = [d["source_name"] for d in
                  (await client.get("/api/ai/documents", headers=bearer(admin))).json()["items"]]
    assert set(os.listdir(target)) == before  # nothing written where the names point
    assert len(stored) == len(names)
    for name in stored:
        assert not name.startswith("/") and ".." not in name.split("/") and "\\" not in name, name
