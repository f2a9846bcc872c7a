"""Answer-only cross-entropy that never holds the whole vocabulary's logits for a whole batch.

A causal LM's own `loss` computes logits for every position (a 7B with Qwen's 152k vocabulary:
2 rows x 2,048 tokens x 152k x 4 bytes = 2.5 GB in fp32) although only the answer's few hundred
tokens carry a label. Here the decoder's hidden states are taken at the labelled positions only,
and the output layer runs over them in chunks of `chunk_tokens`, in fp32; with gradients on, each
chunk is recomputed in the backward pass instead of kept.
"""

from __future__ import annotations

from typing import Any

from .data_builder import IGNORE_INDEX


def _causal_lm(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (its LoRA layers stay injected and switchable)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _chunk_loss(head: Any, hidden: Any, target: Any, softcap: float | None) -> Any:
    import torch.nn.functional as F

    logits = head(hidden).float()
    if softcap:  # Gemma 2 style final-logit soft-capping, as the model's own forward applies it
        logits = (logits / softcap).tanh() * softcap
    return F.cross_entropy(logits, target, reduction="sum")


def answer_loss(model: Any, batch: dict[str, Any], chunk_tokens: int) -> tuple[Any, int]:
    """(summed loss over the answer tokens, their count) for a collated batch (input_ids, attention_mask, labels).

    Equal to the model's own mean loss times the count, without materialising full-vocabulary logits.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    causal = _causal_lm(model)
    hidden = causal.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    target = batch["labels"][:, 1:]
    keep = target != IGNORE_INDEX
    picked, wanted = hidden[:, :-1][keep], target[keep]
    head = causal.get_output_embeddings()
    softcap = getattr(causal.config, "final_logit_softcapping", None)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, wanted.numel(), chunk_tokens):
        h, t = picked[start:start + chunk_tokens], wanted[start:start + chunk_tokens]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, h, t, softcap, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, h, t, softcap)
    return total, int(wanted.numel())
