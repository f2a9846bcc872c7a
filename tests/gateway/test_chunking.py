"""Chunking on the real MiniLM tokenizer: sizes, headings, pages, overlap, paragraphs kept whole."""

from __future__ import annotations

import pytest

from services.gateway.services.chunking import HEADING_TOKEN_BUDGET, chunk_blocks, split_sentences
from services.gateway.services.extract import Block, detect_kind, extract
from services.gateway.services.tokens import EstimateCounter, TokenizerCounter, load_token_counter

from .conftest import KB_DIR


@pytest.fixture(scope="module")
def counter() -> TokenizerCounter:
    c = load_token_counter("auto")
    assert isinstance(c, TokenizerCounter), "the dev install ships MiniLM's tokenizer; chunk sizes must be exact"
    return c


def _prose(n_sentences: int, topic: str) -> str:
    return " ".join(f"Sentence {i} explains one more detail about {topic} and why it matters." for i in range(n_sentences))


def test_chunks_respect_the_token_budget_and_the_model_window(counter):
    blocks = [Block("heading", "Guide", 1)] + [Block("paragraph", _prose(12, f"topic {p}")) for p in range(8)]
    drafts = chunk_blocks(blocks, counter, max_tokens=120, overlap=20)
    assert len(drafts) > 4
    for d in drafts:
        assert d.token_count <= 120
        assert counter.count([d.text])[0] <= 120 + 2  # joins may add a token or two, never a sentence
        assert counter.count([d.embed_text])[0] <= 254  # MiniLM reads 256 tokens including [CLS]/[SEP]
    assert [d.ord for d in drafts] == list(range(len(drafts)))


def test_headings_become_paths_and_never_mix(counter):
    blocks = [Block("heading", "Manual", 1), Block("paragraph", "Intro text."),
              Block("heading", "Setup", 2), Block("paragraph", "Install it."),
              Block("heading", "Network", 3), Block("paragraph", "Open port 3000."),
              Block("heading", "Usage", 2), Block("paragraph", "Run it.")]
    drafts = chunk_blocks(blocks, counter, max_tokens=200, overlap=20)
    assert [(d.heading, d.text) for d in drafts] == [
        ("Manual", "Intro text."), ("Manual > Setup", "Install it."),
        ("Manual > Setup > Network", "Open port 3000."), ("Manual > Usage", "Run it.")]
    assert drafts[2].embed_text == "Manual > Setup > Network\nOpen port 3000."


def test_pages_are_kept_and_chunks_do_not_span_pages(counter):
    blocks = [Block("paragraph", "Page one text.", page=1), Block("paragraph", "More on page one.", page=1),
              Block("paragraph", "Page two text.", page=2)]
    drafts = chunk_blocks(blocks, counter, max_tokens=200, overlap=0)
    assert [(d.page, d.text) for d in drafts] == [(1, "Page one text.\n\nMore on page one."), (2, "Page two text.")]


def test_overlap_repeats_the_previous_chunks_last_sentences(counter):
    text = _prose(40, "overlap")
    drafts = chunk_blocks([Block("paragraph", text)], counter, max_tokens=80, overlap=25)
    assert len(drafts) >= 3
    for prev, nxt in zip(drafts, drafts[1:], strict=False):
        last_sentence = split_sentences(prev.text)[-1]
        assert nxt.text.startswith(last_sentence), "the next chunk starts with the previous one's tail"
    without = chunk_blocks([Block("paragraph", text)], counter, max_tokens=80, overlap=0)
    assert all(not b.text.startswith(split_sentences(a.text)[-1]) for a, b in zip(without, without[1:], strict=False))


def test_a_paragraph_that_fits_is_not_split_across_chunks(counter):
    first = _prose(5, "alpha")   # ~70 tokens
    second = _prose(5, "beta")   # ~70 tokens: does not fit after `first` in 100, fits alone
    drafts = chunk_blocks([Block("paragraph", first), Block("paragraph", second)], counter, max_tokens=100, overlap=0)
    assert [d.text for d in drafts] == [first, second]


def test_giant_sentence_and_giant_word_are_cut_to_size(counter):
    giant_word = "ab1/" * 750  # no spaces, ~1,500 tokens (punctuation splits it)
    blocks = [Block("paragraph", "word " * 500 + giant_word)]
    drafts = chunk_blocks(blocks, counter, max_tokens=64, overlap=0)
    assert len(drafts) > 8 + 1500 // 64
    assert all(counter.count([d.text])[0] <= 64 + 2 for d in drafts)
    assert "".join(d.text.replace(" ", "") for d in drafts) == "word" * 500 + giant_word  # nothing dropped


def test_markdown_corpus_chunks_keep_their_section(counter):
    ex = extract(detect_kind("sourdough.md", None), (KB_DIR / "sourdough.md").read_bytes(), "sourdough.md")
    assert ex.title == "Sourdough baking notes"
    drafts = chunk_blocks(ex.blocks, counter, max_tokens=200, overlap=40)
    feeding = [d for d in drafts if "fed twice a day" in d.text]
    assert len(feeding) == 1 and feeding[0].heading == "Sourdough baking notes > Starter feeding"


def test_long_heading_paths_are_capped(counter):
    blocks = [Block("heading", f"Level {i} " + "very long heading words " * 6, i) for i in range(1, 7)]
    blocks.append(Block("paragraph", "Body."))
    (draft,) = chunk_blocks(blocks, counter, max_tokens=200, overlap=0)
    assert counter.count([draft.heading])[0] <= HEADING_TOKEN_BUDGET
    assert draft.heading.startswith("Level 6") or "Level 6" in draft.heading  # the most specific survives


def test_estimate_counter_does_not_undercount_much(counter):
    # The fallback (no tokenizer installed) must err on the large side, or chunks overflow the model.
    texts = [(KB_DIR / n).read_text() for n in ("sourdough.md", "bicycle.md", "greenhouse.md")]
    texts.append("Informações sobre a manutenção preventiva das bicicletas elétricas e a configuração dos freios.")
    for text in texts:
        assert EstimateCounter().count([text])[0] >= 0.95 * counter.count([text])[0]
