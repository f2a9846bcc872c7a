"""Evaluation gate: promote a candidate adapter only if it learned without getting worse at what users get.

Four measures, candidate vs current (the active adapter, or the base when none is active) and vs
the base, all on what users get:
- loss on the held-out grounded rows (the exact RAG prompts, answer tokens only): did it learn the
  owner's answers?
- a fixed RAG regression set, answered greedily in the gateway's RAG prompt: is the answer in the
  reply, the right passage cited, no mark naming a passage that says nothing of its sentence (replies
  judged as served, marks checked), and the reply backed by its passages, and does it say
  "not found" when the context lacks the answer? (Held-out loss on rows like the training rows cannot
  see an adapter that learned to answer without reading the context.)
- the grounding gap on that set: how much less likely the model finds a wrong reply (a fact from
  another passage of the same context, cited and worded like a right one) than the right reply, in
  loss per answer token. The held-out rows come from the night being judged, so an adapter trained on
  bad rows (replies that do not answer their question) "improves" on them; and the loss on the right
  replies alone falls for it too, since it learns the replies' form. The gap is form-free: both replies
  have the same form, only one answers the question (measured in docs/benchmarks.md).
- a fixed regression set of general questions: did it forget what the base knew? (Measured: a
  fact-learning run began answering "The capital of France is New York City".)
The figures of every set are kept in the gate report, stored on the job.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from services.gateway.services.citations import CitationCheck, check_citations, cited_numbers
from services.gateway.services.not_found import is_not_found
from services.gateway.services.support import Evidence, measure_support
from services.inference.loader import LoadedModel, disable_cpu_4bit_repack

from .data_builder import Example, RowRejected, encode_conversation, rag_messages
from .loss import answer_loss
from .precision import autocast, autocast_dtype
from .run_lora import collate
from .settings import TrainerSettings

logger = logging.getLogger(__name__)

DEFAULT_REGRESSION_FILE = Path(__file__).with_name("regression_set.jsonl")
DEFAULT_RAG_REGRESSION_FILE = Path(__file__).with_name("rag_regression_set.jsonl")
CANDIDATE, CURRENT = "candidate", "current"
# The base's and the active adapter's regression scores only change when they do: keep them per
# (base, adapter, questions) so a worker running job after job scores each once.
_reference_scores: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class RegressionItem:
    question: str
    answers: tuple[str, ...]  # any of these, as a whole word, case-insensitive, counts as correct
    system: str | None = None  # None: the chat template's own default system prompt

    def is_correct(self, reply: str) -> bool:
        return mentions(reply, self.answers)

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": self.question}]


def mentions(reply: str, answers: Sequence[str]) -> bool:
    """Any of the answers, as a whole word, case-insensitive."""
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", reply, re.IGNORECASE) for a in answers)


@dataclass(frozen=True)
class RagItem:
    """Context + question. `cite` is the passage holding the answer; None: the context lacks it."""

    question: str
    passages: tuple[tuple[str, str], ...]  # (source, text), numbered from 1 in the prompt
    expected: tuple[str, ...]
    cite: int | None
    reply: str | None = None  # a right reply, as the prompt asks for it
    wrong_reply: str | None = None  # the same form, about another passage of the context: not an answer

    def messages(self, personas: Mapping[str, str]) -> list[dict[str, str]]:
        return rag_messages(self.question, [{"source": s, "text": t} for s, t in self.passages], personas)

    def served(self, reply: str, support_threshold: float) -> str:
        """The reply as the answer path serves it: its citation marks checked against the passages."""
        return check_citations(reply, self.evidence(), self.question, support_threshold)

    def evidence(self) -> list[Evidence]:
        return [Evidence(n, text, source) for n, (source, text) in enumerate(self.passages, start=1)]

    def judge(self, reply: str, support_threshold: float) -> dict[str, bool]:
        """answer: an expected answer is in the reply; cited: exactly the right passage is cited;
        wrong_citation: a mark names a passage that backs nothing of the sentence it ends, or no passage
        given (a user following it finds nothing of it; citing nothing is not wrong, only uncited, and a
        wrong answer citing the passage it came from is judged by the answer rate);
        supported: the passages back the reply as the gateway's answer path requires before serving it
        (an unsupported local reply is replaced there); not_found: the reply says the documents do not hold it."""
        if self.cite is None:
            return {"not_found": is_not_found(reply)}
        evidence = self.evidence()
        supported = measure_support(reply, evidence, self.question).score >= support_threshold
        marks = CitationCheck(evidence, self.question, support_threshold)
        marks.feed(reply)
        return {"answer": mentions(reply, self.expected), "cited": cited_numbers(reply) == {self.cite},
                "wrong_citation": marks.misattributed > 0, "supported": supported}


@dataclass
class RagScore:
    """`answer_rate`: answerable items whose reply holds an expected answer; `citation_rate`: those citing
    exactly the right passage; `supported_rate`: those whose reply its passages back (what the answer path
    serves rather than replaces); `not_found_rate`: the items whose context lacks the answer, answered "not
    found". The gate judges each rate on its own (`rag_measures`), so saying "not found" to everything,
    citing more while answering less, or answering with sentences the context does not hold, cannot pass. `answer_score` (0.5 for the answer, 0.5 more when
    it also cites the right passage) is the one-number summary shown in the admin panel."""

    answer_score: float
    answer_rate: float
    citation_rate: float
    not_found_rate: float
    total: int
    supported_rate: float = math.nan
    wrong_citation_rate: float = math.nan
    failures: list[dict[str, Any]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {"answer_score": _r(self.answer_score), "answer_rate": _r(self.answer_rate),
                "citation_rate": _r(self.citation_rate), "wrong_citation_rate": _r(self.wrong_citation_rate),
                "supported_rate": _r(self.supported_rate), "not_found_rate": _r(self.not_found_rate),
                "items": self.total}


@dataclass
class RegressionScore:
    correct: int
    total: int
    failures: list[dict[str, str]] = field(default_factory=list)  # question, expected, reply

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class GateResult:
    decision: str  # "promote" or "reject"
    reasons: list[str]
    heldout_loss_current: float
    heldout_loss_candidate: float
    heldout_examples: int
    heldout_tokens: int
    regression_accuracy_current: float
    regression_accuracy_candidate: float
    regression_accuracy_base: float
    regression_total: int
    regression_margin: float
    current: str  # "base" or the active adapter's path
    seconds: float
    candidate_failures: list[dict[str, str]] = field(default_factory=list)
    current_failures: list[dict[str, str]] = field(default_factory=list)
    rag_score_current: float = math.nan  # RagScore.answer_score of each
    rag_score_candidate: float = math.nan
    rag_score_base: float = math.nan
    rag_margin: float = 0.0
    grounding_gap_current: float = math.nan  # GroundingScore.gap of each
    grounding_gap_candidate: float = math.nan
    grounding_gap_base: float = math.nan
    # The report shown in the admin panel: per set, the figures of base, current and candidate.
    report: dict[str, Any] = field(default_factory=dict)
    rag_candidate_failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (stored on the job in JSONB, which has no NaN): unmeasured figures become None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def load_regression_set(path: Path | None = None) -> list[RegressionItem]:
    """The regression questions (JSONL: question, answers, optional system); the shipped set by default."""
    items = []
    for line in (path or DEFAULT_REGRESSION_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(RegressionItem(question=row["question"], answers=tuple(row["answers"]),
                                        system=row.get("system")))
    return items


def load_rag_regression_set(path: Path | None = None) -> list[RagItem]:
    """The RAG regression items (JSONL: question, passages [{source, text}], expected, cite, optional reply
    and wrong_reply); the shipped set by default."""
    items = []
    for line in (path or DEFAULT_RAG_REGRESSION_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(RagItem(question=row["question"], expected=tuple(row.get("expected") or ()),
                                 passages=tuple((p.get("source") or "", p["text"]) for p in row["passages"]),
                                 cite=row.get("cite"), reply=row.get("reply"), wrong_reply=row.get("wrong_reply")))
    return items


def _device(model: Any) -> str:
    return str(next(model.parameters()).device)


def heldout_loss(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int, *,
                 chunk_tokens: int = 256, autocast_to: Any = None) -> tuple[float, int]:
    """Mean loss per answer token over the examples, and the token count (logits for answer tokens only)."""
    import torch

    total_loss, total_tokens = 0.0, 0
    device = _device(model)
    with torch.no_grad(), autocast(device, autocast_to):
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size], pad_id).items()}
            # Summed, not a per-batch mean, so batches of different sizes weigh by tokens.
            loss, tokens = answer_loss(model, batch, chunk_tokens)
            total_loss += float(loss)
            total_tokens += tokens
    return (total_loss / total_tokens if total_tokens else math.nan), total_tokens


def answer_greedily(model: Any, tokenizer: Any, items: Sequence[RegressionItem], max_new_tokens: int,
                    batch_size: int, autocast_to: Any = None) -> list[str]:
    """Greedy replies to each question, in left-padded batches (the tokenizer is not modified)."""
    return reply_greedily(model, tokenizer, [item.messages() for item in items], max_new_tokens, batch_size,
                          autocast_to)


def reply_greedily(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int,
                   batch_size: int, autocast_to: Any = None) -> list[str]:
    """Greedy replies to each conversation, in left-padded batches."""
    import torch

    device = _device(model)
    prompts = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    replies: list[str] = []
    pad = tokenizer.pad_token_id
    with torch.no_grad(), autocast(device, autocast_to):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad)
            replies += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return replies


def _eval_batch(settings: TrainerSettings) -> int:
    return int(settings.sized("eval_batch_size"))


def regression_score(model: Any, tokenizer: Any, items: Sequence[RegressionItem], settings: TrainerSettings) -> RegressionScore:
    """How many regression questions the model answers correctly, greedily, and what it said to the rest."""
    replies = answer_greedily(model, tokenizer, items, settings.regression_max_new_tokens, _eval_batch(settings),
                              autocast_dtype(settings.autocast, _device(model)))
    failures = [{"question": i.question, "expected": " | ".join(i.answers), "reply": r.strip()}
                for i, r in zip(items, replies, strict=True) if not i.is_correct(r)]
    return RegressionScore(correct=len(items) - len(failures), total=len(items), failures=failures)


def rag_score(model: Any, tokenizer: Any, items: Sequence[RagItem], settings: TrainerSettings) -> RagScore:
    """The RAG regression set answered greedily in the gateway's prompt, judged per item."""
    if not items:
        return RagScore(answer_score=math.nan, answer_rate=math.nan, citation_rate=math.nan, not_found_rate=math.nan,
                        total=0)
    replies = reply_greedily(model, tokenizer, [i.messages(settings.rag_personas()) for i in items],
                             settings.regression_max_new_tokens, _eval_batch(settings),
                             autocast_dtype(settings.autocast, _device(model)))
    return judge_replies(items, replies, settings)


def judge_replies(items: Sequence[RagItem], replies: Sequence[str], settings: TrainerSettings) -> RagScore:
    """The RAG set's replies judged per item, as served (citation marks checked when the gateway does)."""
    if settings.check_citations:  # judged as users get them
        replies = [item.served(reply, settings.support_threshold) for item, reply in zip(items, replies, strict=True)]
    judged = [(item, item.judge(reply, settings.support_threshold), reply.strip())
              for item, reply in zip(items, replies, strict=True)]
    answerable = [v for i, v, _ in judged if i.cite is not None]
    absent = [v for i, v, _ in judged if i.cite is None]
    points = [0.5 * v["answer"] + 0.5 * (v["answer"] and v["cited"]) if i.cite is not None else float(v["not_found"])
              for i, v, _ in judged]

    def rate(rows: list[dict[str, bool]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows) if rows else math.nan

    answer_points = [p for (i, _, _), p in zip(judged, points, strict=True) if i.cite is not None]
    failures = [{"question": i.question, "expected": " | ".join(i.expected) or "not found", "cite": i.cite,
                 "reply": r, **v} for (i, v, r), p in zip(judged, points, strict=True)
                if p < 1.0 or not v.get("supported", True) or v.get("wrong_citation")]
    return RagScore(answer_score=sum(answer_points) / len(answer_points) if answer_points else math.nan,
                    answer_rate=rate(answerable, "answer"), citation_rate=rate(answerable, "cited"),
                    wrong_citation_rate=rate(answerable, "wrong_citation"),
                    supported_rate=rate(answerable, "supported"), not_found_rate=rate(absent, "not_found"),
                    total=len(items), failures=failures)


def reply_example(item: RagItem, reply: str, tokenizer: Any, settings: TrainerSettings) -> Example:
    messages = [*item.messages(settings.rag_personas()), {"role": "assistant", "content": reply}]
    ids, labels = encode_conversation(messages, tokenizer, int(settings.sized("max_seq_len")))
    return Example(input_ids=ids, labels=labels, key=item.question, source="gate")


@dataclass(frozen=True)
class GroundingScore:
    gap: float  # mean over items of (wrong reply's loss - right reply's), per answer token; NaN: no items
    right_loss: float  # mean per-token loss of the right replies
    items: int


def grounding_score(model: Any, tokenizer: Any, items: Sequence[RagItem], settings: TrainerSettings) -> GroundingScore:
    """How much more likely the model finds each item's right reply than its wrong one, in its own prompt."""
    cast = autocast_dtype(settings.autocast, _device(model))
    gaps, rights = [], []
    for number, item in enumerate(items):
        if not (item.reply and item.wrong_reply):
            continue
        try:
            right, wrong = (reply_example(item, reply, tokenizer, settings) for reply in (item.reply, item.wrong_reply))
        except RowRejected as exc:
            logger.warning("RAG set item %d (%s) left out of the grounding gap: %s", number, item.question, exc)
            continue
        # One example at a time: each reply's loss per token on its own, never padded.
        right_loss, wrong_loss = (heldout_loss(model, [example], tokenizer.pad_token_id, 1,
                                               chunk_tokens=settings.loss_chunk_tokens, autocast_to=cast)[0]
                                  for example in (right, wrong))
        gaps.append(wrong_loss - right_loss)
        rights.append(right_loss)
    if not gaps:
        return GroundingScore(gap=math.nan, right_loss=math.nan, items=0)
    return GroundingScore(gap=sum(gaps) / len(gaps), right_loss=sum(rights) / len(rights), items=len(gaps))


def _adapter_identity(path: Path | None) -> tuple[str, int, int] | None:
    """Path plus weight-file size and mtime: a folder replaced under the same name is scored anew."""
    if path is None:
        return None
    weights = Path(path) / "adapter_model.safetensors"
    stat = weights.stat() if weights.exists() else None
    return (str(Path(path).resolve()), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0)


@contextmanager
def _adapters(base: LoadedModel, candidate_dir: Path, current_adapter: Path | None) -> Iterator[Any]:
    """The base wrapped with the candidate (and the current adapter, if any); unwrapped afterwards."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base.model, str(candidate_dir), adapter_name=CANDIDATE)
    try:
        if current_adapter is not None:
            model.load_adapter(str(current_adapter), adapter_name=CURRENT)
        disable_cpu_4bit_repack(model)
        model.eval()
        yield model
    finally:
        base.model = model.unload()
        base.model.eval()


@contextmanager
def _use(model: Any, adapter: str | None) -> Iterator[None]:
    if adapter is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(adapter)
        yield


class Figures(NamedTuple):
    """One measure of the current model (the active adapter, or the base), the candidate and the base."""

    current: float
    candidate: float
    base: float
    lower_is_better: bool = False


def decide(settings: TrainerSettings, loss_current: float, loss_candidate: float,
           acc_current: float, acc_candidate: float, acc_base: float, *,
           rag: Mapping[str, tuple[Any, ...]] | None = None,
           grounding: tuple[float, float, float] | None = None) -> tuple[str, list[str]]:
    """The gate's rule on the figures; reasons name every check, passed or failed.

    `rag`: {measure: Figures (or a (current, candidate, base) tuple: higher is better)} of the RAG set; a
    NaN candidate figure (no such items) is not judged. `grounding`: the RAG set's grounding gap (current,
    candidate, base); it may fall at most `grounding_margin` (a share of each) below the current's and the
    base's."""
    reasons, ok = [], True
    if not math.isfinite(loss_candidate) or not math.isfinite(loss_current):
        ok = False
        reasons.append(f"held-out loss not measurable (current {loss_current}, candidate {loss_candidate})")
    elif loss_candidate < loss_current - settings.min_heldout_improvement:
        reasons.append(f"held-out loss improved {loss_current:.4f} -> {loss_candidate:.4f}")
    else:
        ok = False
        reasons.append(f"held-out loss did not improve: {loss_current:.4f} -> {loss_candidate:.4f} "
                       f"(needs a drop of more than {settings.min_heldout_improvement})")
    # A tiny epsilon so 0.95 - 0.05 compares as 0.90 and not 0.8999999.
    if acc_candidate + 1e-9 < acc_current - settings.regression_margin:
        ok = False
        reasons.append(f"regression accuracy fell {acc_current:.3f} -> {acc_candidate:.3f} "
                       f"(margin {settings.regression_margin})")
    elif acc_candidate + 1e-9 < acc_base - settings.regression_margin:
        ok = False
        reasons.append(f"regression accuracy {acc_candidate:.3f} is more than {settings.regression_margin} "
                       f"below the base's {acc_base:.3f}")
    else:
        reasons.append(f"regression accuracy held {acc_current:.3f} -> {acc_candidate:.3f} (base {acc_base:.3f})")
    margin = settings.rag_regression_margin
    for measure, value in (rag or {}).items():
        current, candidate, base, lower = Figures(*value)
        if math.isnan(candidate):
            continue
        sign = -1.0 if lower else 1.0  # compared as "how good": a rate that should fall is negated
        worse, below = ("rose", "above") if lower else ("fell", "below")
        if sign * candidate + 1e-9 < sign * current - margin:
            ok = False
            reasons.append(f"{measure} {worse} {current:.3f} -> {candidate:.3f} (margin {margin})")
        elif sign * candidate + 1e-9 < sign * base - margin:
            ok = False
            reasons.append(f"{measure} {candidate:.3f} is more than {margin} {below} the base's {base:.3f}")
        else:
            reasons.append(f"{measure} held {current:.3f} -> {candidate:.3f} (base {base:.3f})")
    if grounding is not None and not math.isnan(grounding[1]):
        current, candidate, base = grounding
        share = settings.grounding_margin
        if not math.isfinite(candidate) or candidate < current - share * abs(current):
            ok = False
            reasons.append(f"grounding gap fell {current:.4f} -> {candidate:.4f} (at most {share:.0%} allowed): "
                           "it tells a right reply from a wrong one about the same passages less well")
        elif candidate < base - share * abs(base):
            ok = False
            reasons.append(f"grounding gap {candidate:.4f} is more than {share:.0%} below the base's {base:.4f}")
        else:
            reasons.append(f"grounding gap held {current:.4f} -> {candidate:.4f} (base {base:.4f})")
    return ("promote" if ok else "reject"), reasons


def rag_measures(current: RagScore, candidate: RagScore, base: RagScore) -> dict[str, Figures]:
    """The RAG set's measures the gate judges, each on its own: a combined score lets a candidate that
    learned to cite trade right answers for citations (docs/benchmarks.md, the learning loop)."""
    return {f"RAG {name}": Figures(getattr(current, attr), getattr(candidate, attr), getattr(base, attr), lower)
            for name, attr, lower in (("answer rate", "answer_rate", False), ("citation rate", "citation_rate", False),
                                      ("wrong-citation rate", "wrong_citation_rate", True),
                                      ("supported rate", "supported_rate", False),
                                      ("not-found rate", "not_found_rate", False))}


_SCORERS = {"general": regression_score, "rag": rag_score, "grounding": grounding_score}


def _reference_score(model: Any, base: LoadedModel, adapter_path: Path | None, items: list[Any],
                     settings: TrainerSettings, kind: str) -> Any:
    """The base's (adapter_path None) or the active adapter's score of a kind (`_SCORERS`) on a set,
    computed once per process."""
    key = (base.path, base.quantization, _adapter_identity(adapter_path), settings.regression_max_new_tokens,
           settings.sized("max_seq_len"), tuple(sorted(settings.rag_personas().items())), kind, tuple(items))
    if key not in _reference_scores:
        with _use(model, CURRENT if adapter_path is not None else None):
            _reference_scores[key] = _SCORERS[kind](model, base.tokenizer, items, settings)
    return _reference_scores[key]


def evaluate_candidate(base: LoadedModel, candidate_dir: Path, heldout: Sequence[Example], settings: TrainerSettings,
                       *, current_adapter: Path | None = None, regression: Sequence[RegressionItem] | None = None,
                       rag_regression: Sequence[RagItem] | None = None) -> GateResult:
    """Compare the candidate adapter with the current one (or the base) and decide promote / reject."""
    started = time.perf_counter()
    items = list(regression) if regression is not None else load_regression_set(settings.regression_file)
    rag_items = (list(rag_regression) if rag_regression is not None
                 else load_rag_regression_set(settings.rag_regression_file))
    tokenizer, pad = base.tokenizer, base.tokenizer.pad_token_id
    cast = autocast_dtype(settings.autocast, base.device)

    def loss(model: Any) -> tuple[float, int]:
        return heldout_loss(model, heldout, pad, _eval_batch(settings), chunk_tokens=settings.loss_chunk_tokens,
                            autocast_to=cast)

    with _adapters(base, Path(candidate_dir), current_adapter) as model:
        current = CURRENT if current_adapter else None
        with _use(model, current):
            loss_cur, tokens = loss(model)
        scores: dict[str, tuple[Any, Any]] = {}  # kind -> (current, base)
        for kind, kind_items in (("general", items), ("rag", rag_items), ("grounding", rag_items)):
            current_score = _reference_score(model, base, current_adapter, kind_items, settings, kind)
            scores[kind] = (current_score, _reference_score(model, base, None, kind_items, settings, kind)
                            if current_adapter else current_score)
        (score_cur, score_base), (rag_cur, rag_base), (ground_cur, ground_base) = scores.values()
        with _use(model, CANDIDATE):
            loss_cand, _ = loss(model)
            score_cand = regression_score(model, tokenizer, items, settings)
            rag_cand = rag_score(model, tokenizer, rag_items, settings)
            ground_cand = grounding_score(model, tokenizer, rag_items, settings)
    decision, reasons = decide(settings, loss_cur, loss_cand, score_cur.accuracy, score_cand.accuracy,
                               score_base.accuracy, rag=rag_measures(rag_cur, rag_cand, rag_base),
                               grounding=(ground_cur.gap, ground_cand.gap, ground_base.gap))
    report = {
        "heldout": {"examples": len(heldout), "answer_tokens": tokens, "loss_current": _r(loss_cur),
                    "loss_candidate": _r(loss_cand)},
        "rag": {"base": rag_base.figures(), "current": rag_cur.figures(), "candidate": rag_cand.figures(),
                "margin": settings.rag_regression_margin},
        "general": {"base": _r(score_base.accuracy), "current": _r(score_cur.accuracy),
                    "candidate": _r(score_cand.accuracy), "questions": len(items),
                    "margin": settings.regression_margin},
        "grounding": {"base": _r(ground_base.gap), "current": _r(ground_cur.gap), "candidate": _r(ground_cand.gap),
                      "right_loss": {"base": _r(ground_base.right_loss), "current": _r(ground_cur.right_loss),
                                     "candidate": _r(ground_cand.right_loss)},
                      "items": ground_cand.items, "margin": settings.grounding_margin},
    }
    result = GateResult(
        decision=decision, reasons=reasons, heldout_loss_current=loss_cur, heldout_loss_candidate=loss_cand,
        heldout_examples=len(heldout), heldout_tokens=tokens, regression_accuracy_current=score_cur.accuracy,
        regression_accuracy_candidate=score_cand.accuracy, regression_accuracy_base=score_base.accuracy,
        regression_total=len(items), regression_margin=settings.regression_margin,
        current=str(current_adapter) if current_adapter else "base",
        seconds=round(time.perf_counter() - started, 3),
        candidate_failures=score_cand.failures, current_failures=score_cur.failures,
        rag_score_current=rag_cur.answer_score, rag_score_candidate=rag_cand.answer_score,
        rag_score_base=rag_base.answer_score,
        rag_margin=settings.rag_regression_margin, grounding_gap_current=ground_cur.gap,
        grounding_gap_candidate=ground_cand.gap, grounding_gap_base=ground_base.gap, report=report,
        rag_candidate_failures=rag_cand.failures)
    logger.info("gate %s for %s: %s", decision, Path(candidate_dir).name, "; ".join(reasons))
    return result


def _r(value: float) -> float | None:
    """A figure for the JSON report (NaN is not JSON)."""
    return None if value is None or math.isnan(value) else round(value, 4)
