"""How an answer that says "the documents do not cover this" is recognised, in Portuguese and English.

The RAG prompt asks the model to say it did not find the answer in the documents; these are the ways
models (and the prompt's own suggested sentences below) put it. One function serves `aion eval`'s
"not found" figure and the answer path, so both count the same answers.
"""

from __future__ import annotations

import re
import unicodedata

# The sentences the prompt may ask the model to use, one per language.
NOT_FOUND_PT = "Não encontrei essa informação nos documentos."
NOT_FOUND_EN = "I could not find this in the documents."

# Matched on lower-cased text with accents folded ("não" -> "nao"), so a model that drops accents still counts.
_PATTERNS = [
    # Portuguese: "não encontrei / não encontrou / não foi encontrada / não há informação / não consta ..."
    r"\bnao (?:encontrei|encontrou|encontramos|foi encontrad[ao]s?|foram encontrad[ao]s?|localizei|achei)\b",
    r"\bnao (?:ha|existe|existem|tenho|temos|consta|constam) (?:\w+ ){0,3}(?:informac\w*|dados|mencao|referencia\w*)",
    r"\bnao (?:esta|estao|aparece|aparecem) (?:\w+ ){0,3}(?:nos|no|nas|na) (?:documentos?|contexto|passage\w*|fontes?)",
    r"\b(?:documentos?|contexto|passagens?) (?:\w+ ){0,3}nao (?:menciona\w*|cobre\w*|contem|trata\w*|fala\w*|informa\w*)",
    # English: "I could not find / was not found / no information / the documents do not cover ..."
    r"\b(?:could not|couldn't|cannot|can't|did not|didn't|do not|don't|was unable to|am unable to|unable to) "
    r"(?:\w+ ){0,2}(?:find|locate)\b",
    r"\b(?:was|were|is|are) not (?:found|mentioned|covered|provided|available|included)\b",
    r"\bnot (?:found|mentioned|covered) in the (?:documents?|context|passages?|sources?)\b",
    r"\bno (?:information|mention|details?|data|reference) (?:\w+ ){0,4}(?:in|within|from) the "
    r"(?:documents?|context|passages?|sources?)",
    r"\b(?:documents?|context|passages?|sources?) (?:\w+ ){0,3}(?:do|does|did) not (?:\w+ ){0,2}"
    r"(?:cover|mention|contain|include|say|provide|address)\w*",
    r"\bnot (?:in|within) the (?:provided )?(?:documents?|context|passages?)\b",
]
_NOT_FOUND = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))


def fold(text: str) -> str:
    """Lower case, accents removed, whitespace collapsed: the form the patterns are written for."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"\s+", " ", stripped.replace("’", "'")).strip()


def is_not_found(answer: str) -> bool:
    """Whether `answer` says the documents do not hold the answer (in Portuguese or English)."""
    return bool(_NOT_FOUND.search(fold(answer)))
