"""The loop benchmark's teacher (the fallback stand-in) reads the gateway's real RAG prompt."""

from __future__ import annotations

from bench.loop_bench import Question, teacher_reply
from services.gateway.services.support import Evidence, measure_support
from trainer.data_builder import DEFAULT_PERSONAS, rag_messages

SHORT = "The scheduler retries a failed export three times before it gives up."
LONG = ("When the service starts without a configuration file it reads every setting from the environment, "
        "falls back to the embedded defaults for the rest, and logs which of the two each value came from.")


def question(sentence: str, answer: str | None) -> Question:
    text = f'In the demo documentation, what fills the blank: "{sentence.replace(answer or "", "____")}"'
    return Question(text, answer, sentence, "demo.md")


def messages_for(q: Question, passages: list[str]) -> list[dict[str, str]]:
    return rag_messages(q.text, [{"source": f"Demo — part {i}", "text": t} for i, t in enumerate(passages)],
                        DEFAULT_PERSONAS)


def test_the_teacher_restates_the_sentence_and_cites_the_passage_that_holds_it() -> None:
    q = question(SHORT, "three")
    passages = ["Exports run every night at two.", f"Retries. {SHORT} Then it alerts the owner."]
    assert teacher_reply(messages_for(q, passages), {q.text: q}) == f"{SHORT[:-1]} [2]."


def test_a_long_sentence_is_cut_to_the_words_around_the_answer_and_a_missing_passage_is_not_found() -> None:
    """A long sentence is cut (a concise answer) to words the passage holds, so the export's support
    check keeps the row ("The missing word is X" was dropped as low support)."""
    q = question(LONG, "environment")
    assert len(LONG.split()) > 24
    reply = teacher_reply(messages_for(q, ["Intro.", LONG]), {q.text: q})
    assert reply.endswith(" [2].") and "environment" in reply and len(reply.split()) <= 25
    words = reply.removesuffix(" [2].").split()
    assert " ".join(words[1:]) in LONG and words[0].lower() in LONG.lower()
    evidence = [Evidence(1, "Intro."), Evidence(2, LONG)]
    assert measure_support(reply, evidence, q.text).score == 1.0
    reply = teacher_reply(messages_for(q, ["Intro.", "Nothing about it."]), {q.text: q})
    assert "not" in reply.lower() and "[" not in reply


def test_held_out_answers_count_what_users_get_and_what_the_local_model_answered_itself() -> None:
    """At tau 0 the support check may still replace an unsupported local answer (the teacher re-answers,
    or the passages are quoted): that answer counts for users; the local model is judged on its own."""
    from bench.loop_bench import Scores, eval_question

    q = question(SHORT, "three")
    right, wrong = f"{SHORT[:-1]} [1].", "I do not know."
    scores = Scores()
    scores.add(q, {"answer": right, "rank": 1, "confidence": 0.9, "used": "local", "local_answer": None}, 0.62)
    scores.add(q, {"answer": right, "rank": 1, "confidence": 0.5, "used": "fallback", "local_answer": wrong}, 0.62)
    scores.add(q, {"answer": right, "rank": 1, "confidence": 0.9, "used": "documents", "local_answer": right}, 0.62)
    scores.add(q, {"answer": wrong, "rank": None, "confidence": 0.9, "used": "local", "local_answer": None}, 0.62)
    figures = scores.figures()
    assert figures["exact_answer_rate"] == 0.75  # what users got: 3 of 4 right
    assert figures["local_exact_answer_rate"] == 0.5  # the local model's own: served once, replaced once
    assert figures["answered_by_local_rate"] == 0.5
    assert figures["citation_correct_rate"] == 1.0 and figures["local_citation_correct_rate"] == round(2 / 3, 4)
    assert figures["fallback_share_at_default_tau"] == 0.25
    absent = Question(q.text, None, SHORT, "other.md")
    assert eval_question(q)["expect_passage"] == SHORT and eval_question(absent) == {"question": q.text,
                                                                                      "unanswerable": True}
