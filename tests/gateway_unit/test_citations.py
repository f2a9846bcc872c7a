"""Citation marks checked against the passages as an answer streams (services/citations.py)."""

from __future__ import annotations

import pytest

from services.gateway.services.citations import CitationCheck, check_citations, cited_numbers
from services.gateway.services.support import Evidence, measure_support

ROBOT = Evidence(1, "The Pomelo robot counts apples in orchards. It was designed in Lisbon.")
PRICE = Evidence(2, "A Pomelo robot costs 18,500 euros. Its battery lasts nine hours on a charge.")
WARRANTY = Evidence(3, "Every Pomelo robot comes with a three-year warranty.")
PASSAGES = [ROBOT, PRICE, WARRANTY]
QUESTION = "How much does a Pomelo robot cost?"


@pytest.mark.parametrize(("answer", "served"), [
    # The habit this is for: the answer's passage cited by position, not by content.
    ("A Pomelo robot costs 18,500 euros [1].", "A Pomelo robot costs 18,500 euros [2]."),
    ("It costs 18,500 euros [2].", "It costs 18,500 euros [2]."),  # right already
    ("It costs 18,500 euros. [1]", "It costs 18,500 euros. [2]"),  # a mark after the full stop
    ("It costs 18,500 euros [1, 2].", "It costs 18,500 euros [2]."),  # the number that backs it stays
    ("It costs 18,500 euros [7].", "It costs 18,500 euros [2]."),  # no passage 7 was given
    ("It costs 99 euros [1].", "It costs 99 euros [1]."),  # nothing backs it: the support check's to judge
    ("It costs a lot [9].", "It costs a lot."),  # nothing backs it, and [9] names nothing a user could open
    ("According to [1], it costs 18,500 euros [2].", "According to [1], it costs 18,500 euros [2]."),
    ("It costs 18,500 euros [1] and its battery lasts nine hours [3].",
     "It costs 18,500 euros [2] and its battery lasts nine hours [2]."),
    ("The warranty lasts three years [2].", "The warranty lasts three years [3]."),
    ("Pomelo robot [3]", "Pomelo robot [3]"),  # restates the question: claims nothing to check
    ("See [a] and [", "See [a] and ["),  # not marks
])
def test_each_mark_names_a_passage_that_backs_its_sentence(answer: str, served: str) -> None:
    assert check_citations(answer, PASSAGES, QUESTION, 0.6) == served


def test_a_mark_split_across_stream_pieces_is_held_only_until_it_closes() -> None:
    check = CitationCheck(PASSAGES, QUESTION, 0.6)
    pieces = ["It costs 18", ",500 euros [", "1", "]. Its battery", " lasts nine hours [", "2]."]
    sent = [check.feed(p) for p in pieces]
    # Text goes out at once; a mark (and the spaces before it) waits for its "]".
    assert sent == ["It costs 18", ",500 euros", "", " [2]. Its battery", " lasts nine hours", " [2]."]
    assert check.flush() == "" and check.corrected == 1


def test_an_unclosed_bracket_at_the_end_is_sent_as_written() -> None:
    check = CitationCheck(PASSAGES, QUESTION, 0.6)
    assert check.feed("It costs 18,500 euros [2") == "It costs 18,500 euros"
    assert check.flush() == " [2" and check.corrected == 0


def test_correcting_marks_never_changes_the_answer_s_support() -> None:
    """Marks are not claims: the support check sees the same answer before and after."""
    answer = "A Pomelo robot costs 18,500 euros [1]. The warranty lasts three years [1]."
    served = check_citations(answer, PASSAGES, QUESTION, 0.6)
    assert served == "A Pomelo robot costs 18,500 euros [2]. The warranty lasts three years [3]."
    assert measure_support(served, PASSAGES, QUESTION) == measure_support(answer, PASSAGES, QUESTION)


def test_portuguese_answers_are_checked_too() -> None:
    passages = [Evidence(1, "O robô Pomelo conta maçãs."), Evidence(2, "Um robô Pomelo custa 18.500 euros.")]
    assert check_citations("Custa 18.500 euros [1].", passages, "Quanto custa o robô Pomelo?", 0.6) \
        == "Custa 18.500 euros [2]."


@pytest.mark.parametrize(("answer", "misattributed"), [
    ("It costs 18,500 euros [2].", 0),
    ("It costs 18,500 euros [1].", 1),  # passage 1 names the Pomelo, but that is the question, not the claim
    ("A Pomelo robot costs 18,500 euros, counting apples [1].", 0),  # passage 1 backs part of it
    ("Its battery lasts nine hours [3].", 1),  # passage 3 says nothing of batteries or hours
    ("It costs 18,500 euros [7].", 1),  # no passage 7
    ("Pomelo robot [3]", 0),  # claims nothing
])
def test_misattributed_counts_marks_whose_passage_shares_nothing_with_their_sentence(answer: str,
                                                                                   misattributed: int) -> None:
    check = CitationCheck(PASSAGES, QUESTION, 0.6)
    check.feed(answer)
    assert check.misattributed == misattributed


def test_a_passage_that_names_its_subject_only_in_its_title_is_the_one_cited() -> None:
    """The model is shown the passage's text; its document's title says what "its dam" is."""
    passages = [Evidence(1, "The blue line runs from the coast to the mountains in three hours.", "Regional trains"),
                Evidence(2, "Its concrete dam is 54 metres high and was finished in 1962.", "Lumo reservoir — Dam"),
                Evidence(3, "The Lumo reservoir is fed by the river Dravina.", "Lumo reservoir — Water")]
    question = "When was the Lumo dam finished?"
    answer = "The Lumo dam was finished in 1962 [3]."
    assert check_citations(answer, passages, question, 0.6) == "The Lumo dam was finished in 1962 [2]."
    untitled = [Evidence(p.n, p.text) for p in passages]  # "Lumo" is only in passage 3's text
    assert check_citations(answer, untitled, question, 0.6) == answer
    # Whether it is backed enough to serve stays the strict measure's call: titles do not count there.
    assert measure_support(answer, passages, question).score == measure_support(answer, untitled, question).score == 0


def test_cited_numbers_reads_single_and_grouped_marks():
    """One reading of marks for the check, `aion eval` and the gate: "[1, 3]" names two passages."""
    assert cited_numbers("It is 4.5 bar [2]. Both say so [1, 3].") == {1, 2, 3}
    assert cited_numbers("No marks, a list [a] or a year [2026 only]") == set()
