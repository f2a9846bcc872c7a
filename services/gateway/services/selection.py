"""Which logged answers become training rows: the selection policy, one decision per answer.

Defaults are chosen for quality. The fallback (the paid model) is the best teacher there is: its
answers go in. The local model's own answers teach it nothing new unless a person confirmed them:
they go in only with a thumbs-up. A thumbs-down never goes in. Answers that failed, were cut off,
were barely backed by their passages, or said "not found" although retrieval was confident, are
left out, and so is any conversation whose history holds an assistant turn AION never wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .not_found import is_not_found

LocalPolicy = Literal["thumbs_up", "all", "never"]
# Answers `aion eval` asks for carry request ids with this prefix: they measure the models, and never train them.
EVAL_REQUEST_PREFIX = "eval-"


@dataclass(frozen=True)
class SelectionPolicy:
    fallback: bool = True  # AION_EXPORT_FALLBACK
    local: LocalPolicy = "thumbs_up"  # AION_EXPORT_LOCAL
    min_support: float = 0.5  # AION_EXPORT_MIN_SUPPORT; answers that record no support are not judged by it


def skip_reason(meta: dict[str, Any], value: float | None, rating: float | None,
                policy: SelectionPolicy) -> str | None:
    """Why this answer event must not become a training row (a short stable code), or None to keep it.

    `rating` is the answer's latest feedback (> 0 up, < 0 down, None: none). History trust needs the
    database and is decided by the exporter.
    """
    reply = (meta.get("reply") or "").strip()
    if meta.get("cached"):
        return "cached"  # a replay of an answer logged (and judged) when it was first given
    if meta.get("complete") is False or meta.get("error") or (value is not None and value <= 0):
        return "incomplete"
    if meta.get("finish_reason") == "length":
        return "cut_off"
    if rating is not None and rating < 0:
        return "negative_feedback"
    used = meta.get("used")
    if used == "fallback" and not policy.fallback:
        return "fallback_excluded"
    if used == "local":
        if policy.local == "never":
            return "local_excluded"
        if policy.local == "thumbs_up" and not (rating is not None and rating > 0):
            return "local_unrated"
    if used not in ("local", "fallback"):
        return "incomplete"
    if meta.get("messages_omitted"):
        return "too_large"
    if not meta.get("messages"):
        return "ungrounded"  # logged before answers recorded their model input: no true context
    if not reply:
        return "empty"
    if is_not_found(reply):
        # Retrieval was confident (C >= the answer's tau), so a passage most likely held the answer.
        confidence, tau = meta.get("C"), meta.get("tau")
        if meta.get("sources") and confidence is not None and tau is not None and confidence >= tau:
            return "not_found_with_context"
        return None  # a justified "not found": it teaches the model to say so
    support = meta.get("support")
    if isinstance(support, int | float) and support < policy.min_support:
        return "low_support"
    return None
