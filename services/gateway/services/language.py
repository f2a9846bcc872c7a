"""Which language a question is in (Portuguese or English), by counting each language's stopwords.

Questions are short, so a statistical detector has little to go on; function words are what tell
Portuguese from English in a dozen words, and cost nothing. Undecided (no stopword, or a tie) is None:
the caller picks a default.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["pt", "en"]
LANGUAGES: tuple[Language, ...] = ("pt", "en")

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

# Frequent function words that are not also words of the other language ("a", "no", "do" are left out).
_STOPWORDS: dict[Language, frozenset[str]] = {
    "pt": frozenset("""o os as um uma uns umas de da das dos em na nas num numa para pelo pela pelos pelas por
        com sem que qual quais quanto quanta quantos quantas quando onde como porque porquê é são está estão
        foi foram ser ter tem têm há seu sua seus suas meu minha nosso nossa isso isto esse essa este esta
        ao aos à às e ou mas não sim também já mais muito muita até sobre entre depois antes cada qualquer
        quem você vocês ele ela eles elas eu nós lhe se custa dura fica faz fazer posso pode podem""".split()),
    "en": frozenset("""the of and or but to in on at for with without from by is are was were be been being
        what which who whom whose when where why how does did done has have had this that these those
        it its i you he she we they my your our their can could will would should may might must
        there here than then also not yes any each many much more most some about into after before
        cost costs long last lasts""".split()),
}


def stopword_counts(text: str) -> dict[Language, int]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}


def choose_language(question: str, *more: str, pinned: Language | None = None,
                    default: Language = "pt") -> Language:
    """The prompt's language: the pinned one, else the question's, else its passages' (or history's), else
    the default. The gateway and the trainer's RAG rows decide it the same way."""
    if pinned:
        return pinned
    return detect_language(question) or detect_language(" ".join(more)) or default


def detect_language(text: str) -> Language | None:
    """'pt' or 'en' when one language's stopwords outnumber the other's; None when undecided."""
    counts = stopword_counts(text)
    if counts["pt"] == counts["en"]:
        # Accented letters are Portuguese's tie-breaker ("Preço do Pomelo?").
        return "pt" if re.search(r"[ãõçáéíóúâêô]", text.lower()) else None
    return "pt" if counts["pt"] > counts["en"] else "en"
