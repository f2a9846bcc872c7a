"""The answer path's pure parts: support measure, quoted answers, language, context fitting, rewrite checks."""

from __future__ import annotations

import pytest

from services.gateway.services.context_fit import (
    ChatTokens,
    PromptBudget,
    PromptTooLong,
    fit_history,
    fit_passages,
)
from services.gateway.services.conversations import title_from
from services.gateway.services.language import detect_language
from services.gateway.services.not_found import is_not_found
from services.gateway.services.rewrite import acceptable, clean, rule_rewrite
from services.gateway.services.support import (
    Evidence,
    measure_support,
    not_found_answer,
    quoted_answer,
)
from services.gateway.services.tokens import EstimateCounter

WARRANTY = Evidence(1, "Every Pomelo robot comes with a three-year warranty that covers the motors, the cameras "
                       "and the onboard computer. The battery is covered for two years.")
PRICE = Evidence(2, "A Pomelo robot costs 18,500 euros. Farms can also rent one for 690 euros a month.")
QUESTION = "How long is the Pomelo robot's warranty?"


@pytest.mark.parametrize(("answer", "backed"), [
    ("The warranty lasts three years [1].", True),
    ("It is 3 years.", True),  # a number word in the passage backs the digit
    ("The Pomelo robot's warranty is 18,500 euros per month for 690 euros a month.", False),  # numbers moved
    ("The Pomelo robot's warranty is 10 years.", False),
    ("How long is the Pomelo robot's warranty?", False),  # the question again asserts nothing
    ("I could not find it in the documents.", False),
    ("", False),
])
def test_support_separates_backed_answers_from_unbacked_ones(answer: str, backed: bool) -> None:
    score = measure_support(answer, [WARRANTY, PRICE], QUESTION).score
    assert 0.0 <= score <= 1.0
    assert (score >= 0.6) is backed, score


def test_quoted_and_not_found_answers_quote_the_best_passage_sentence_with_its_number() -> None:
    quoted = quoted_answer(QUESTION, [PRICE, WARRANTY], "en")
    assert quoted.startswith("Quoted from the documents:\n“Every Pomelo robot comes with a three-year warranty")
    assert "onboard computer.” [1]" in quoted  # cited by the number its passage had in the prompt, not its place
    missing = not_found_answer("Who won the World Cup?", [PRICE], "pt")
    assert missing.startswith("Não encontrei isso nos documentos.")
    assert not_found_answer("anything", [], "en") == "The documents do not seem to cover this."
    assert is_not_found(missing) and is_not_found("I could not find this in the documents.")
    assert not is_not_found("The warranty lasts three years [1].")


@pytest.mark.parametrize(("text", "language"), [
    ("How long is the Pomelo robot's warranty?", "en"), ("Quanto custa um robô Pomelo?", "pt"),
    ("Quem fundou a Brightwell?", "pt"), ("Preço do Pomelo?", "pt"), ("Pomelo price?", None),
])
def test_language_by_stopwords(text: str, language: str | None) -> None:
    assert detect_language(text) == language


def test_passages_and_history_fit_the_budget_oldest_turns_dropped_first() -> None:
    tokens = ChatTokens(EstimateCounter())
    budget = PromptBudget.for_window(1024, answer_tokens=200, passage_tokens=600, max_passages=3)
    assert budget.passage_tokens == 206  # a quarter of what the answer leaves, under the setting
    long = "One sentence about the chain. " * 40
    fitted = fit_passages(["short passage one.", long, "never reached"], budget, tokens)
    assert fitted[0] == "short passage one." and len(fitted) == 2 and fitted[1].endswith(".")
    assert tokens.text(fitted[1]) < tokens.text(long)  # cut at a sentence, not dropped

    history = [{"role": r, "content": f"{r} turn {i} " + "word " * 60} for i, r in enumerate(["user", "assistant"] * 5)]

    def build(kept):
        return [{"role": "system", "content": "passages"}, *kept, {"role": "user", "content": "question?"}]

    messages, dropped = fit_history(build, history, budget, tokens)
    assert 0 < dropped < len(history) and dropped % 2 == 0 and messages[1]["role"] == "user"
    assert messages[1:-1] == history[dropped:] and tokens.messages(messages) <= budget.prompt_tokens
    with pytest.raises(PromptTooLong, match="AION_LOCAL_MAX_TOKENS"):
        fit_history(lambda kept: [{"role": "user", "content": "word " * 4000}], [], budget, tokens)


def test_a_model_rewrite_is_taken_only_when_it_keeps_the_follow_up_and_invents_nothing() -> None:
    history = [{"role": "user", "content": "How are the tomatoes in the greenhouse watered?"},
               {"role": "assistant", "content": "By drip irrigation [1]."}]
    assert acceptable("At what time are the tomatoes in the greenhouse watered?", "At what time?", history)
    assert not acceptable("The tomatoes are watered at 6:30.", "At what time?", history)  # an answer
    assert not acceptable("At what time does the lighthouse open?", "At what time?", history)  # invented subject
    assert not acceptable("At what time?", "At what time?", history)  # nothing added
    assert clean('Rewritten question: "At what time are they watered?"\nmore') == "At what time are they watered?"
    assert rule_rewrite("At what time?", history) == "tomatoes greenhouse watered At what time?"


def test_a_title_is_the_first_question_on_one_line_cut_at_a_word() -> None:
    assert title_from("  How long\nis the warranty? ") == "How long is the warranty?"
    long = title_from("word " * 40)
    assert len(long) <= 81 and long.endswith("…") and not long.endswith(" …")
