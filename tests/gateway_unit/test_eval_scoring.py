"""How `aion eval` scores one outcome: "not found" in Portuguese and English, instruction echoes,
containment and the rank of the expected passage."""

from __future__ import annotations

import pytest

from services.gateway.services.eval_set import EvalQuestion
from services.gateway.services.evaluation import Candidate, contains_any, echoes_instructions, passage_rank
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
