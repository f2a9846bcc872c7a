"""The generation engine: one thread owns the model and serves every request in shared batches."""

from .core import Engine, EngineStats
from .types import FinishReason, GenerationRequest, SamplingParams, StreamEvent

__all__ = ["Engine", "EngineStats", "FinishReason", "GenerationRequest", "SamplingParams", "StreamEvent"]
