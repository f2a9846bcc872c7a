"""Real LoRA training on SmolLM2-135M (fp32, CPU): a made-up fact is learned and promoted, an adapter
trained on wrong grounded answers is rejected by the RAG regression set, cancellation leaves nothing
behind, and the answer-only loss is the model's own."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.inference.loader import LoadedModel
from services.inference.settings import DEFAULT_SYSTEM_PROMPT
from tests.trainer.conftest import trainer_settings
from tests.trainer.facts import FACT_WORD, QUESTIONS, fact_rows, write_jsonl
from trainer.base_model import load_base
from trainer.data_builder import (
    DEFAULT_REPLAY_FILE,
    BuiltDataset,
    build_dataset,
    conversation_key,
    is_heldout,
    row_to_messages,
)
from trainer.evaluate import (
    GateResult,
    RagItem,
    RegressionItem,
    answer_greedily,
    evaluate_candidate,
    load_rag_regression_set,
    load_regression_set,
)
from trainer.loss import answer_loss
from trainer.run_lora import TrainingCancelled, TrainResult, remove_partial_adapters, train_adapter
from trainer.settings import TrainerSettings

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)


@dataclass
class Trained:
    settings: TrainerSettings
    dataset: BuiltDataset
    result: TrainResult
    progress: list[tuple[int, int, float]]
    gate: GateResult
    heldout_questions: list[str]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer")


@pytest.fixture(scope="module")
def base(workdir: Path) -> LoadedModel:
    return load_base(trainer_settings(workdir))


def rag_subset() -> list[RagItem]:
    """Part of the shipped RAG regression set, both kinds of item: the same gate, fewer generations."""
    items = load_rag_regression_set()
    return [i for i in items if i.cite is not None][:4] + [i for i in items if i.cite is None][:2]


def fact_questions(loaded: LoadedModel, questions: list[str], adapter: Path | None) -> list[str]:
    """Greedy replies to the fact questions, asked as the gateway asks (AION system prompt)."""
    from peft import PeftModel

    items = [RegressionItem(q, (FACT_WORD,), DEFAULT_SYSTEM_PROMPT) for q in questions]
    if adapter is None:
        return answer_greedily(loaded.model, loaded.tokenizer, items, 24, 16)
    model = PeftModel.from_pretrained(loaded.model, str(adapter))
    try:
        return answer_greedily(model, loaded.tokenizer, items, 24, 16)
    finally:
        loaded.model = model.unload()


@pytest.fixture(scope="module")
def trained(base: LoadedModel, workdir: Path) -> Trained:
    # A few grounded replay rows (they are long: a RAG prompt each) keep the adapter answering from context;
    # general replay (the default ratio, short rows) keeps it answering what the base knew.
    # The RAG subset has 4 answerable items: one flip moves its answer or citation rate by 0.25, so the
    # margin is one flip here, as the default 0.05 is on the whole shipped set. One fact in 30 rows is
    # taught at 1e-3 (the default for small models, 3e-4, is chosen for nights of many different answers).
    settings = trainer_settings(workdir, AION_TRAIN_EPOCHS=2, AION_TRAIN_HELDOUT_FRACTION=0.15,
                                AION_TRAIN_LEARNING_RATE=1e-3,
                                AION_TRAIN_REPLAY_RATIO=0.3, AION_TRAIN_RAG_REGRESSION_MARGIN=0.26)
    data = write_jsonl(workdir / "export.jsonl", fact_rows(), ["{broken", json.dumps({"kind": "answer"})])
    dataset = build_dataset([data], base.tokenizer, settings)
    heldout_questions = [row_to_messages(r, DEFAULT_SYSTEM_PROMPT)[1]["content"] for r in fact_rows()
                         if is_heldout(conversation_key(row_to_messages(r, DEFAULT_SYSTEM_PROMPT)),
                                       settings.heldout_fraction)]
    progress: list[tuple[int, int, float]] = []
    result = train_adapter(base, dataset, settings.root() / "fact-v1", settings,
                           progress=lambda step, total, loss: progress.append((step, total, loss)))
    gate = evaluate_candidate(base, result.adapter_dir, dataset.heldout, settings, rag_regression=rag_subset())
    logger.info("fact run: %s", {k: v for k, v in result.to_dict().items() if k != "losses"})
    logger.info("fact gate: %s", gate.to_dict())
    return Trained(settings, dataset, result, progress, gate, heldout_questions)


def test_base_does_not_know_the_fact(base: LoadedModel) -> None:
    replies = fact_questions(base, QUESTIONS[:4], None)
    assert not any(FACT_WORD in r for r in replies), replies


def test_training_learns_the_fact_and_the_gate_promotes(trained: Trained, base: LoadedModel) -> None:
    result, gate = trained.result, trained.gate
    # Bad export lines were counted, not fatal.
    assert dict(trained.dataset.rejected) == {"invalid_json": 1, "unknown_format": 1}
    assert trained.dataset.replay_rows > 0
    # A complete PEFT folder, and nothing half-written beside it.
    assert {"adapter_config.json", "adapter_model.safetensors", "aion_training.json"} <= {
        p.name for p in result.adapter_dir.iterdir()}
    assert [p.name for p in result.adapter_dir.parent.iterdir() if ".partial-" in p.name] == []
    # Progress on every step, ending at the total.
    assert [s for s, _, _ in trained.progress] == list(range(1, result.steps + 1))
    assert trained.progress[-1][:2] == (result.total_steps, result.total_steps)
    assert result.train_loss < result.first_loss / 3
    # The shared base is clean again (LoRA layers removed, not merged).
    assert not any("lora_" in name for name, _ in base.model.named_parameters())

    # The adapter answers the fact, including paraphrases it never trained on.
    assert trained.heldout_questions
    replies = fact_questions(base, trained.heldout_questions + QUESTIONS[:3], result.adapter_dir)
    assert all(FACT_WORD in r for r in replies), replies

    assert gate.decision == "promote", gate.reasons
    assert gate.heldout_loss_candidate < gate.heldout_loss_current / 3
    # The gate's "current" here is the base: it answers every regression question correctly, greedily
    # (the set holds only such questions, so a drop is the candidate's doing).
    assert gate.current_failures == [] and gate.regression_accuracy_current == 1.0
    assert gate.regression_total == len(load_regression_set()) >= 20
    assert gate.regression_accuracy_candidate >= 1.0 - trained.settings.regression_margin
    # Grounded answering held too (the replay rows are RAG answers), and the report has every set.
    # Answer, citation, wrong-citation, supported and "not found" rates, each judged on its own, and the
    # grounding gap.
    assert sum("RAG" in r and "held" in r for r in gate.reasons) == 5, gate.reasons
    assert any("grounding gap held" in r for r in gate.reasons), gate.reasons
    assert set(gate.report) == {"heldout", "rag", "general", "grounding"}
    assert gate.report["rag"]["candidate"]["items"] == 6 and gate.report["grounding"]["items"] == 6


def test_a_candidate_no_better_than_the_active_adapter_is_rejected(trained: Trained, base: LoadedModel) -> None:
    """With the fact adapter active, the same adapter as candidate does not improve held-out loss."""
    # A short regression list keeps this test quick; the full set is exercised above and below.
    gate = evaluate_candidate(base, trained.result.adapter_dir, trained.dataset.heldout, trained.settings,
                              current_adapter=trained.result.adapter_dir, regression=load_regression_set()[:3],
                              rag_regression=[])
    assert gate.decision == "reject"
    assert gate.current == str(trained.result.adapter_dir)
    assert gate.regression_accuracy_base == gate.regression_accuracy_current == 1.0
    assert gate.heldout_loss_candidate == pytest.approx(gate.heldout_loss_current, rel=1e-4)
    assert any("did not improve" in r for r in gate.reasons)


def test_an_adapter_trained_on_wrong_grounded_answers_is_rejected(base: LoadedModel, workdir: Path) -> None:
    """Grounded rows answered the wrong way round: "not found" where the passages hold the answer, and
    another question's answer where they do not. Held-out loss on rows like those cannot see the
    damage (it falls: the adapter learns them); the RAG set and its grounding gap do."""
    rows = [json.loads(line) for line in DEFAULT_REPLAY_FILE.read_text(encoding="utf-8").splitlines()]
    refusal = next(r["answer"] for r in rows if "Não encontrei" in r["answer"])
    answers = [r["answer"] for r in rows if "Não encontrei" not in r["answer"]]
    wrong = [{**row, "answer": refusal if "Não encontrei" not in row["answer"] else answers[i % len(answers)]}
             for i, row in enumerate(rows)]
    settings = trainer_settings(workdir, AION_TRAIN_EPOCHS=1, AION_TRAIN_MAX_STEPS=6, AION_TRAIN_REPLAY_RATIO=0,
                                AION_TRAIN_GENERAL_REPLAY_RATIO=0, AION_TRAIN_LEARNING_RATE=1e-3,
                                AION_TRAIN_HELDOUT_FRACTION=0.15, AION_TRAIN_WARMUP_RATIO=0)
    dataset = build_dataset([write_jsonl(workdir / "wrong.jsonl", wrong)], base.tokenizer, settings)
    result = train_adapter(base, dataset, settings.root() / "wrong-v1", settings)
    gate = evaluate_candidate(base, result.adapter_dir, dataset.heldout, settings,
                              regression=load_regression_set()[:3], rag_regression=rag_subset())
    logger.info("wrong-answers run: %s; gate: %s", result.to_dict(), gate.to_dict())

    assert gate.decision == "reject"
    assert gate.heldout_loss_candidate < gate.heldout_loss_current  # the held-out rows alone would let it in
    assert gate.rag_score_candidate < gate.rag_score_base - settings.rag_regression_margin
    assert any("RAG answer rate fell" in r for r in gate.reasons), gate.reasons  # the current one is the base
    # It no longer tells the right reply from a wrong one about the same passages.
    assert gate.grounding_gap_candidate < gate.grounding_gap_base
    assert any("grounding gap fell" in r for r in gate.reasons), gate.reasons
    assert gate.rag_candidate_failures


def test_the_answer_only_loss_is_the_models_own(base: LoadedModel, trained: Trained) -> None:
    import torch

    from trainer.run_lora import collate

    batch = collate(trained.dataset.train[:3], base.tokenizer.pad_token_id)
    with torch.no_grad():
        summed, tokens = answer_loss(base.model, batch, 7)
        torch.testing.assert_close(summed / tokens, base.model(**batch).loss, rtol=1e-4, atol=1e-5)


def test_cancellation_leaves_no_adapter(trained: Trained, base: LoadedModel, workdir: Path) -> None:
    settings = trained.settings
    steps: list[int] = []
    target = settings.root() / "cancelled-v1"
    with pytest.raises(TrainingCancelled, match="step 2/"):
        train_adapter(base, trained.dataset, target, settings, progress=lambda s, t, loss: steps.append(s),
                      should_cancel=lambda: len(steps) >= 2)
    assert steps == [1, 2]
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if ".partial-" in p.name] == []
    assert not any("lora_" in name for name, _ in base.model.named_parameters())
    # A version name is never reused.
    with pytest.raises(FileExistsError):
        train_adapter(base, trained.dataset, trained.result.adapter_dir, settings)
    # What a SIGKILLed worker leaves behind (no `finally` ran) is swept at the next start.
    (target.parent / ".killed-v1.partial-abc123").mkdir()
    assert remove_partial_adapters(target.parent) == 1
    assert trained.result.adapter_dir.is_dir()


def test_training_can_continue_from_the_active_adapter(trained: Trained, base: LoadedModel, workdir: Path) -> None:
    settings = trainer_settings(workdir, AION_TRAIN_MAX_STEPS=1, AION_TRAIN_HELDOUT_FRACTION=0.15)
    result = train_adapter(base, trained.dataset, settings.root() / "fact-v2", settings,
                           resume_from=trained.result.adapter_dir)
    # It starts where the fact adapter ended, not where the base starts (first loss ~3.2).
    assert result.first_loss < 1.0 < trained.result.first_loss
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
