"""How much of an answer its passages back, and the answers made of the passages' own sentences.

Support is deterministic: every answer sentence is matched against each passage sentence (and each
pair of neighbouring sentences, since an answer often joins two); its score is the share of its
content words and numbers that the best match contains, numbers counting double (a changed number is
the commonest wrong answer). The answer's support is the mean of its sentences' scores, weighted by
their size. docs/benchmarks.md compares it with MiniLM sentence similarity on the demo question set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .language import Language

_CITATION = re.compile(r"\[\d{1,3}\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")  # an answer's "The answer is: 12 months" is two claims
_MARKUP = re.compile(r"\*\*|__|`")
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+", re.UNICODE)
_THOUSANDS = re.compile(r"^\d{1,3}(?:[.,]\d{3})+$")
_NUMBER_WORDS = {
    **{w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())},
    # Portuguese "um"/"uma" are left out: far more often articles ("um robô") than the number one.
    **{w: str(i) for i, w in enumerate("zero - dois três quatro cinco seis sete oito nove dez onze doze".split())
       if w != "-"},
    "duas": "2", "tres": "3",
}
# Words that carry no claim in either language (content words are what an answer asserts).
_STOP = frozenset("""
    a an the of and or but to in on at for with without from by is are was were be been being it its this that
    these those there here what which who whom whose when where why how does do did done has have had can could
    will would should may might must i you he she we they my your our their his her them us me as if so than then
    also not no yes any each many much more most some about into after before very just only such per all both
    answer question document documents according text passage says said
    o os as um uma uns umas de da das dos em na nas no nos num numa para pelo pela pelos pelas por com sem que
    qual quais quanto quanta quantos quantas quando onde como porque é são está estão foi foram ser ter tem têm
    há seu sua seus suas isso isto esse essa este esta ao aos à às e ou mas não sim também já mais muito muita
    um uma quem tempo
    até sobre entre cada qualquer você ele ela eles elas eu nós lhe se resposta pergunta documento documentos
    """.split())
_SECOND_SENTENCE_SHARE = 0.6

QUOTED_INTRO: dict[Language, str] = {
    "en": "Quoted from the documents:",
    "pt": "Trechos dos documentos:",
}
# Worded so that the "not found" recognisers (this module's and `aion eval`'s) both count them.
NOT_FOUND_TEXT: dict[Language, str] = {
    "en": "The documents do not seem to cover this.",
    "pt": "Não encontrei isso nos documentos.",
}
CLOSEST_INTRO: dict[Language, str] = {
    "en": "The closest passages say:",
    "pt": "Os trechos mais próximos dizem:",
}


@dataclass(frozen=True)
class Evidence:
    """One numbered passage the answer was given."""

    n: int
    text: str
    # Its document's title and heading: a passage often names its subject only there ("Lumo reservoir —
    # Dam": "Its concrete dam was finished in 1962"). Used to tell which passage a sentence comes from
    # (`Backing(titles=True)`), not whether an answer is backed enough to serve.
    title: str = ""


@dataclass(frozen=True)
class SentenceSupport:
    sentence: str
    score: float  # share of its weighted terms found in the best-matching passage sentence(s)
    weight: int
    best: int | None  # the passage number that matched best


@dataclass(frozen=True)
class Support:
    score: float  # 0..1
    sentences: tuple[SentenceSupport, ...]


def split_sentences(text: str, *, clauses: bool = False) -> list[str]:
    """Sentences without citation marks or markdown emphasis; `clauses` also splits at ':' and ';'."""
    pattern = _CLAUSE_END if clauses else _SENTENCE_END
    parts = (p.strip(" \t-*•>\"“”") for p in pattern.split(_MARKUP.sub("", _CITATION.sub(" ", text))))
    return [p for p in parts if p]


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("s"):
        word = word[:-1]
    return word[:5]


def terms(text: str) -> dict[str, int]:
    """Content terms of `text` with their weights: numbers (normalised) 2, stemmed words 1."""
    found: dict[str, int] = {}
    for token in _TOKEN.findall(text.lower()):
        if token[0].isdigit():
            found[token.replace(",", "").replace(".", "") if _THOUSANDS.match(token) else token] = 2
        elif token in _NUMBER_WORDS:
            found[_NUMBER_WORDS[token]] = 2
        elif token not in _STOP and len(token) > 1:
            found.setdefault(_stem(token), 1)
    return found


def content_words(text: str) -> list[str]:
    """The words of `text` that carry content, as written, in order, each once."""
    found: list[str] = []
    for token in _TOKEN.findall(text):
        low = token.lower()
        if (token[0].isdigit() or low in _NUMBER_WORDS or (low not in _STOP and len(low) > 1)) and token not in found:
            found.append(token)
    return found


def _passage_units(evidence: Sequence[Evidence]) -> list[tuple[int, set[str]]]:
    """(passage number, terms) of every sentence and every pair of neighbouring sentences."""
    units: list[tuple[int, set[str]]] = []
    for passage in evidence:
        sentence_terms = [set(terms(s)) for s in split_sentences(passage.text)]
        units.extend((passage.n, t) for t in sentence_terms)
        units.extend((passage.n, a | b) for a, b in zip(sentence_terms, sentence_terms[1:], strict=False))
    return units


@dataclass(frozen=True)
class SentenceBacking:
    """How far each passage backs one sentence."""

    claim_weight: int  # weight of what the sentence adds to the question; 0: it only restates it
    said_weight: int  # weight of all its terms
    by_passage: dict[int, float]  # passage number -> share of the claim its best sentence (pair) holds
    touched: frozenset[int] = frozenset()  # passages sharing any claimed term with it, subject or not

    def best(self) -> tuple[int | None, float]:
        """The passage that backs it most (the earlier one on a tie) and its share; (None, 0.0) when none."""
        best_n, best_score = None, 0.0
        for n, score in self.by_passage.items():
            if score > best_score:
                best_n, best_score = n, score
        return best_n, best_score


class Backing:
    """Scores sentences against one answer's passages (built once per answer).

    Only what a sentence adds to the question counts as a claim: restating the question backs nothing.
    And a passage backs a sentence only if it speaks of what was asked: when the sentence names the
    question's subject, the backing sentence must name its rarest word too ("the warranty is 18,500
    euros" is not backed by "a Pomelo costs 18,500 euros"); with `titles`, its passage's title may name
    it instead. The support measure leaves titles out: with them it served more of the small model's
    wrong answers (docs/benchmarks.md, the citation check).
    """

    def __init__(self, evidence: Sequence[Evidence], question: str = "", *, titles: bool = False) -> None:
        self._units = _passage_units(evidence)
        self._titles = {e.n: set(terms(e.title)) for e in evidence} if titles else {}
        self._asked = set(terms(question))
        self._frequency = {t: sum(self._names(t, n, unit) for n, unit in self._units) for t in self._asked}

    def _names(self, term: str, n: int, unit: set[str]) -> bool:
        return term in unit or term in self._titles.get(n, ())

    def sentence(self, sentence: str) -> SentenceBacking | None:
        """None when the sentence asserts nothing a passage could back ("Yes.", a list number)."""
        said = terms(sentence)
        if not said:
            return None
        weight = sum(w for t, w in said.items() if t not in self._asked)
        if weight == 0:
            return SentenceBacking(0, sum(said.values()), {})
        subject = [t for t in said if t in self._asked and self._frequency[t]]
        anchor = min(subject, key=lambda t: self._frequency[t]) if subject else None
        by_passage: dict[int, float] = {}
        touched: set[int] = set()
        for n, unit in self._units:
            score = sum(w for t, w in said.items() if t not in self._asked and t in unit) / weight
            if score:
                touched.add(n)
            if anchor and not self._names(anchor, n, unit):
                continue
            by_passage[n] = max(score, by_passage.get(n, 0.0))
        return SentenceBacking(weight, sum(said.values()), by_passage, frozenset(touched))


def measure_support(answer: str, evidence: Sequence[Evidence], question: str = "") -> Support:
    """The share of the answer that its passages back, sentence by sentence (0 for an empty answer)."""
    backing = Backing(evidence, question)
    scored: list[SentenceSupport] = []
    for sentence in split_sentences(answer, clauses=True):
        found = backing.sentence(sentence)
        if found is None:
            continue
        if found.claim_weight == 0:
            scored.append(SentenceSupport(sentence, 0.0, found.said_weight, None))
            continue
        best_n, best_score = found.best()
        scored.append(SentenceSupport(sentence, best_score, found.claim_weight, best_n))
    total = sum(s.weight for s in scored)
    score = sum(s.score * s.weight for s in scored) / total if total else 0.0
    return Support(round(score, 4), tuple(scored))


def best_sentences(question: str, evidence: Sequence[Evidence], *, limit: int = 2,
                   max_chars: int = 400) -> list[tuple[int, str]]:
    """(passage number, sentence) of the passage sentences that share most with the question.

    A term counts by its rarity among the passages' sentences (a company name in every sentence
    tells little); ties go to the earlier passage, which retrieval ranked higher. When no sentence
    shares a term with the question, the first passage's opening sentence stands in.
    """
    wanted = terms(question)
    sentences = [(passage.n, rank, sentence, set(terms(sentence)))
                 for rank, passage in enumerate(evidence) for sentence in split_sentences(passage.text)]
    if not sentences:
        return []
    rarity = {t: math.log(1 + len(sentences) / (1 + sum(t in found for *_, found in sentences))) for t in wanted}
    ranked = sorted(((sum(w * rarity[t] for t, w in wanted.items() if t in found), -rank, -i, n, sentence)
                     for i, (n, rank, sentence, found) in enumerate(sentences)), reverse=True)
    if ranked[0][0] == 0:
        return [(sentences[0][0], sentences[0][2][:max_chars])]
    chosen: list[tuple[int, str]] = []
    used = 0
    for score, *_, n, sentence in ranked:
        # A second sentence only when it matches nearly as well: a weak one is noise beside the answer.
        if score < ranked[0][0] * _SECOND_SENTENCE_SHARE or len(chosen) == limit or (
                chosen and used + len(sentence) > max_chars):
            break
        if all(sentence != s for _, s in chosen):
            chosen.append((n, sentence[:max_chars]))
            used += len(sentence)
    # The best sentence often needs the next one of its passage ("Pomelo counts apples. Its counts are
    # within 4 percent…"): it follows when it shares a word with the question.
    best_n, best = chosen[0]
    position = next(i for i, (n, _, sentence, _) in enumerate(sentences) if n == best_n and sentence == best)
    if position + 1 < len(sentences):
        n, _, following, found = sentences[position + 1]
        if (n == best_n and wanted.keys() & found and all(following != s for _, s in chosen)
                and len(best) + len(following) < max_chars):
            chosen[0] = (best_n, f"{best} {following}")
    return chosen


def _quote(sentences: Sequence[tuple[int, str]]) -> str:
    return "\n".join(f"“{s.rstrip()}” [{n}]" for n, s in sentences)


def quoted_answer(question: str, evidence: Sequence[Evidence], language: Language) -> str:
    """An answer made only of the passages' own sentences, quoted, with their citation numbers."""
    return f"{QUOTED_INTRO[language]}\n{_quote(best_sentences(question, evidence))}"


def not_found_answer(question: str, evidence: Sequence[Evidence], language: Language) -> str:
    """Say plainly that the documents do not seem to cover it; quote the closest passages, if any."""
    closest = best_sentences(question, evidence) if evidence else []
    if not closest:
        return NOT_FOUND_TEXT[language]
    return f"{NOT_FOUND_TEXT[language]} {CLOSEST_INTRO[language]}\n{_quote(closest)}"
