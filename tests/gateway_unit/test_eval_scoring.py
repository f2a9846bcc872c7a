"""How `aion eval` scores one outcome: "not found" in Portuguese and English, instruction echoes,
containment, the rank of the expected passage, and the local model's own answer where the answer path
replaced it."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.services.answer import AnswerEvent
from services.gateway.services.eval_set import EvalQuestion
from services.gateway.services.evaluation import (
    Candidate,
    contains_any,
    echoes_instructions,
    passage_rank,
    run_answers,
    summarize,
)
from services.gateway.services.not_found import NOT_FOUND_EN, NOT_FOUND_PT, is_not_found


@pytest.mark.parametrize("answer", [
    NOT_FOUND_PT, NOT_FOUND_EN, "Nao encontrei isso nos documentos.", "Não há informações sobre Redis no contexto.",
    "O contexto não menciona o horário de atendimento.", "The documents do not cover Kubernetes autoscaling.",
    "I couldn't find any information about that in the documents.", "This was not found in the context [1].",
])
def test_not_found_answers_are_recognised(answer):
    assert is_not_found(answer)


@pytest.mark.parametrize("answer", [
    "The default port is 6379 [1].", "O cloudpickle não funciona entre versões diferentes do Python [1].",
    "Variables like $DOMAIN are not expanded; write ${DOMAIN} [2].", "Pass override=True to replace them [1].",
])
def test_answers_are_not_mistaken_for_not_found(answer):
    assert not is_not_found(answer)


def test_echo_containment_and_rank():
    assert echoes_instructions("Use APENAS as informações do CONTEXTO abaixo. Resposta: 3 anos")
    assert echoes_instructions("Pergunta: qual a garantia?") and not echoes_instructions("A garantia é de 3 anos [1].")
    assert contains_any("A opção é VECTOR_COSINE_OPS [1]", ["vector_cosine_ops"])
    assert contains_any("Uma versão diferente", ["versao"])  # accents folded on both sides
    q = EvalQuestion(question="?", expect_document="a.md", expect_passage="--reload")
    ranked = [Candidate("b.md", "--reload"), Candidate("a.md", "other"), Candidate("a.md", "use --reload")]
    assert passage_rank(q, ranked) == 3
    assert passage_rank(EvalQuestion(question="?", expect_document="a.md"), ranked) == 2
    assert passage_rank(EvalQuestion(question="?", unanswerable=True), ranked) is None


def _answers(*streams):
    """An answer function replaying one scripted event stream per question, in order."""
    pending = list(streams)

    async def answer(request):
        for kind, data in pending.pop(0):
            yield AnswerEvent(kind, data)
    return answer


SOURCES = ("sources", {"sources": [{"document": "d1", "text": "The keeper was Agnes Morrow.", "n": 1}], "C": 0.8})


def test_a_replaced_local_answer_is_kept_and_judged_apart_from_what_the_user_got():
    questions = [EvalQuestion(question="Who kept it?", answer_contains=["Agnes Morrow"]),
                 EvalQuestion(question="Who kept it then?", answer_contains=["Agnes Morrow"]),
                 EvalQuestion(question="And the ferry?", unanswerable=True)]
    replaced = [SOURCES, ("token", {"text": "It was John"}), ("token", {"text": " Smith [1]."}),
                ("warn", {"reason": "unsupported_answer", "restart": True, "next": "quoted"}),
                ("token", {"text": "The keeper was Agnes Morrow. [1]"}),
                ("done", {"used": "documents", "model": None, "usage": {}})]
    served = [SOURCES, ("token", {"text": "Agnes Morrow [1]."}), ("done", {"used": "local", "model": "aion-v2"})]
    absent = [SOURCES, ("token", {"text": "Not found."}), ("done", {"used": "local", "model": "aion-v2"})]

    async def collect():
        return [r async for r in run_answers(questions, _answers(replaced, served, absent), tenant_id="t", tau=0.0,
                                             names={"d1": "lighthouse.md"}, run_id="r")]
    results = asyncio.run(collect())
    first, second, third = results
    assert (first.used, first.contains, first.local_answer, first.local_contains) == (
        "documents", True, "It was John Smith [1].", False)
    assert first.warnings == ["unsupported_answer"]
    assert (second.used, second.local_answer, second.local_contains) == ("local", None, True)
    assert (third.local_answer, third.local_contains) == (None, None)  # nothing to contain: not judged
    answers = summarize(questions, results, "answer")["answers"]
    assert answers["containment"] == {"rate": 1.0, "of": 2}
    assert answers["local_containment"] == {"rate": 0.5, "of": 2} and answers["replaced_local"] == 1
