"""The RAG prompt, in the question's language: instructions and numbered passages in the system message,
the conversation so far, then the question alone as the last user message.

Why this shape: SmolLM2-135M copied instructions that sat in the user message beside the question
("Use APENAS as informações…", "Pergunta:") into a third of its answers; with them in the system
message and the question on its own it echoed none (docs/benchmarks.md, "Answers on the demo
documents"). A closing "Fontes:" list is not asked for any more: the small model invented sources
to fill it, and every client already shows the real ones from the `sources` event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .language import Language

# The owner's persona prompt, kept for Portuguese questions (AION_RAG_SYSTEM_PROMPT).
DEFAULT_RAG_SYSTEM_PROMPT = (
    "Você é a AION, assistente que responde a partir dos documentos do proprietário. "
    "Responda em PT-BR, de forma objetiva."
)
# Its English counterpart, for English questions (AION_RAG_SYSTEM_PROMPT_EN).
DEFAULT_RAG_SYSTEM_PROMPT_EN = (
    "You are AION, an assistant that answers from the owner's documents. Answer in English, concisely."
)

# Bumped whenever the wording or layout changes, so logged answers say which prompt they came from.
PROMPT_VERSION = "rag-2"

INSTRUCTIONS: dict[Language, str] = {
    "en": ("Answer the user's question in one or two short sentences, using only the documents below, and cite "
           "the document number like [1]. If the documents do not answer it, say that you could not find it in "
           "the documents."),
    "pt": ("Responda à pergunta do usuário em uma ou duas frases curtas, usando apenas os documentos abaixo, e "
           "cite o número do documento, como [1]. Se os documentos não trouxerem a resposta, diga que não "
           "encontrou nos documentos."),
}
NO_PASSAGES: dict[Language, str] = {
    "en": "(no passage of the documents matched the question)",
    "pt": "(nenhuma passagem dos documentos corresponde à pergunta)",
}


@dataclass(frozen=True)
class PromptPassage:
    n: int
    text: str
    source: str  # document title, plus page or heading when known


def source_label(title: str, page_or_heading: str | None) -> str:
    return f"{title} — {page_or_heading}" if page_or_heading else title


def build_context(passages: Sequence[PromptPassage]) -> str:
    return "\n\n".join(f"[{p.n}] {p.text.strip()}" for p in passages)


def system_message(passages: Sequence[PromptPassage], *, language: Language, persona: str) -> str:
    context = build_context(passages) if passages else NO_PASSAGES[language]
    head = f"{persona.strip()}\n" if persona.strip() else ""
    return f"{head}{INSTRUCTIONS[language]}\n\n{context}"


def build_rag_messages(question: str, passages: Sequence[PromptPassage], *, language: Language, persona: str,
                       history: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """Chat messages for any OpenAI-compatible model: system (instructions, passages), history, question."""
    return [{"role": "system", "content": system_message(passages, language=language, persona=persona)},
            *history, {"role": "user", "content": question.strip()}]


def instruction_texts() -> list[str]:
    """Every instruction the prompt may carry: what an answer must not echo."""
    return [*INSTRUCTIONS.values(), DEFAULT_RAG_SYSTEM_PROMPT, DEFAULT_RAG_SYSTEM_PROMPT_EN]
