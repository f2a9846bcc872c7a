"""LoRA / QLoRA training: a plain loop over answer-only labels, saved atomically as a PEFT folder.

A plain loop rather than TRL's SFTTrainer: the labels are already answer-only (TRL's
`assistant_only_loss` fails on SmolLM2's template, see FINDINGS), and the loop gives direct
progress, cancellation and the bitsandbytes CPU flag without callbacks into a trainer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.inference.loader import LoadedModel, disable_cpu_4bit_repack
from shared.errors import AionError

from .data_builder import IGNORE_INDEX, BuiltDataset, Example
from .loss import answer_loss
from .precision import autocast, autocast_dtype, grad_scaler
from .settings import TrainerSettings

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]  # (step, total steps, loss of that step)
CancelFn = Callable[[], bool]
METRICS_FILE = "aion_training.json"


class TrainingCancelled(AionError):
    status_code = 409
    code = "training_cancelled"


class TrainingDiverged(AionError):
    status_code = 500
    code = "training_diverged"


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    total_steps: int
    epochs: float
    seconds: float
    first_loss: float
    train_loss: float  # mean loss over the last epoch's steps (or all steps if fewer)
    examples: int
    answer_tokens: int
    device: str
    quantization: str
    losses: list[float] = field(default_factory=list)
    precision: str = "full"  # the autocast dtype of the forward passes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["adapter_dir"] = str(self.adapter_dir)
        return data


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded batch tensors; padding is masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# Rows longer than this turn activation checkpointing on under `auto` on CPU too: a grounded row (the RAG
# prompt) is ~1,500-2,000 tokens, and a batch of 4 kept ~10 GB of activations on the 135M default (the
# process was killed for memory); checkpointed, it keeps one layer's.
CHECKPOINT_ABOVE_TOKENS = 1024


def _uses_checkpointing(settings: TrainerSettings, device: str, longest: int = 0) -> bool:
    if settings.gradient_checkpointing != "auto":
        return settings.gradient_checkpointing == "true"
    return device.startswith("cuda") or longest > CHECKPOINT_ABOVE_TOKENS


def attach_lora(base: LoadedModel, settings: TrainerSettings, resume_from: Path | None = None,
                longest: int = 0) -> Any:
    """Wrap the base in trainable LoRA layers (fresh, or continuing an existing adapter); `longest`: the
    longest training row, in tokens."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    model = base.model
    checkpointing = _uses_checkpointing(settings, base.device, longest)
    # Non-reentrant checkpointing: torch warns the reentrant default is going away.
    kwargs = {"use_reentrant": False}
    if base.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                gradient_checkpointing_kwargs=kwargs)
    elif checkpointing:
        _checkpointing(model, True, kwargs)
        model.enable_input_require_grads()
    if resume_from is not None:
        peft_model = PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
    else:
        config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                            target_modules=list(settings.lora_target_modules), bias="none", task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
    # Idempotent, and covers any Linear4bit the wrapping created: without it, bitsandbytes repacks
    # nf4 weights on the first no-grad forward into a layout with no backward (FINDINGS).
    disable_cpu_4bit_repack(peft_model)
    return peft_model


def _checkpointing(model: Any, on: bool, kwargs: dict[str, Any] | None = None) -> None:
    """Activation checkpointing on or off, under its name in the installed transformers (renamed from
    `gradient_checkpointing_*` in 5.2x; GPU machines may ship an older release)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


def detach_lora(peft_model: Any) -> Any:
    """Remove the LoRA layers (not merged) so the shared base serves and trains cleanly afterwards."""
    model = peft_model.unload()
    if getattr(model, "supports_gradient_checkpointing", False):
        _checkpointing(model, False)  # a no-op when it was never enabled
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()  # a no-op when no hook was registered
    model.eval()
    return model


def lora_grad_norm(model: Any) -> float:
    """L2 norm of the LoRA parameters' gradients (0.0 if none)."""
    total = 0.0
    for name, param in model.named_parameters():
        if "lora_" in name and param.grad is not None:
            total += float(param.grad.detach().float().pow(2).sum())
    return math.sqrt(total)


def _batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    order = examples[:]
    rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then linear decay to zero at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _accumulate(model: Any, group: list[list[Example]], pad_id: int, device: Any, settings: TrainerSettings,
                cast: Any, scaler: Any) -> float:
    """Forward and backward over the micro-batches of one optimizer step; returns their mean loss per answer token."""
    total = sum(e.answer_tokens for batch in group for e in batch)
    step_loss = 0.0
    for batch in group:
        inputs = {k: v.to(device) for k, v in collate(batch, pad_id).items()}
        with autocast(str(device), cast):
            summed, _ = answer_loss(model, inputs, settings.loss_chunk_tokens)
        # Divided by the step's answer tokens: accumulation equals one big batch.
        loss = summed / total
        scaler.scale(loss).backward()
        step_loss += float(loss.detach())
    return step_loss


def _report(progress: ProgressFn | None, step: int, total: int, loss: float) -> None:
    if progress is None:
        return
    try:
        progress(step, total, loss)
    except Exception:
        # A failed progress write (say, a database hiccup) must not throw away hours of training.
        logger.warning("progress callback failed at step %d/%d", step, total, exc_info=True)


def remove_partial_adapters(folder: Path) -> int:
    """Delete half-written adapter folders a killed worker left in `folder`; call at worker start."""
    removed = 0
    for path in Path(folder).glob(".*.partial-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        logger.warning("removed %d half-written adapter folders from %s", removed, folder)
    return removed


def _prepare_output(output_dir: Path) -> Path:
    if output_dir.exists():
        # Versions are never reused; overwriting one could change an adapter that is serving.
        raise FileExistsError(f"adapter folder {output_dir} already exists")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))


def train_adapter(base: LoadedModel, dataset: BuiltDataset, output_dir: Path, settings: TrainerSettings, *,
                  progress: ProgressFn | None = None, should_cancel: CancelFn | None = None,
                  resume_from: Path | None = None) -> TrainResult:
    """Train a LoRA adapter on `dataset.train` and save it as a PEFT folder at `output_dir`.

    The folder appears only when complete (written beside it, then renamed). On cancellation or
    error nothing is left behind and the base model is restored for reuse.
    """
    import torch

    if not dataset.train:
        raise AionError("no training examples", code="empty_dataset", status_code=422)
    output_dir = Path(output_dir)
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    per_epoch = math.ceil(math.ceil(len(dataset.train) / settings.batch_size) / settings.grad_accumulation)
    total = per_epoch * settings.epochs
    if settings.max_steps:
        total = min(total, settings.max_steps)
    warmup = int(total * settings.warmup_ratio)
    pad_id = base.tokenizer.pad_token_id
    device = base.model.device
    cast = autocast_dtype(settings.autocast, str(device))
    scaler = grad_scaler(str(device), cast)
    partial = _prepare_output(output_dir)
    peft_model = None
    try:
        peft_model = attach_lora(base, settings, resume_from, max(len(e.input_ids) for e in dataset.train))
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(settings.sized("learning_rate")),
                                      weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total, warmup))
        peft_model.train()
        losses: list[float] = []
        step = 0
        while step < total:
            micro = _batches(dataset.train, settings.batch_size, rng)
            for start in range(0, len(micro), settings.grad_accumulation):
                if step >= total:
                    break
                if should_cancel is not None and should_cancel():
                    raise TrainingCancelled(f"training cancelled at step {step}/{total}")
                step_loss = _accumulate(peft_model, micro[start:start + settings.grad_accumulation], pad_id, device,
                                        settings, cast, scaler)
                if not math.isfinite(step_loss):
                    raise TrainingDiverged(f"loss became {step_loss} at step {step + 1}; lower "
                                           "AION_TRAIN_LEARNING_RATE")
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(step_loss)
                _report(progress, step, total, step_loss)
        peft_model.eval()
        tail = losses[-per_epoch:] if len(losses) >= per_epoch else losses
        result = TrainResult(
            adapter_dir=output_dir, steps=step, total_steps=total, epochs=round(step / per_epoch, 3),
            seconds=0.0, first_loss=losses[0], train_loss=sum(tail) / len(tail), examples=len(dataset.train),
            answer_tokens=sum(e.answer_tokens for e in dataset.train), device=base.device,
            quantization=base.quantization, losses=[round(x, 5) for x in losses],
            precision=str(cast).removeprefix("torch.") if cast is not None else "full")
        peft_model.save_pretrained(str(partial))
        result.seconds = round(time.perf_counter() - started, 3)
        (partial / METRICS_FILE).write_text(json.dumps({"train": result.to_dict(), "data": dataset.summary(),
                                                        "settings": _training_settings(settings)}, indent=2))
        os.replace(partial, output_dir)
        logger.info("adapter %s: %d steps, loss %.3f -> %.3f, %.1f s", output_dir.name, step,
                    result.first_loss, result.train_loss, result.seconds)
        return result
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if peft_model is not None:
            base.model = detach_lora(peft_model)


def _training_settings(settings: TrainerSettings) -> dict[str, Any]:
    keys = ("lora_base", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "learning_rate",
            "epochs", "max_steps", "batch_size", "grad_accumulation", "max_seq_len", "seed",
            "heldout_fraction", "replay_ratio", "autocast", "eval_batch_size")
    return {k: getattr(settings, k) for k in keys}
