"""What an answer event records about the model's input: the exact messages, bounded in size.

Export trains on these messages, so they must be what the model was given, byte for byte, or
absent: a conversation over the bound (AION_ANSWER_LOG_MAX_CHARS) is not cut, it is left out and
marked, and the export skips that answer as `too_large`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .prompt import PROMPT_VERSION


def model_input(messages: Sequence[dict[str, str]], max_chars: int) -> dict[str, Any]:
    """The record's `messages` (or None when over `max_chars`), their size and the template version."""
    chars = sum(len(m.get("content") or "") for m in messages)
    kept = chars <= max_chars
    return {"messages": [dict(m) for m in messages] if kept else None, "messages_chars": chars,
            "messages_omitted": not kept, "prompt_version": PROMPT_VERSION}
