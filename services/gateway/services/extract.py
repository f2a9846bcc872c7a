"""Text and structure out of uploaded files: txt, md, pdf (pypdf), html (text only), docx.

Each extractor returns blocks in reading order — headings (with their level) and paragraphs (with
their page, for PDFs) — which the chunker turns into passages that keep their heading or page.
Problems a person can fix are raised as `Refused` with the HTTP status and the reason.

.pdf and .docx are compressed containers: a few kilobytes may expand to gigabytes (a decompression
bomb). Their extraction runs under `ExtractLimits`: what the file may expand to, its pages, and the
time it may take; past one, the file is refused with a 413 (or 422 for time) naming the setting.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from shared.errors import AionError

logger = logging.getLogger(__name__)

BlockKind = Literal["heading", "paragraph", "lines"]


class Refused(AionError):
    """A file AION will not ingest, with the reason and what to do about it."""

    status_code = 422
    code = "unprocessable_file"
    error_type = "invalid_request_error"


@dataclass(frozen=True)
class ExtractLimits:
    max_uncompressed_bytes: int = 100 * 1024 * 1024  # AION_EXTRACT_MAX_UNCOMPRESSED_MB
    max_pages: int = 2000  # AION_EXTRACT_MAX_PAGES
    timeout_s: float = 60.0  # AION_EXTRACT_TIMEOUT


class _Budget:
    """The limits while one file is extracted: a deadline checked between pages and paragraphs."""

    def __init__(self, limits: ExtractLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_s
        self.text_bytes = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise Refused(f"reading the file took longer than {self.limits.timeout_s:g} s (AION_EXTRACT_TIMEOUT); "
                          "split it into smaller files", status_code=422, code="extraction_timeout")

    def add_text(self, text: str) -> None:
        self.text_bytes += len(text)
        if self.text_bytes > self.limits.max_uncompressed_bytes:
            raise self.too_large("its text")

    def too_large(self, what: str) -> Refused:
        mib = self.limits.max_uncompressed_bytes / 1048576
        return Refused(f"{what} expands to more than {mib:g} MiB (AION_EXTRACT_MAX_UNCOMPRESSED_MB); a file this "
                       "small that expands this much is a decompression bomb or needs splitting",
                       status_code=413, code="uncompressed_too_large")


@dataclass(frozen=True)
class Block:
    kind: BlockKind  # "lines": lists, tables and code, where line breaks carry meaning
    text: str
    level: int = 0
    page: int | None = None


@dataclass
class Extracted:
    title: str | None
    blocks: list[Block]
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FileKind:
    name: str
    mime_type: str


KINDS = {
    ".txt": FileKind("text", "text/plain"),
    ".text": FileKind("text", "text/plain"),
    ".md": FileKind("markdown", "text/markdown"),
    ".markdown": FileKind("markdown", "text/markdown"),
    ".pdf": FileKind("pdf", "application/pdf"),
    ".html": FileKind("html", "text/html"),
    ".htm": FileKind("html", "text/html"),
    ".docx": FileKind("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
}
_BY_MIME = {kind.mime_type: kind for kind in KINDS.values()}
SUPPORTED = ", ".join(sorted({ext for ext in KINDS if ext not in (".text", ".markdown", ".htm")}))


def detect_kind(filename: str, content_type: str | None) -> FileKind:
    """The file's kind from its extension (or, without one, its declared content type)."""
    suffix = PurePosixPath(filename.lower()).suffix
    if suffix in KINDS:
        return KINDS[suffix]
    declared = (content_type or "").split(";")[0].strip().lower()
    if not suffix and declared in _BY_MIME:
        return _BY_MIME[declared]
    hint = " (save it as .docx)" if suffix == ".doc" else ""
    raise Refused(f"unsupported file type '{suffix or declared or 'unknown'}'{hint}; AION reads {SUPPORTED}",
                  status_code=415, code="unsupported_type")


def extract(kind: FileKind, data: bytes, filename: str, limits: ExtractLimits | None = None) -> Extracted:
    """Blocks of text from `data`; raises Refused for unreadable, encrypted, empty or over-limit files."""
    budget = _Budget(limits or ExtractLimits())
    if kind.name == "pdf":
        extracted = _pdf(data, budget)
    elif kind.name == "docx":
        extracted = _docx(data, budget)
    else:
        extracted = {"text": _text, "markdown": _markdown, "html": _html}[kind.name](data)
    blocks = [b for b in extracted.blocks if b.text.strip()]
    if not blocks:
        scanned = " (a scanned PDF needs OCR first)" if kind.name == "pdf" else ""
        raise Refused(f"no text found in the file{scanned}", status_code=422, code="no_text")
    if all(b.kind == "heading" for b in blocks):
        # Headings alone are still the document's only text: keep them as passages.
        blocks = [Block("paragraph", b.text, page=b.page) for b in blocks]
    extracted.blocks = blocks
    if not extracted.title:
        extracted.title = PurePosixPath(filename).stem or None
    return extracted


# -- plain text and markdown ------------------------------------------------------------------------

def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252; binary content is refused."""
    if b"\x00" in data[:8192]:
        raise Refused("the file looks binary, not text; check its type", code="unreadable")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")


def _paragraph_blocks(text: str, page: int | None = None) -> list[Block]:
    """Paragraphs split on blank lines; each list item (with its continuation lines) is its own block."""
    blocks = []
    for para in re.split(r"\n[ \t]*\n", text):
        if not para.strip():
            continue
        items: list[list[str]] = []
        for line in para.strip("\n").splitlines():
            if _LIST_ITEM.match(line) or not items:
                items.append([line])
            else:
                items[-1].append(line)
        for item in items:
            joined = "\n".join(item).strip()
            if joined:
                blocks.append(Block("paragraph", joined, page=page))
    return blocks


def _text(data: bytes) -> Extracted:
    return Extracted(title=None, blocks=_paragraph_blocks(_normalize_newlines(decode_text(data))))


_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _markdown(data: bytes) -> Extracted:
    lines = _normalize_newlines(decode_text(data)).split("\n")
    if lines and lines[0].strip() == "---" and "---" in (line.strip() for line in lines[1:]):
        # YAML front matter is metadata, not prose.
        end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
        lines = lines[end + 1:]
    blocks: list[Block] = []
    title = None
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            blocks.extend(_paragraph_blocks(_LINK.sub(r"\1", "\n".join(buffer))))
            buffer.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            flush()
            fence = _FENCE.match(line).group(1)  # type: ignore[union-attr]
            code = [line]
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence):
                code.append(lines[i])
                i += 1
            code.append(fence)
            blocks.append(Block("lines", "\n".join(code)))
        elif m := _ATX.match(line):
            flush()
            level, text = len(m.group(1)), _LINK.sub(r"\1", m.group(2))
            blocks.append(Block("heading", text, level=level))
            title = title or (text if level == 1 else None)
        elif (buffer and len(buffer) == 1 and buffer[0].strip() and _SETEXT.match(line)
              and not _LIST_ITEM.match(buffer[0])):
            text, level = buffer.pop().strip(), 1 if line.startswith("=") else 2
            flush()
            blocks.append(Block("heading", text, level=level))
            title = title or (text if level == 1 else None)
        elif line.lstrip().startswith("|"):
            flush()
            table = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                if not re.match(r"^\s*\|[\s:|-]+\|?\s*$", lines[i]):  # drop the |---| separator row
                    table.append(lines[i].strip())
                i += 1
            blocks.append(Block("lines", "\n".join(table)))
            continue
        elif not line.strip() or (not buffer and _RULE.match(line)):
            flush()
        else:
            buffer.append(line)
        i += 1
    flush()
    return Extracted(title=title, blocks=blocks)


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


# -- PDF ----------------------------------------------------------------------------------------------

def _pdf(data: bytes, budget: _Budget) -> Extracted:
    from pypdf import apply_configuration
    from pypdf.errors import LimitReachedError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise Refused("the file is not a PDF (no %PDF header); check its type", code="unreadable")
    cap = budget.limits.max_uncompressed_bytes
    # pypdf (>= 7) bounds each stream's decoded size; the cap is ours (its defaults are 75 MB a stream).
    with apply_configuration(maximum_declared_stream_length=cap, array_based_stream_maximum_output_length=cap,
                             jbig2_maximum_output_length=cap, lzw_maximum_output_length=cap,
                             run_length_maximum_output_length=cap, zlib_maximum_output_length=cap,
                             brotli_maximum_output_length=cap, image_maximum_buffer_size=cap,
                             stream_decoding_work_maximum_length=4 * cap,
                             page_tree_maximum_entries=budget.limits.max_pages * 4):
        try:
            return _pdf_blocks(data, budget)
        except LimitReachedError as exc:
            raise budget.too_large(f"a part of the PDF ({str(exc)[:80]})") from exc


def _pdf_blocks(data: bytes, budget: _Budget) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password; anything else is locked.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError):
                opened = 0
            if not opened:
                raise Refused("the PDF is encrypted (password-protected); save an unprotected copy and upload "
                              "that", code="encrypted_pdf")
        pages = len(reader.pages)
        if pages > budget.limits.max_pages:
            raise Refused(f"the PDF has {pages} pages; the limit is {budget.limits.max_pages} (AION_EXTRACT_MAX_PAGES); "
                          "split it into smaller files", status_code=413, code="too_many_pages")
        blocks: list[Block] = []
        for number, page in enumerate(reader.pages, start=1):
            budget.check_time()
            text = page.extract_text() or ""
            budget.add_text(text)
            blocks.extend(_paragraph_blocks(_normalize_newlines(text), page=number))
        title = None
        try:
            title = (reader.metadata.title or None) if reader.metadata else None
        except Exception:  # noqa: BLE001 - broken metadata must not refuse a readable PDF
            title = None
        return Extracted(title=title, blocks=blocks, meta={"pages": len(reader.pages)})
    except (Refused, LimitReachedError):
        raise
    except FileNotDecryptedError as exc:
        raise Refused("the PDF is encrypted (password-protected); save an unprotected copy and upload that",
                      code="encrypted_pdf") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError,
            OSError) as exc:
        raise Refused(f"the PDF could not be read ({type(exc).__name__}: {str(exc)[:120]}); it may be damaged",
                      code="unreadable") from exc


# -- HTML ---------------------------------------------------------------------------------------------

_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas", "button",
              "select", "form", "input", "textarea"}
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCK_TAGS = {"p", "div", "section", "article", "main", "aside", "header", "footer", "nav", "li", "ul", "ol",
               "dl", "dt", "dd", "table", "tr", "blockquote", "pre", "figure", "figcaption", "caption", "br",
               "hr", "address", "details", "summary"}


def _html(data: bytes) -> Extracted:
    from bs4 import BeautifulSoup, NavigableString, Tag
    from bs4.element import Comment, Doctype, ProcessingInstruction

    if b"\x00" in data[:8192]:
        raise Refused("the file looks binary, not HTML; check its type", code="unreadable")
    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception:  # noqa: BLE001 - lxml missing or choking: the stdlib parser is slower but lenient
        soup = BeautifulSoup(data, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None

    blocks: list[Block] = []
    buffer: list[str] = []

    def flush(kind: BlockKind = "paragraph") -> None:
        text = re.sub(r"[ \t\r\f\v]+", " ", "".join(buffer)).strip()
        buffer.clear()
        if text:
            blocks.append(Block(kind, text))

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, (Comment, Doctype, ProcessingInstruction)):
                continue
            if isinstance(child, NavigableString):
                buffer.append(str(child).replace("\n", " "))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP_TAGS:
                continue
            if child.name in _HEADINGS:
                flush()
                text = child.get_text(" ", strip=True)
                if text:
                    blocks.append(Block("heading", text, level=_HEADINGS[child.name]))
            elif child.name == "pre":
                flush()
                text = child.get_text().strip("\n")
                if text.strip():
                    blocks.append(Block("lines", text))
            elif child.name in ("td", "th"):
                buffer.append(" " + child.get_text(" ", strip=True) + " |")
            elif child.name in _BLOCK_TAGS:
                flush()
                walk(child)
                flush()
            else:
                walk(child)

    walk(soup.body or soup)
    flush()
    if title is None:
        title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    return Extracted(title=title, blocks=blocks)


# -- DOCX ---------------------------------------------------------------------------------------------

def _check_zip(data: bytes, budget: _Budget) -> None:
    """Refuse a .docx whose parts would expand past the limit, before any part is decompressed.

    The declared sizes are what counts: zipfile stops a member at its declared size (and fails its
    CRC check if the data goes on), so a member that lies about its size cannot expand further.
    """
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise Refused("the file could not be read as a Word document (.docx); it may be damaged or of another "
                      "type", code="unreadable") from exc
    if len(members) > 10_000:
        raise Refused(f"the document holds {len(members)} parts; a Word document has dozens", status_code=413,
                      code="uncompressed_too_large")
    if sum(m.file_size for m in members) > budget.limits.max_uncompressed_bytes:
        raise budget.too_large("the document")


def _docx(data: bytes, budget: _Budget) -> Extracted:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    _check_zip(data, budget)
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Refused("the file could not be read as a Word document (.docx); it may be damaged or of "
                      "another type", code="unreadable") from exc
    blocks: list[Block] = []
    for item in document.iter_inner_content():
        budget.check_time()
        if isinstance(item, Table):
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in item.rows]
            text = "\n".join(r for r in rows if r.strip(" |"))
            if text:
                blocks.append(Block("lines", text))
            continue
        text = item.text.strip()
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        if style == "Title":
            blocks.append(Block("heading", text, level=1))
        elif m := re.match(r"Heading (\d)", style):
            blocks.append(Block("heading", text, level=int(m.group(1))))
        elif style.startswith("List"):
            blocks.append(Block("lines", text))
        else:
            blocks.append(Block("paragraph", text))
    title = (document.core_properties.title or "").strip() or None
    if title is None:
        title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    return Extracted(title=title, blocks=blocks)
