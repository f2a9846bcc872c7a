"""The RAG prompt: numbered passages, "answer only from the context", sources listed at the end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Logged with every answer: training rows and the gate's RAG sets are only comparable with answers
# given under the same template. Change it whenever the wording or layout below changes.
PROMPT_TEMPLATE_VERSION = "rag-pt-1"

DEFAULT_RAG_SYSTEM_PROMPT = (
    "Você é a AION, assistente que responde a partir dos documentos do proprietário. "
    "Responda em PT-BR, de forma objetiva."
)

DEFAULT_RAG_INSTRUCTIONS = (
    "Instruções:\n"
    "1) Use APENAS as informações do CONTEXTO abaixo; não invente nada. Se a resposta não estiver no "
    "contexto, diga que não encontrou nos documentos.\n"
    "2) Cite as passagens usadas pelo número, como [1], [2].\n"
    "3) No final, escreva \"Fontes:\" seguido das fontes citadas."
)


@dataclass(frozen=True)
class PromptPassage:
    n: int
    text: str
    source: str  # document title, plus page or heading when known


def source_label(title: str, page_or_heading: str | None) -> str:
    return f"{title} — {page_or_heading}" if page_or_heading else title


def build_context(passages: Sequence[PromptPassage]) -> str:
    return "\n\n".join(f"[{p.n}] ({p.source}) {p.text.strip()}" for p in passages)


def sources_line(passages: Sequence[PromptPassage]) -> str:
    return "Fontes: " + "; ".join(f"[{p.n}] {p.source}" for p in passages)


def build_rag_messages(question: str, passages: Sequence[PromptPassage], *, system_prompt: str,
                       instructions: str = DEFAULT_RAG_INSTRUCTIONS,
                       history: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """Chat messages for any OpenAI-compatible model: system, earlier turns, then the grounded question."""
    if passages:
        context = build_context(passages)
        user = (f"{instructions}\n\nCONTEXTO:\n{context}\n\n{sources_line(passages)}\n\n"
                f"Pergunta: {question.strip()}")
    else:
        user = (f"{instructions}\n\nCONTEXTO:\n(nenhuma passagem encontrada nos documentos)\n\n"
                f"Pergunta: {question.strip()}")
    return [{"role": "system", "content": system_prompt}, *history, {"role": "user", "content": user}]
