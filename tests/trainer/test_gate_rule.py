"""The gate's decision rule on given figures (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.gateway.services.language import choose_language
from tests.trainer.conftest import trainer_settings
from trainer.build_general_replay import near_regression
from trainer.data_builder import DEFAULT_GENERAL_REPLAY_FILE
from trainer.evaluate import Figures, decide, judge_replies, load_rag_regression_set, load_regression_set


@pytest.fixture
def settings(tmp_path: Path):
    return trainer_settings(tmp_path, AION_TRAIN_REGRESSION_MARGIN=0.05)


def test_promotes_when_loss_improves_and_regression_holds(settings) -> None:
    decision, reasons = decide(settings, 2.5, 0.4, 1.0, 0.96, 1.0)
    assert decision == "promote", reasons


@pytest.mark.parametrize(("loss_cand", "acc_cur", "acc_cand", "acc_base", "why"), [
    (2.6, 1.0, 1.0, 1.0, "did not improve"),            # learned nothing
    (float("nan"), 1.0, 1.0, 1.0, "not measurable"),    # diverged, or no held-out rows
    (0.4, 1.0, 0.92, 1.0, "fell"),                      # forgot more than the margin
    (0.4, 0.96, 0.92, 1.0, "below the base"),           # within margin of the active adapter, but drifting
])
def test_rejects(settings, loss_cand: float, acc_cur: float, acc_cand: float, acc_base: float, why: str) -> None:
    decision, reasons = decide(settings, 2.5, loss_cand, acc_cur, acc_cand, acc_base)
    assert decision == "reject"
    assert any(why in r for r in reasons), reasons


def test_a_base_that_misses_questions_does_not_doom_every_candidate(settings) -> None:
    """Another base model may score below 1.0 on the shipped set; only drops count."""
    decision, reasons = decide(settings, 2.5, 0.4, 0.6, 0.6, 0.6)
    assert decision == "promote", reasons


RAG_OK = {"RAG answer rate": (0.80, 0.85, 0.80), "RAG citation rate": (0.40, 0.55, 0.0),
          "RAG wrong-citation rate": Figures(0.05, 0.03, 0.0, lower_is_better=True),
          "RAG supported rate": (0.70, 0.80, 0.70), "RAG not-found rate": (0.25, 0.50, 0.25)}


@pytest.mark.parametrize(("rag", "why"), [
    # Learned to answer without reading the context (trained on wrong answers): fewer right answers.
    ({**RAG_OK, "RAG answer rate": (0.80, 0.10, 0.80)}, "RAG answer rate fell"),
    # Says "not found" to everything: perfect on the absent items, and still rejected.
    ({**RAG_OK, "RAG answer rate": (0.80, 0.0, 0.80), "RAG citation rate": (0.40, 0.0, 0.0),
      "RAG not-found rate": (0.25, 1.0, 0.25)}, "RAG answer rate fell"),
    # Learned to cite while answering less: the citations do not buy back the lost answers.
    ({**RAG_OK, "RAG answer rate": (0.86, 0.71, 0.86), "RAG citation rate": (0.0, 0.57, 0.0)},
     "RAG answer rate fell"),
    # Answers as well, cites less than the active adapter did.
    ({**RAG_OK, "RAG citation rate": (0.55, 0.40, 0.0)}, "RAG citation rate fell"),
    # Within the margin of a drifting active adapter, but below the base.
    ({**RAG_OK, "RAG answer rate": (0.77, 0.74, 0.80)}, "below the base"),
    ({**RAG_OK, "RAG not-found rate": (0.50, 0.25, 0.25)}, "RAG not-found rate fell"),
    # Trained on replies that do not match their passages: it still names the answer and cites, but
    # says things the context does not hold, which the answer path would replace.
    ({**RAG_OK, "RAG supported rate": (0.70, 0.45, 0.70)}, "RAG supported rate fell"),
    # Learned to cite where the base never did, and cites passages that do not hold the answer: more right
    # citations too, but a user following a wrong one finds nothing.
    ({**RAG_OK, "RAG citation rate": (0.0, 0.11, 0.0), "RAG wrong-citation rate": Figures(0.0, 0.14, 0.0, True)},
     "RAG wrong-citation rate rose"),
    ({**RAG_OK, "RAG wrong-citation rate": Figures(0.08, 0.10, 0.0, True)}, "above the base"),
])
def test_rejects_a_worse_rag_answerer(settings, rag: dict, why: str) -> None:
    decision, reasons = decide(settings, 2.5, 0.4, 1.0, 1.0, 1.0, rag=rag)
    assert decision == "reject"
    assert any(why in r for r in reasons), reasons


def test_promotes_a_better_rag_answerer_and_skips_unmeasured_sets(settings) -> None:
    decision, reasons = decide(settings, 2.5, 0.4, 1.0, 1.0, 1.0, rag=RAG_OK)
    assert decision == "promote" and sum("RAG" in r and "held" in r for r in reasons) == 5
    nan = float("nan")
    decision, reasons = decide(settings, 2.5, 0.4, 1.0, 1.0, 1.0, rag={"RAG not-found rate": (nan, nan, nan)})
    assert decision == "promote" and not any("RAG" in r for r in reasons)


@pytest.mark.parametrize(("grounding", "decision", "why"), [
    ((0.51, 0.61, 0.51), "promote", "grounding gap held"),  # tells right from wrong better
    ((0.51, 0.47, 0.51), "promote", "grounding gap held"),  # within 10%
    ((0.51, 0.41, 0.51), "reject", "grounding gap fell"),   # trained on replies that answer other questions
    ((0.50, 0.46, 0.60), "reject", "below the base's"),     # within 10% of a drifting adapter, not of the base
    ((0.51, float("nan"), 0.51), "promote", ""),            # a RAG set without right/wrong replies: not judged
    ((0.51, float("inf"), 0.51), "reject", "grounding gap fell"),
])
def test_the_grounding_gap_may_not_fall(settings, grounding: tuple, decision: str, why: str) -> None:
    """The held-out rows come from the night being judged, so their loss cannot see a night of bad rows."""
    got, reasons = decide(settings, 2.5, 0.4, 1.0, 1.0, 1.0, rag=RAG_OK, grounding=grounding)
    assert got == decision, reasons
    assert any(why in r for r in reasons) if why else not any("grounding" in r for r in reasons), reasons


def test_every_rag_set_item_has_a_right_and_a_wrong_reply_by_the_gates_own_judge() -> None:
    """Right replies: the answer, the right passage and no other, backed by the passages; "not found" where
    the context lacks it. Wrong replies: the same form, a fact of another passage, not the answer. Support
    matches words, so a Portuguese reply to English passages (the prompt asks for the question's language)
    is backed only by its numbers: those are not held to it."""
    for item in load_rag_regression_set():
        assert item.reply and item.wrong_reply, item.question
        verdict, wrong = item.judge(item.reply, 0.6), item.judge(item.wrong_reply, 0.6)
        if item.cite is None:
            assert verdict == {"not_found": True} and wrong == {"not_found": False}, item
            continue
        english = choose_language(item.question) == "en"
        assert verdict == {"answer": True, "cited": True, "wrong_citation": False,
                           "supported": verdict["supported"] if not english else True}, item
        # Most cite the passage their fact came from (the answer rate judges those, not the citation).
        assert not wrong["answer"] and not wrong["cited"], item
        # Both cite the passage that backs what they say: the answer path serves them as written.
        assert item.served(item.reply, 0.6) == item.reply and item.served(item.wrong_reply, 0.6) == item.wrong_reply


def test_no_general_replay_row_repeats_a_regression_question() -> None:
    """Replaying a regression question would teach the test the gate grades."""
    regression = load_regression_set()
    rows = [json.loads(line) for line in DEFAULT_GENERAL_REPLAY_FILE.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 120
    clashes = {row["messages"][0]["content"]: near_regression(row["messages"][0]["content"], (), regression)
               for row in rows}
    assert {q: c for q, c in clashes.items() if c} == {}
    assert near_regression("What is the capital city of France?", (), regression) == "What is the capital of France?"


def test_a_rag_reply_counts_as_supported_only_when_its_passages_back_it() -> None:
    """The gate's supported rate judges replies as the gateway's answer path does (support threshold)."""
    item = next(i for i in load_rag_regression_set() if i.question == "How tall is the Harbin lighthouse?")
    restated = item.judge("The Harbin Point lighthouse is 31 metres tall [1].", 0.6)
    assert restated == {"answer": True, "cited": True, "wrong_citation": False, "supported": True}
    invented = item.judge("The Harbin Point lighthouse is 31 metres tall and was painted red by monks in 1990 [1].",
                          0.6)
    assert invented["answer"] and invented["cited"] and not invented["supported"]
    # Support says the context holds it, not that it answers: the answer rate judges that.
    other = item.judge("The north trail reaches the cliffs after four kilometres [3].", 0.6)
    assert other == {"answer": False, "cited": False, "wrong_citation": False, "supported": True}
    # Cited to a passage that says nothing of it (the tickets), or to one the model was not given.
    assert item.judge("The Harbin Point lighthouse is 31 metres tall [2].", 0.6)["wrong_citation"]
    assert item.judge("The Harbin Point lighthouse is 31 metres tall [1] [5].", 0.6)["wrong_citation"]
    uncited = item.judge("The Harbin Point lighthouse is 31 metres tall.", 0.6)
    assert not uncited["cited"] and not uncited["wrong_citation"]


def test_the_gate_judges_citations_as_the_answer_path_serves_them(tmp_path: Path) -> None:
    """The answer path renumbers a mark to the passage that backs its sentence (services/citations.py), so a
    right answer cited by position is a right citation for users; a wrong answer stays wrong."""
    items = [i for i in load_rag_regression_set() if i.question in (
        "How tall is the Harbin lighthouse?", "How many steps lead to the gallery of the Harbin lighthouse?")]
    replies = ["The Harbin Point lighthouse is 31 metres tall [2].", "The gallery has 142 steps [3]."]
    served = judge_replies(items, replies, trainer_settings(tmp_path))
    assert (served.citation_rate, served.wrong_citation_rate, served.answer_rate) == (1.0, 0.0, 1.0)
    assert served.failures == []
    as_written = judge_replies(items, replies, trainer_settings(tmp_path, AION_CHECK_CITATIONS=False))
    assert (as_written.citation_rate, as_written.wrong_citation_rate) == (0.0, 1.0)
    assert [f["reply"] for f in as_written.failures] == replies
