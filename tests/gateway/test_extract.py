"""Extraction of each supported format, and the reasons files are refused."""

from __future__ import annotations

import io

import pytest

from services.gateway.services.extract import Refused, detect_kind, extract

from .pdfs import build_pdf, encrypt_pdf


def _extract(name: str, data: bytes, content_type: str | None = None):
    return extract(detect_kind(name, content_type), data, name)


def test_markdown_headings_lists_code_tables_and_front_matter():
    md = b"""---
title: ignored front matter
---
Setext Title
============

Intro with a [link](http://example.com) and text.

## Steps

- first item
  continued
- second item

```python
print("code block")
```

| a | b |
|---|---|
| 1 | 2 |
"""
    ex = _extract("guide.md", md)
    assert ex.title == "Setext Title"
    kinds = [(b.kind, b.text) for b in ex.blocks]
    assert kinds[0] == ("heading", "Setext Title")
    assert ("paragraph", "Intro with a link and text.") in kinds
    assert ("heading", "Steps") in kinds
    assert ("paragraph", "- first item\n  continued") in kinds
    assert any(k == "lines" and 'print("code block")' in t for k, t in kinds)
    assert ("lines", "| a | b |\n| 1 | 2 |") in kinds
    assert not any("front matter" in t for _, t in kinds)


def test_html_text_only_with_headings():
    html = b"""<html><head><title>Page title</title><style>body{color:red}</style></head>
    <body><script>var secret = 1;</script><nav><a href="/">Home</a></nav>
    <h2>Opening hours</h2><p>We open at <b>9</b> am.</p><div>Bare div text</div>
    <ul><li>Monday</li><li>Tuesday</li></ul></body></html>"""
    ex = _extract("page.html", html)
    assert ex.title == "Page title"
    texts = [(b.kind, b.text) for b in ex.blocks]
    assert ("heading", "Opening hours") in texts
    assert ("paragraph", "We open at 9 am.") in texts
    assert ("paragraph", "Bare div text") in texts
    assert ("paragraph", "Monday") in texts
    assert not any("secret" in t or "color" in t for _, t in texts)


def test_docx_paragraphs_headings_and_tables():
    import docx

    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew by eleven percent.")
    document.add_heading("Risks", level=2)
    document.add_paragraph("Supply of copper is uncertain.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Sales"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "42"
    buf = io.BytesIO()
    document.save(buf)
    ex = _extract("report.docx", buf.getvalue())
    assert ex.title == "Quarterly report"
    assert [(b.kind, b.text) for b in ex.blocks] == [
        ("heading", "Quarterly report"), ("paragraph", "Revenue grew by eleven percent."),
        ("heading", "Risks"), ("paragraph", "Supply of copper is uncertain."),
        ("lines", "Region | Sales\nNorth | 42")]


def test_pdf_pages_and_title():
    pdf = build_pdf([["First page text."], ["Second page text."]], title="Manual")
    ex = _extract("m.pdf", pdf)
    assert ex.title == "Manual" and ex.meta["pages"] == 2
    assert [(b.page, b.text) for b in ex.blocks] == [(1, "First page text."), (2, "Second page text.")]


def test_pdf_with_only_an_owner_password_is_read():
    ex = _extract("m.pdf", encrypt_pdf(build_pdf([["Readable despite restrictions."]]), user_password=""))
    assert ex.blocks[0].text == "Readable despite restrictions."


def test_text_in_windows_1252_is_decoded():
    ex = _extract("notes.txt", "Café com pão às três.".encode("cp1252"))
    assert ex.blocks[0].text == "Café com pão às três."


@pytest.mark.parametrize(("name", "data", "status", "code"), [
    ("photo.png", b"\x89PNG\r\n\x1a\n....", 415, "unsupported_type"),
    ("old.doc", b"\xd0\xcf\x11\xe0 legacy word", 415, "unsupported_type"),
    ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", 422, "unreadable"),
    ("fake.pdf", b"hello, I am text", 422, "unreadable"),
    ("fake.docx", b"PK\x03\x04 not a real zip", 422, "unreadable"),
    ("binary.txt", b"abc\x00\x01\x02def", 422, "unreadable"),
    ("blank.pdf", build_pdf([[""]]), 422, "no_text"),
    ("only-markup.html", b"<html><body><script>x()</script></body></html>", 422, "no_text"),
])
def test_refusals_carry_status_and_reason(name, data, status, code):
    with pytest.raises(Refused) as info:
        _extract(name, data)
    assert (info.value.status_code, info.value.code) == (status, code)
    assert len(info.value.message) > 10


def test_encrypted_pdf_is_refused_with_advice():
    with pytest.raises(Refused) as info:
        _extract("locked.pdf", encrypt_pdf(build_pdf([["Secret text."]])))
    assert info.value.code == "encrypted_pdf" and "password" in info.value.message


def test_kind_from_content_type_when_the_name_has_no_extension():
    assert detect_kind("README", "text/markdown; charset=utf-8").name == "markdown"
    with pytest.raises(Refused):
        detect_kind("README", "application/octet-stream")
