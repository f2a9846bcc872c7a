"""JSONL -> tokenized examples with answer-only labels, a stable held-out split and replay rows.

Rows come as chat format (`{"messages": [system, ..., user, assistant], "meta": {...}}`, what the
exporter writes: the exact messages the model was given, then its reply), as the seed's
`{"kind": "answer", "meta": {"prompt", "reply"}}`, or as a RAG spec (`{"question", "passages",
"answer"}`, turned into the gateway's live RAG prompt: the replay file). Only the last message,
the reply, is learned: earlier assistant turns are context the caller sent, never targets. A bad
row is counted with its reason and skipped; it never stops the build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.gateway.services.language import choose_language
from services.gateway.services.prompt import (
    DEFAULT_RAG_SYSTEM_PROMPT,
    DEFAULT_RAG_SYSTEM_PROMPT_EN,
    PromptPassage,
    build_rag_messages,
)
from shared.errors import AionError

from .passage_order import reorder_passages
from .settings import TrainerSettings

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips
ROLES = ("system", "user", "assistant")
DEFAULT_REPLAY_FILE = Path(__file__).with_name("rag_replay.jsonl")
# General questions in the base model's own greedy words, checked correct: self-distillation that keeps
# an adapter from forgetting what the gate's general regression set checks (measured: a 2-epoch fact run
# with grounded replay only fell from 26/26 to 20/26 there).
DEFAULT_GENERAL_REPLAY_FILE = Path(__file__).with_name("general_replay.jsonl")
MAX_REJECT_SAMPLES = 20


class RowRejected(ValueError):
    """One row cannot become a training example; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class EmptyDataset(AionError):
    status_code = 422
    code = "empty_dataset"


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    key: str  # content hash: decides the split and de-duplicates
    source: str = "data"  # "data" or "replay"
    # The same row with its passages in another order (passage_order), trained in its place when the
    # row lands on the training side; held-out rows are judged as they were served.
    reordered: tuple[list[int], list[int]] | None = None

    @property
    def answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    def for_training(self) -> Example:
        if self.reordered is None:
            return self
        ids, labels = self.reordered
        return Example(input_ids=ids, labels=labels, key=self.key, source=self.source)


@dataclass
class BuiltDataset:
    train: list[Example]
    heldout: list[Example]
    rows_read: int = 0
    replay_rows: int = 0
    reordered_rows: int = 0  # training rows whose passages were put in another order
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    reject_samples: list[str] = field(default_factory=list)  # "file:line: reason (detail)", first few

    def summary(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "train": len(self.train), "heldout": len(self.heldout),
                "replay": self.replay_rows,
                "reordered": self.reordered_rows, "duplicates": self.duplicates,
                "rejected": dict(self.rejected), "reject_samples": list(self.reject_samples)}


# ---------------------------------------------------------------- rows -> messages

def _check_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise RowRejected("missing_messages", "'messages' must be a non-empty list")
    messages = []
    for item in raw:
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise RowRejected("bad_role", f"each message needs a role in {ROLES}")
        content = item.get("content")
        if not isinstance(content, str) or not content.strip():
            raise RowRejected("empty_content", f"a {item['role']} message has no text")
        messages.append({"role": item["role"], "content": content})
    if not any(m["role"] == "user" for m in messages):
        raise RowRejected("no_user_message")
    if messages[-1]["role"] != "assistant":
        raise RowRejected("no_assistant_answer", "the last message must be the assistant's answer")
    return messages


DEFAULT_PERSONAS = {"pt": DEFAULT_RAG_SYSTEM_PROMPT, "en": DEFAULT_RAG_SYSTEM_PROMPT_EN}


def rag_messages(question: str, passages: Any, personas: Mapping[str, str]) -> list[dict[str, str]]:
    """The gateway's RAG prompt for a question and its numbered passages (each {source, text}), in the
    language the gateway would choose for it, with that language's persona."""
    if not isinstance(passages, list) or not all(isinstance(p, dict) and isinstance(p.get("text"), str)
                                                 for p in passages):
        raise RowRejected("bad_passages", "'passages' must be a list of {source, text}")
    numbered = [PromptPassage(n=i + 1, text=p["text"], source=str(p.get("source") or "")) for i, p in enumerate(passages)]
    language = choose_language(question, *(p.text for p in numbered))
    return build_rag_messages(question, numbered, language=language, persona=personas[language])


def row_to_messages(row: Any, system_prompt: str,
                    personas: Mapping[str, str] = DEFAULT_PERSONAS) -> list[dict[str, str]]:
    """Chat, seed or RAG-spec row -> validated messages (raises RowRejected)."""
    if not isinstance(row, dict):
        raise RowRejected("not_an_object")
    if "messages" in row:
        return _check_messages(row["messages"])
    if "passages" in row and "question" in row:
        answer = row.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise RowRejected("empty_content", "RAG row has no answer")
        return _check_messages([*rag_messages(str(row["question"]), row["passages"], personas),
                                {"role": "assistant", "content": answer}])
    meta = row.get("meta")
    if isinstance(meta, dict) and ("prompt" in meta or "q" in meta):
        if row.get("kind", "answer") != "answer":
            raise RowRejected("not_an_answer", f"kind {row.get('kind')!r}")
        # The seed exporter accepts q/a as aliases of prompt/reply; so do we.
        prompt, reply = meta.get("prompt") or meta.get("q"), meta.get("reply") or meta.get("a")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RowRejected("empty_content", "seed row has no prompt")
        if not isinstance(reply, str) or not reply.strip():
            raise RowRejected("empty_content", "seed row has no reply")
        # The exporter's seed rows carry the system prompt and history the model was given.
        system = meta.get("system") if isinstance(meta.get("system"), str) else system_prompt
        history = meta.get("history") if isinstance(meta.get("history"), list) else []
        return _check_messages([{"role": "system", "content": system}, *history, {"role": "user", "content": prompt},
                                {"role": "assistant", "content": reply}])
    raise RowRejected("unknown_format", "expected 'messages' or a seed row with meta.prompt/meta.reply")


# ---------------------------------------------------------------- messages -> tokens

def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _ids(tokenizer: Any, text: str) -> list[int]:
    # The chat template already wrote every special token the model expects.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_conversation(messages: list[dict[str, str]], tokenizer: Any, max_seq_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are IGNORE_INDEX everywhere except the final assistant answer.

    The prompt is tokenized on its own, exactly as the inference service tokenizes a request, so
    the model learns to continue the very token sequence it will see when serving. Earlier
    assistant turns are part of that prompt: the caller sent them, and nothing says AION wrote them.
    """
    specials = [t for t in tokenizer.all_special_tokens if t]
    for message in messages:
        if any(t in message["content"] for t in specials):
            # Text that spells a control token would be parsed as one: a forged turn boundary.
            raise RowRejected("special_token_in_text", f"a {message['role']} message contains a control token")
    prompt = _render(tokenizer, messages[:-1], True)
    turn = _render(tokenizer, messages, False)
    if not turn.startswith(prompt):
        raise RowRejected("template_mismatch", "the chat template does not extend the prompt with the answer")
    answer_text = turn[len(prompt):]
    if messages[-1]["content"].strip() not in answer_text:
        raise RowRejected("template_mismatch", "the chat template rewrote the answer text")
    prompt_ids = _ids(tokenizer, prompt)
    answer_ids = _ids(tokenizer, answer_text)
    # Learn the answer and its end-of-turn token (so the model stops); what the template puts
    # after that token (a newline) is not the model's to predict.
    special_ids = set(tokenizer.all_special_ids)
    last_special = max((i for i, t in enumerate(answer_ids) if t in special_ids), default=None)
    if last_special is None:
        answer_ids = [*answer_ids, tokenizer.eos_token_id]
        trained = len(answer_ids)
    else:
        trained = last_special + 1
    ids = prompt_ids + answer_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids[:trained] + [IGNORE_INDEX] * (len(answer_ids) - trained)
    if len(ids) > max_seq_len:
        raise RowRejected("too_long", f"{len(ids)} tokens > AION_TRAIN_MAX_SEQ_LEN {max_seq_len}")
    return ids, labels


def conversation_key(messages: list[dict[str, str]]) -> str:
    """A content hash of the conversation (whitespace at the ends of messages ignored)."""
    blob = json.dumps([[m["role"], m["content"].strip()] for m in messages], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def is_heldout(key: str, fraction: float) -> bool:
    """A pure function of the content: an example stays on its side across runs and as data grows,
    so tomorrow's model is never trained on today's held-out rows."""
    return int(key[:8], 16) / 0x1_0000_0000 < fraction


# ---------------------------------------------------------------- files -> dataset

@dataclass
class _Collector:
    rejected: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)

    def reject(self, where: str, exc: RowRejected) -> None:
        self.rejected[exc.reason] += 1
        if len(self.samples) < MAX_REJECT_SAMPLES:
            self.samples.append(f"{where}: {exc.reason}" + (f" ({exc.detail})" if exc.detail else ""))


def _read_rows(path: Path) -> Iterable[tuple[str, Any]]:
    """(where, parsed row) per non-blank line; a line that is not JSON yields its RowRejected."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                yield where, json.loads(line)
            except ValueError as exc:
                yield where, RowRejected("invalid_json", str(exc)[:80])


def _reordered(row: Any, messages: list[dict[str, str]], key: str, tokenizer: Any,
               settings: TrainerSettings) -> tuple[list[int], list[int]] | None:
    """The row's encoding with its passages in an order seeded by its content, when it can be reordered."""
    moved = reorder_passages(messages, row.get("meta"), seed=settings.seed ^ int(key[:16], 16))
    if moved is None or moved == messages:
        return None
    try:
        return encode_conversation(moved, tokenizer, int(settings.sized("max_seq_len")))
    except RowRejected:
        return None  # e.g. renumbering made it a token too long: train it as logged


def load_examples(paths: Sequence[Path], tokenizer: Any, settings: TrainerSettings, source: str = "data",
                  collector: _Collector | None = None, reorder: bool = False) -> tuple[list[Example], int, int]:
    """Every valid, distinct row of the files as an Example; returns (examples, rows read, duplicates).
    `reorder`: also encode each grounded chat row with its passages in another order (Example.reordered)."""
    collector = collector or _Collector()
    examples: list[Example] = []
    seen: set[str] = set()
    rows = duplicates = 0
    for path in paths:
        for where, row in _read_rows(Path(path)):
            rows += 1
            try:
                if isinstance(row, RowRejected):
                    raise row
                messages = row_to_messages(row, settings.system_prompt, settings.rag_personas())
                key = conversation_key(messages)
                if key in seen:
                    duplicates += 1
                    continue
                ids, labels = encode_conversation(messages, tokenizer, int(settings.sized("max_seq_len")))
            except RowRejected as exc:
                collector.reject(where, exc)
                continue
            seen.add(key)
            moved = _reordered(row, messages, key, tokenizer, settings) if reorder and "messages" in row else None
            examples.append(Example(input_ids=ids, labels=labels, key=key, source=source, reordered=moved))
    return examples, rows, duplicates


def split_heldout(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """(train, heldout) by content hash; at least one of each when there are two or more examples."""
    train = [e for e in examples if not is_heldout(e.key, fraction)]
    heldout = [e for e in examples if is_heldout(e.key, fraction)]
    if len(examples) >= 2:
        # Tiny datasets can land all on one side; move the example nearest the boundary.
        if not heldout:
            pick = min(train, key=lambda e: e.key)
            train.remove(pick)
            heldout.append(pick)
        elif not train:
            pick = max(heldout, key=lambda e: e.key)
            heldout.remove(pick)
            train.append(pick)
    return train, heldout


def pick_replay(pool: list[Example], count: int, seed: int) -> list[Example]:
    """`count` replay examples (at most the whole pool), the same ones for the same seed."""
    count = min(count, len(pool))
    return random.Random(seed).sample(pool, count) if count else []


def build_dataset(paths: Sequence[Path], tokenizer: Any, settings: TrainerSettings) -> BuiltDataset:
    """Read the exported JSONL files into train / held-out examples, with replay rows mixed into train."""
    collector = _Collector()
    examples, rows, duplicates = load_examples(paths, tokenizer, settings, "data", collector,
                                               reorder=settings.shuffle_passages)
    if len(examples) < 2:
        raise EmptyDataset(f"{len(examples)} usable rows in {[str(p) for p in paths]} (need 2: one to train, one "
                           f"to evaluate); rejected: {dict(collector.rejected)}")
    train, heldout = split_heldout(examples, settings.heldout_fraction)
    reordered = sum(1 for e in train if e.reordered is not None)
    train = [e.for_training() for e in train]
    replay: list[Example] = []
    for ratio, path in ((settings.replay_ratio, settings.replay_file or DEFAULT_REPLAY_FILE),
                        (settings.general_replay_ratio, settings.general_replay_file or DEFAULT_GENERAL_REPLAY_FILE)):
        wanted = math.ceil(ratio * len(train))
        if wanted:
            # The shipped replay files are ours: a bad row there is a bug to hear about, not to count.
            pool, _, _ = load_examples([path], tokenizer, settings, "replay")
            replay += pick_replay(pool, wanted, settings.seed)
    dataset = BuiltDataset(train=train + replay, heldout=heldout, rows_read=rows, replay_rows=len(replay),
                           reordered_rows=reordered, duplicates=duplicates, rejected=collector.rejected,
                           reject_samples=collector.samples)
    if collector.rejected:
        logger.warning("dataset: rejected %d rows %s; e.g. %s", sum(collector.rejected.values()),
                       dict(collector.rejected), collector.samples[:3])
    logger.info("dataset: %s", {k: v for k, v in dataset.summary().items() if k != "reject_samples"})
    return dataset
