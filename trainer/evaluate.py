"""Evaluation gate: promote a candidate adapter only if it learned without forgetting.

Two measures, candidate vs current (the active adapter, or the base when none is active):
- loss on the held-out split (answer tokens only): did it learn the owner's answers?
- a fixed regression set of general questions answered greedily: did it forget what the base knew?
  (Measured: a fact-learning run began answering "The capital of France is New York City".)
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.inference.loader import LoadedModel, disable_cpu_4bit_repack

from .data_builder import Example
from .run_lora import collate
from .settings import TrainerSettings

logger = logging.getLogger(__name__)

DEFAULT_REGRESSION_FILE = Path(__file__).with_name("regression_set.jsonl")
CANDIDATE, CURRENT = "candidate", "current"
# The base's and the active adapter's regression scores only change when they do: keep them per
# (base, adapter, questions) so a worker running job after job scores each once.
_reference_scores: dict[tuple[Any, ...], RegressionScore] = {}


@dataclass(frozen=True)
class RegressionItem:
    question: str
    answers: tuple[str, ...]  # any of these, as a whole word, case-insensitive, counts as correct
    system: str | None = None  # None: the chat template's own default system prompt

    def is_correct(self, reply: str) -> bool:
        return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", reply, re.IGNORECASE) for a in self.answers)


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

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_regression_set(path: Path | None = None) -> list[RegressionItem]:
    """The regression questions (JSONL: question, answers, optional system); the shipped set by default."""
    items = []
    for line in (path or DEFAULT_REGRESSION_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(RegressionItem(question=row["question"], answers=tuple(row["answers"]),
                                        system=row.get("system")))
    return items


def heldout_loss(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int) -> tuple[float, int]:
    """Mean loss per answer token over the examples, and the token count."""
    import torch
    import torch.nn.functional as F

    total_loss, total_tokens = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size], pad_id).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits[:, :-1].float()
            target = labels[:, 1:]
            # Summed, not the model's per-batch mean, so batches of different sizes weigh by tokens.
            total_loss += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                                ignore_index=-100, reduction="sum"))
            total_tokens += int((target != -100).sum())
    return (total_loss / total_tokens if total_tokens else math.nan), total_tokens


def answer_greedily(model: Any, tokenizer: Any, items: Sequence[RegressionItem], max_new_tokens: int,
                    batch_size: int) -> list[str]:
    """Greedy replies to each question, in left-padded batches (the tokenizer is not modified)."""
    import torch

    device = next(model.parameters()).device
    prompts = []
    for item in items:
        messages = ([{"role": "system", "content": item.system}] if item.system else [])
        messages.append({"role": "user", "content": item.question})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    replies: list[str] = []
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad)
            replies += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return replies


def regression_score(model: Any, tokenizer: Any, items: Sequence[RegressionItem], settings: TrainerSettings) -> RegressionScore:
    """How many regression questions the model answers correctly, greedily, and what it said to the rest."""
    replies = answer_greedily(model, tokenizer, items, settings.regression_max_new_tokens, settings.eval_batch_size)
    failures = [{"question": i.question, "expected": " | ".join(i.answers), "reply": r.strip()}
                for i, r in zip(items, replies, strict=True) if not i.is_correct(r)]
    return RegressionScore(correct=len(items) - len(failures), total=len(items), failures=failures)


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


def decide(settings: TrainerSettings, loss_current: float, loss_candidate: float,
           acc_current: float, acc_candidate: float, acc_base: float) -> tuple[str, list[str]]:
    """The gate's rule on the figures; reasons name every check, passed or failed."""
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
    return ("promote" if ok else "reject"), reasons


def _reference_score(model: Any, base: LoadedModel, adapter_path: Path | None, items: list[RegressionItem],
                     settings: TrainerSettings) -> RegressionScore:
    """The base's (adapter_path None) or the active adapter's regression score, computed once per process."""
    key = (base.path, base.quantization, _adapter_identity(adapter_path), settings.regression_max_new_tokens,
           tuple(items))
    if key not in _reference_scores:
        with _use(model, CURRENT if adapter_path is not None else None):
            _reference_scores[key] = regression_score(model, base.tokenizer, items, settings)
    return _reference_scores[key]


def evaluate_candidate(base: LoadedModel, candidate_dir: Path, heldout: Sequence[Example], settings: TrainerSettings,
                       *, current_adapter: Path | None = None,
                       regression: Sequence[RegressionItem] | None = None) -> GateResult:
    """Compare the candidate adapter with the current one (or the base) and decide promote / reject."""
    started = time.perf_counter()
    items = list(regression) if regression is not None else load_regression_set(settings.regression_file)
    tokenizer, pad = base.tokenizer, base.tokenizer.pad_token_id
    with _adapters(base, Path(candidate_dir), current_adapter) as model:
        current = CURRENT if current_adapter else None
        with _use(model, current):
            loss_cur, tokens = heldout_loss(model, heldout, pad, settings.eval_batch_size)
        score_cur = _reference_score(model, base, current_adapter, items, settings)
        score_base = _reference_score(model, base, None, items, settings) if current_adapter else score_cur
        with _use(model, CANDIDATE):
            loss_cand, _ = heldout_loss(model, heldout, pad, settings.eval_batch_size)
            score_cand = regression_score(model, tokenizer, items, settings)
    decision, reasons = decide(settings, loss_cur, loss_cand, score_cur.accuracy, score_cand.accuracy,
                               score_base.accuracy)
    result = GateResult(
        decision=decision, reasons=reasons, heldout_loss_current=loss_cur, heldout_loss_candidate=loss_cand,
        heldout_examples=len(heldout), heldout_tokens=tokens, regression_accuracy_current=score_cur.accuracy,
        regression_accuracy_candidate=score_cand.accuracy, regression_accuracy_base=score_base.accuracy,
        regression_total=len(items), regression_margin=settings.regression_margin,
        current=str(current_adapter) if current_adapter else "base",
        seconds=round(time.perf_counter() - started, 3),
        candidate_failures=score_cand.failures, current_failures=score_cur.failures)
    logger.info("gate %s for %s: %s", decision, Path(candidate_dir).name, "; ".join(reasons))
    return result
