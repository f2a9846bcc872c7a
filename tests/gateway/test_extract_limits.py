"""Decompression bombs and oversized documents are refused with a 4xx naming the limit, while the
gateway keeps answering other requests."""

from __future__ import annotations

import anyio
import pytest

from services.gateway.services.extract import ExtractLimits, Refused, detect_kind, extract

from .bombs import docx_bomb, pdf_bomb
from .conftest import kb_files, upload
from .pdfs import build_pdf

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
LIMITS = {"AION_EXTRACT_MAX_UNCOMPRESSED_MB": 8, "AION_EXTRACT_MAX_PAGES": 2}


async def test_bombs_are_refused_while_search_keeps_working(make_gateway):
    async with make_gateway(**LIMITS) as gateway:
        assert (await gateway.post("/api/ai/documents", files=kb_files("lighthouse.md"))).status_code == 201
        responses = {}

        async def send(name: str, data: bytes, content_type: str) -> None:
            responses[name] = await gateway.post("/api/ai/documents", files=[upload(name, data, content_type)])

        async def search() -> None:
            responses["search"] = await gateway.post("/api/ai/search", json={"q": "Who kept the lighthouse?"})

        async with anyio.create_task_group() as tasks:  # 16 MiB each, over the 8 MiB limit
            tasks.start_soon(send, "bomb.docx", docx_bomb(16), DOCX)
            tasks.start_soon(send, "bomb.pdf", pdf_bomb(16), "application/pdf")
            tasks.start_soon(search)
        for name in ("bomb.docx", "bomb.pdf"):
            r = responses[name]
            assert r.status_code == 413, (name, r.text)
            assert "AION_EXTRACT_MAX_UNCOMPRESSED_MB" in r.json()["error"]["message"]
            assert r.json()["results"][0]["code"] == "uncompressed_too_large"
        assert responses["search"].status_code == 200
        assert responses["search"].json()["passages"][0]["document"] == "lighthouse.md"

        pages = build_pdf([["one"], ["two"], ["three"]])
        r = await gateway.post("/api/ai/documents", files=[upload("long.pdf", pages, "application/pdf")])
        assert r.status_code == 413 and "AION_EXTRACT_MAX_PAGES" in r.json()["error"]["message"], r.text
        listed = (await gateway.get("/api/ai/documents")).json()
        assert [d["source_name"] for d in listed["items"]] == ["lighthouse.md"]  # nothing of the refused files


def test_default_limits_refuse_a_256_mib_docx_bomb_without_inflating_it():
    with pytest.raises(Refused) as refused:
        extract(detect_kind("bomb.docx", None), docx_bomb(256), "bomb.docx")
    assert refused.value.status_code == 413 and "100 MiB" in refused.value.message


def test_a_file_that_takes_too_long_is_refused_naming_the_setting():
    data = build_pdf([["first page"], ["second page"]])
    assert extract(detect_kind("a.pdf", None), data, "a.pdf").blocks  # readable within the default limits
    with pytest.raises(Refused) as refused:
        extract(detect_kind("a.pdf", None), data, "a.pdf", ExtractLimits(timeout_s=1e-9))
    assert refused.value.status_code == 422 and "AION_EXTRACT_TIMEOUT" in refused.value.message
