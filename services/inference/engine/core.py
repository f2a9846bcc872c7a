"""The engine: a single thread that admits requests, prefills them, and decodes all of them together.

HTTP handlers never touch the model. They submit a request and read its events from an asyncio
queue; model-changing operations (adapter load, merge) are queued too and run between decode steps,
so they are ordered with generation instead of racing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from shared.errors import ServiceUnavailable

from .detokenizer import IncrementalDetokenizer, StopMatcher
from .kvcache import SlotCache
from .runner import ModelRunner
from .sampling import make_generator, penalize, sample_row
from .types import FinishReason, GenerationRequest, StreamEvent

logger = logging.getLogger(__name__)


class QueueFull(ServiceUnavailable):
    code = "queue_full"


@dataclass
class _Handle:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Sequence:
    handle: _Handle
    generator: torch.Generator
    detok: IncrementalDetokenizer
    stops: StopMatcher
    last_token: int = 0
    generated: int = 0
    first_token_s: float | None = None
    counts: dict[int, int] = field(default_factory=dict)  # generated token -> times, for the penalties


@dataclass
class _Op:
    fn: Callable[[], Any]
    future: concurrent.futures.Future
    barrier: bool  # needs an empty batch (it changes weights every row would see)


@dataclass
class EngineStats:
    waiting: int
    running: int
    max_batch_size: int
    completed: int
    cancelled: int
    generated_tokens: int
    decode_steps: int
    last_batch_size: int
    adapters_in_use: dict[str, int]


class Engine:
    def __init__(self, runner: ModelRunner, *, max_batch_size: int, max_queue: int,
                 on_step: Callable[[int], None] | None = None,
                 on_finish: Callable[[StreamEvent], None] | None = None) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._on_step = on_step
        self._on_finish = on_finish
        self._waiting: deque[_Handle] = deque()
        self._ops: deque[_Op] = deque()
        self._handles: dict[int, _Handle] = {}
        self._running: list[_Sequence] = []
        self._batch = runner.new_batch(max_batch_size)
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._completed = self._cancelled = self._generated = self._steps = self._last_batch = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aion-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread:
            self._thread.join(timeout)

    # -- public interface (event-loop side) ------------------------------------------------------
    def submit(self, request: GenerationRequest) -> _Handle:
        """Queue a request; raises QueueFull (503 with Retry-After) when the queue is at its limit."""
        handle = _Handle(request=request, loop=asyncio.get_running_loop(), events=asyncio.Queue())
        with self._wake:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the generation queue is full ({self.max_queue} waiting); retry shortly",
                                headers={"Retry-After": "2"})
            self._waiting.append(handle)
            self._handles[request.request_id] = handle
            self._wake.notify_all()
        return handle

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        """Submit and yield events until the sequence ends. Leaving early cancels the sequence."""
        handle = self.submit(request)
        try:
            while True:
                event: StreamEvent = await handle.events.get()
                yield event
                if event.finished is not None:
                    return
        finally:
            self.cancel(request.request_id)

    def cancel(self, request_id: int) -> None:
        """Stop a sequence at the next decode step (no-op when it already ended)."""
        with self._wake:
            handle = self._handles.get(request_id)
            if handle is not None:
                handle.cancelled.set()
                self._wake.notify_all()

    def run_op(self, fn: Callable[[], Any], *, barrier: bool = False) -> concurrent.futures.Future:
        """Run fn on the engine thread between decode steps; barrier ops wait for an empty batch."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            self._ops.append(_Op(fn, future, barrier))
            self._wake.notify_all()
        return future

    def adapters_in_use(self) -> dict[str, int]:
        with self._wake:
            counts: dict[str, int] = {}
            for handle in list(self._waiting) + [s.handle for s in self._running]:
                name = handle.request.adapter
                if name:
                    counts[name] = counts.get(name, 0) + 1
            return counts

    def stats(self) -> EngineStats:
        with self._wake:
            return EngineStats(waiting=len(self._waiting), running=len(self._running),
                               max_batch_size=self.max_batch_size, completed=self._completed,
                               cancelled=self._cancelled, generated_tokens=self._generated,
                               decode_steps=self._steps, last_batch_size=self._last_batch,
                               adapters_in_use=self.adapters_in_use())

    # -- engine thread -----------------------------------------------------------------------
    def _emit(self, handle: _Handle, event: StreamEvent) -> None:
        try:
            handle.loop.call_soon_threadsafe(handle.events.put_nowait, event)
        except RuntimeError:
            pass  # the client's event loop is gone; nothing left to tell

    def _loop(self) -> None:
        while True:
            with self._wake:
                while (not self._stop and not self._running and not self._waiting and not self._ops):
                    self._wake.wait(timeout=1.0)
                if self._stop:
                    break
            try:
                self._run_ops()
                self._drop_cancelled()
                self._admit()
                if self._running:
                    self._decode_step()
            except Exception as exc:  # a failed forward must not kill the service
                logger.exception("generation step failed")
                self._fail_all(f"generation failed: {exc}")
        self._fail_all("the inference service is shutting down")

    def _run_ops(self) -> None:
        while True:
            with self._wake:
                if not self._ops:
                    return
                op = self._ops[0]
                if op.barrier and self._running:
                    return  # decode on (without admitting) until the batch drains
                self._ops.popleft()
            if op.future.set_running_or_notify_cancel():
                try:
                    op.future.set_result(op.fn())
                except BaseException as exc:  # handed to the waiting caller
                    op.future.set_exception(exc)

    def _barrier_pending(self) -> bool:
        with self._wake:
            return any(op.barrier for op in self._ops)

    def _admit(self) -> None:
        while len(self._running) < self.max_batch_size and not self._barrier_pending():
            with self._wake:
                if not self._waiting:
                    return
                handle = self._waiting.popleft()
            if handle.cancelled.is_set():
                self._finish_handle(handle, FinishReason.CANCELLED, 0, None)
                continue
            try:
                self._prefill(handle)
            except Exception as exc:
                # Out of the queue but not yet running: _fail_all would not see it, and its client would
                # wait for ever. Answer it here, then let the loop reset the batch.
                self._finish_handle(handle, FinishReason.ERROR, 0, None, error=f"admission failed: {exc}")
                raise

    def _prefill(self, handle: _Handle) -> None:
        request = handle.request
        try:
            logits, layers = self.runner.prefill(request.prompt_ids, request.adapter)
        except Exception as exc:
            logger.exception("prefill failed")
            self._finish_handle(handle, FinishReason.ERROR, 0, None, error=f"prefill failed: {exc}")
            return
        seq = _Sequence(handle=handle, generator=make_generator(request.params.seed),
                        detok=IncrementalDetokenizer(self.runner.tokenizer),
                        stops=StopMatcher(request.params.stop))
        if self._batch.rows == 0 and not self.runner.fits(self._batch):
            self._batch = self.runner.new_batch(self.max_batch_size)
        if isinstance(self._batch, SlotCache):
            blocks = self.runner.shared_blocks(request.prompt_ids, request.adapter)
            self._batch.append_row(layers, len(request.prompt_ids), blocks)
        else:
            self._batch.append_row(layers, len(request.prompt_ids))
        self._running.append(seq)
        self._accept_token(seq, logits)
        self._retire_finished()

    def _decode_step(self) -> None:
        tokens = [s.last_token for s in self._running]
        adapters = [s.handle.request.adapter for s in self._running]
        logits = self.runner.decode(self._batch, tokens, adapters)
        self._steps += 1
        self._last_batch = len(self._running)
        if self._on_step:
            self._on_step(len(self._running))
        for row, seq in enumerate(self._running):
            self._accept_token(seq, logits[row])
        self._retire_finished()

    def _accept_token(self, seq: _Sequence, logits: torch.Tensor) -> None:
        params = seq.handle.request.params
        logits = penalize(logits, seq.counts, params.frequency_penalty, params.presence_penalty)
        constraint = seq.handle.request.constraint
        if constraint is not None:
            logits = constraint.mask(logits)
        token = sample_row(logits, params.temperature, params.top_p, seq.generator)
        seq.counts[token] = seq.counts.get(token, 0) + 1
        seq.last_token = token
        seq.generated += 1
        self._generated += 1
        if seq.first_token_s is None:
            seq.first_token_s = time.perf_counter() - seq.handle.submitted_at
        if token in self.runner.eos_ids:
            seq.stops.stopped = True  # end of sequence: flush below, emit nothing for the EOS itself
            self._send_text(seq, seq.stops.feed(seq.detok.flush()) + seq.stops.flush())
            return
        self._send_text(seq, seq.stops.feed(seq.detok.push(token)))
        if constraint is not None and constraint.advance(token) and not seq.stops.stopped:  # grammar complete
            seq.stops.stopped = True
            self._send_text(seq, seq.stops.feed(seq.detok.flush()) + seq.stops.flush())

    def _send_text(self, seq: _Sequence, text: str) -> None:
        if text:
            self._emit(seq.handle, StreamEvent(text=text, first_token_s=seq.first_token_s))

    def _finish_reason(self, seq: _Sequence) -> FinishReason | None:
        request = seq.handle.request
        if seq.stops.stopped:
            return FinishReason.STOP
        if seq.handle.cancelled.is_set():
            return FinishReason.CANCELLED
        if seq.generated >= request.params.max_new_tokens:
            return FinishReason.LENGTH
        if len(request.prompt_ids) + seq.generated >= self.runner.max_context:
            return FinishReason.LENGTH
        return None

    def _retire_finished(self) -> None:
        dead: list[int] = []
        for row, seq in enumerate(self._running):
            reason = self._finish_reason(seq)
            if reason is None:
                continue
            dead.append(row)
            if reason is FinishReason.LENGTH:
                self._send_text(seq, seq.stops.feed(seq.detok.flush()) + seq.stops.flush())
            self._finish_handle(seq.handle, reason, seq.generated, seq.first_token_s)
        if dead:
            # the cache may move rows around to fill the holes; the sequences follow their rows
            order = self._batch.remove_rows(dead)
            self._running = [self._running[old] for old in order]

    def _drop_cancelled(self) -> None:
        if any(s.handle.cancelled.is_set() for s in self._running):
            self._retire_finished()

    def _finish_handle(self, handle: _Handle, reason: FinishReason, generated: int,
                       first_token_s: float | None, error: str | None = None) -> None:
        with self._wake:
            self._handles.pop(handle.request.request_id, None)
            if reason is FinishReason.CANCELLED:
                self._cancelled += 1
            else:
                self._completed += 1
        event = StreamEvent(finished=reason, prompt_tokens=len(handle.request.prompt_ids),
                            completion_tokens=generated, error=error, first_token_s=first_token_s)
        self._emit(handle, event)
        if self._on_finish:
            self._on_finish(event)

    def _fail_all(self, message: str) -> None:
        for seq in self._running:
            self._finish_handle(seq.handle, FinishReason.ERROR, seq.generated, seq.first_token_s, error=message)
        self._running = []
        self._batch = self.runner.new_batch(self.max_batch_size)
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        for handle in waiting:
            self._finish_handle(handle, FinishReason.ERROR, 0, None, error=message)
