"""Grounded rows trained with their passages in another order: the cited number follows the passage."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from services.gateway.services.prompt import (
    DEFAULT_RAG_SYSTEM_PROMPT_EN,
    PROMPT_VERSION,
    PromptPassage,
    build_rag_messages,
)
from tests.trainer.conftest import trainer_settings
from tests.trainer.facts import write_jsonl
from trainer.data_builder import IGNORE_INDEX, build_dataset
from trainer.passage_order import renumber_citations, reorder_passages, split_context

PASSAGES = [
    "The Harbin Point lighthouse is a white stone tower 31 metres tall, built in 1874.",
    "Visitors can climb the 142 steps to the gallery.\n\nTickets cost six euros [note].",
    "The north trail starts at the fish market and reaches the cliffs after four kilometres.",
]
ANSWERS = {"31 metres": 0, "142 steps": 1, "four kilometres": 2}  # the passage that holds each answer


def logged(question: str, reply: str, passages: list[str] = PASSAGES, **meta: object) -> tuple[list[dict], dict]:
    """A row as the exporter writes it: the gateway's own RAG messages, the reply, and the answer's meta."""
    numbered = [PromptPassage(n=i + 1, text=t, source=f"doc {i}") for i, t in enumerate(passages)]
    messages = build_rag_messages(question, numbered, language="en", persona=DEFAULT_RAG_SYSTEM_PROMPT_EN)
    meta = {"prompt_version": PROMPT_VERSION, "chunk_ids": [str(i) for i in range(len(passages))], **meta}
    return [*messages, {"role": "assistant", "content": reply}], meta


def cited_texts(messages: list[dict]) -> list[str]:
    """The passage texts the reply's [n] citations point at, read from the system message."""
    _, texts = split_context(messages[0]["content"])
    numbers = [int(n) for group in re.findall(r"\[(\d+(?:, \d+)*)\]", messages[-1]["content"])
               for n in group.split(", ")]
    return [texts[n - 1] for n in numbers]


def test_the_gateway_layout_splits_back_into_its_passages() -> None:
    messages, _ = logged("How tall is it?", "31 metres [1].")
    head, texts = split_context(messages[0]["content"])
    assert texts == [p.strip() for p in PASSAGES]  # a blank line inside a passage stays inside it
    assert head.startswith(DEFAULT_RAG_SYSTEM_PROMPT_EN)
    assert split_context("You are terse.") is None
    assert split_context("Intro\n\n[1] one\n\n[3] skipped two") is None  # numbering that is not 1, 2, …


def test_the_cited_number_follows_the_passage_that_holds_the_answer() -> None:
    positions = Counter()
    for seed in range(60):
        for answer, holder in ANSWERS.items():
            messages, meta = logged(f"About {answer}?", f"It is {answer} [{holder + 1}].")
            moved = reorder_passages(messages, meta, seed)
            assert moved is not None
            assert cited_texts(moved) == [PASSAGES[holder].strip()]
            assert moved[1:-1] == messages[1:-1]  # the question and history are untouched
            assert sorted(split_context(moved[0]["content"])[1]) == sorted(p.strip() for p in PASSAGES)
            positions[int(re.search(r"\[(\d)\]", moved[-1]["content"]).group(1))] += 1
    assert set(positions) == {1, 2, 3} and min(positions.values()) > 30  # every slot, roughly evenly
    assert reorder_passages(*logged("q", "31 metres [1]."), seed=7) == reorder_passages(*logged("q", "31 metres [1]."), seed=7)


def test_several_citations_and_uncited_replies() -> None:
    messages, meta = logged("Height and steps?", "31 metres [1] and 142 steps [2]; both in [1, 2].")
    moved = reorder_passages(messages, meta, 3)
    assert cited_texts(moved) == [PASSAGES[0], PASSAGES[1].strip(), PASSAGES[0], PASSAGES[1].strip()]
    not_found, meta = logged("Who built it?", "I could not find it in the documents.")
    assert reorder_passages(not_found, meta, 3)[-1] == not_found[-1]


@pytest.mark.parametrize("reply, meta, passages", [
    ("It is 31 metres [4].", {}, PASSAGES),  # cites a passage that is not there
    ("Document 1 says 31 metres.", {}, PASSAGES),  # names a passage in words
    ("It is 31 metres [1].", {"prompt_version": "rag-1"}, PASSAGES),  # another layout
    ("It is 31 metres [1].", {"chunk_ids": ["a", "b"]}, PASSAGES),  # not the passages the answer logged
    ("It is 31 metres [1].", {}, PASSAGES[:1]),  # one passage: no other order
])
def test_rows_that_cannot_be_reordered_safely_are_left_as_logged(reply: str, meta: dict, passages: list[str]) -> None:
    messages, logged_meta = logged("How tall?", reply, passages)
    assert reorder_passages(messages, {**logged_meta, **meta}, 5) is None


def test_renumbering_maps_each_citation() -> None:
    assert renumber_citations("a [1], b [3] and [2, 1].", [3, 1, 2]) == "a [3], b [2] and [1, 3]."
    assert renumber_citations("see [0].", [2, 1]) is None


@pytest.mark.slow
def test_training_rows_are_reordered_and_held_out_rows_are_not(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from services.inference.loader import resolve_base_model
    from tests.fixtures.servers import MODEL_CACHE

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE))
    rows = []
    for i in range(24):
        answer, holder = list(ANSWERS.items())[i % 3]
        messages, meta = logged(f"Question {i} about {answer}?", f"It is {answer} [{holder + 1}].")
        rows.append({"messages": messages, "meta": meta})
    path = write_jsonl(tmp_path / "rows.jsonl", rows)

    def data_texts(settings) -> tuple[list[str], list[str], int]:
        dataset = build_dataset([path], tokenizer, settings)
        train = [tokenizer.decode(e.input_ids) for e in dataset.train if e.source == "data"]
        return train, [tokenizer.decode(e.input_ids) for e in dataset.heldout], dataset.reordered_rows

    as_logged = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    plain = {"AION_TRAIN_REPLAY_RATIO": 0, "AION_TRAIN_GENERAL_REPLAY_RATIO": 0}
    train, heldout, reordered = data_texts(trainer_settings(tmp_path, **plain))
    kept_train, kept_heldout, none = data_texts(trainer_settings(tmp_path, AION_TRAIN_SHUFFLE_PASSAGES=False, **plain))

    assert none == 0 and all(text in as_logged for text in kept_train + kept_heldout)
    assert heldout == kept_heldout  # judged as served
    assert reordered >= len(train) // 2 and sum(text not in as_logged for text in train) == reordered
    for text in train:  # the cited passage still holds the reply's answer
        answer = re.search(r"It is (.+?) \[(\d)\]\.<\|im_end\|>", text)
        assert re.search(rf"\[{answer.group(2)}\] [^\[<]*{answer.group(1)}", text)
    example = build_dataset([path], tokenizer, trainer_settings(tmp_path, **plain)).train[0]
    assert tokenizer.decode([t for t, label in zip(example.input_ids, example.labels, strict=True)
                             if label != IGNORE_INDEX]).startswith("It is ")
