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
from .runner import ModelRunner
from .sampling import choose_tokens, make_generator, penalize
from .types import FinishReason, GenerationRequest, StreamEvent

logger = logging.getLogger(__name__)


class QueueFull(ServiceUnavailable):
    code = "queue_full"


class EngineStopped(ServiceUnavailable):
    code = "shutting_down"


@dataclass
class Handle:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Sequence:
    handle: Handle
    generator: torch.Generator
    detok: IncrementalDetokenizer
    stops: StopMatcher
    reserved: int = 0  # positions its slot may reach: prompt + max_new_tokens, within the context
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
    runner: str
    kv_cache_bytes: int
    kv_budget_bytes: int | None


class Engine:
    def __init__(self, runner: ModelRunner, *, max_batch_size: int, max_queue: int,
                 on_step: Callable[[int, float, float], None] | None = None,
                 on_prefill: Callable[[float], None] | None = None,
                 on_finish: Callable[[StreamEvent], None] | None = None) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._on_step = on_step  # (rows, seconds in the forward, seconds choosing tokens and emitting text)
        self._on_prefill = on_prefill
        self._on_finish = on_finish
        self._waiting: deque[Handle] = deque()
        self._ops: deque[_Op] = deque()
        self._handles: dict[int, Handle] = {}
        self._running: list[_Sequence] = []
        self._batch = runner.new_batch(max_batch_size)
        # Bumped whenever the weights change under every adapter name (a merge): a request resolved
        # against the old weights must not be served by the new ones.
        self.weights_version = 0
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
        self._fail_ops()

    # -- public interface (event-loop side) ------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Handle:
        """Queue a request; raises QueueFull (503 with Retry-After) when the queue is at its limit."""
        handle = Handle(request=request, loop=asyncio.get_running_loop(), events=asyncio.Queue())
        with self._wake:
            if self._stop:
                raise EngineStopped("the inference service is shutting down; retry on another replica or later",
                                    headers={"Retry-After": "5"})
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the generation queue is full ({self.max_queue} waiting); retry shortly",
                                headers={"Retry-After": "2"})
            self._waiting.append(handle)
            self._handles[request.request_id] = handle
            self._wake.notify_all()
        return handle

    async def events(self, handle: Handle) -> AsyncIterator[StreamEvent]:
        """A submitted request's events until it ends. Leaving early cancels it."""
        try:
            while True:
                event: StreamEvent = await handle.events.get()
                yield event
                if event.finished is not None:
                    return
        finally:
            self.cancel(handle.request.request_id)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        """Submit and yield events until the sequence ends. Leaving early cancels the sequence."""
        async for event in self.events(self.submit(request)):
            yield event

    def cancel(self, request_id: int) -> None:
        """Stop a sequence at the next decode step; one still waiting leaves the queue at once."""
        with self._wake:
            handle = self._handles.get(request_id)
            if handle is None:
                return
            handle.cancelled.set()
            try:
                self._waiting.remove(handle)  # frees its queue place and its hold on an adapter now
            except ValueError:
                handle = None  # running: the engine thread retires it
            self._wake.notify_all()
        if handle is not None:
            self._finish_handle(handle, FinishReason.CANCELLED, 0, None)

    def run_op(self, fn: Callable[[], Any], *, barrier: bool = False) -> concurrent.futures.Future:
        """Run fn on the engine thread between decode steps; barrier ops wait for an empty batch."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            self._ops.append(_Op(fn, future, barrier))
            self._wake.notify_all()
        return future

    def max_request_positions(self) -> int:
        """The most positions (prompt + new tokens) one request may reserve: the context, or less when the KV
        budget cannot hold a whole context for one row."""
        budget, per_position = self.runner.kv_budget_bytes, self._batch.position_bytes
        if budget is None or not per_position:
            return self.runner.max_context
        return min(self.runner.max_context, budget // per_position)

    def reset_batch(self) -> None:
        """A new empty batch (engine thread only, with no row running): frees the old one's slots."""
        assert not self._running
        self._batch = self.runner.new_batch(self.max_batch_size)

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
                               adapters_in_use=self.adapters_in_use(), runner=self.runner.kind,
                               kv_cache_bytes=self._batch.allocated_bytes,
                               kv_budget_bytes=self.runner.kv_budget_bytes)

    # -- engine thread -----------------------------------------------------------------------
    def _emit(self, handle: Handle, event: StreamEvent) -> None:
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

    def _fail_ops(self) -> None:
        """At shutdown: nobody will run the queued model operations; tell their callers so."""
        with self._wake:
            ops, self._ops = list(self._ops), deque()
        for op in ops:
            if op.future.set_running_or_notify_cancel():
                op.future.set_exception(EngineStopped("the inference service is shutting down"))

    def _barrier_pending(self) -> bool:
        with self._wake:
            return any(op.barrier for op in self._ops)

    def _reservation(self, request: GenerationRequest) -> int:
        return min(len(request.prompt_ids) + request.params.max_new_tokens, self.runner.max_context)

    def _admit(self) -> None:
        while len(self._running) < self.max_batch_size and not self._barrier_pending():
            with self._wake:
                if not self._waiting:
                    return
                handle = self._waiting[0]
                reserved = self._reservation(handle.request)
                ends = [s.reserved for s in self._running] + [reserved]
                if self._running and not self._batch.fits(len(ends), max(ends)):
                    return  # within the KV budget only after some rows finish: wait for them
                self._waiting.popleft()
            if handle.cancelled.is_set():
                self._finish_handle(handle, FinishReason.CANCELLED, 0, None)
                continue
            if not self._batch.fits(1, reserved):
                self._finish_handle(handle, FinishReason.ERROR, 0, None, status=400, error=(
                    f"the request needs {reserved} positions of KV cache ({reserved * self._batch.position_bytes >> 20}"
                    f" MB), more than AION_KV_CACHE_MB allows; shorten the prompt or ask for fewer new tokens"))
                continue
            if handle.request.weights_version != self.weights_version:
                self._finish_handle(handle, FinishReason.ERROR, 0, None, status=409, error=(
                    "the model's weights changed while this request waited (an adapter was merged into the "
                    "base); send it again"))
                continue
            # An error here is this request's alone (a bad seed, no memory for its slot): it fails, the
            # batch goes on.
            self._prefill(handle, reserved)

    def _prefill(self, handle: Handle, reserved: int) -> None:
        request = handle.request
        started = time.perf_counter()
        try:
            logits, layers = self.runner.prefill(request.prompt_ids, request.adapter)
            seq = _Sequence(handle=handle, generator=make_generator(request.params.seed, logits.device),
                            detok=IncrementalDetokenizer(self.runner.tokenizer),
                            stops=StopMatcher(request.params.stop), reserved=reserved)
            self.runner.admit(self._batch, layers, request.prompt_ids, request.adapter)
        except Exception as exc:
            logger.exception("admission failed")
            _release_device_memory(exc)
            self._finish_handle(handle, FinishReason.ERROR, 0, None, error=f"admission failed: {_describe(exc)}",
                                status=503 if _is_out_of_memory(exc) else 500)
            return
        self._running.append(seq)
        self._accept_tokens([seq], logits.unsqueeze(0))
        if self._on_prefill:
            self._on_prefill(time.perf_counter() - started)
        self._retire_finished()

    def _decode_step(self) -> None:
        tokens = [s.last_token for s in self._running]
        adapters = [s.handle.request.adapter for s in self._running]
        started = time.perf_counter()
        try:
            logits = self.runner.decode(self._batch, tokens, adapters)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            # The device ran out of memory with this many rows: the newest row gives its place back and
            # the others go on at the next step (their caches are untouched: a step writes its positions
            # only where it then advances).
            _release_device_memory(exc)
            victim = self._running[-1]
            logger.warning("out of device memory at %d rows; ending the newest request", len(self._running))
            victim.handle.cancelled.set()
            self._finish_handle(victim.handle, FinishReason.ERROR, victim.generated, victim.first_token_s,
                                status=503, error="the device ran out of memory for this request's keys and values; "
                                "retry, or lower AION_KV_CACHE_MB / AION_MAX_BATCH_SIZE")
            order = self._batch.remove_rows([len(self._running) - 1])
            self._running = [self._running[old] for old in order]
            return
        self._steps += 1
        rows = self._last_batch = len(self._running)
        forward = time.perf_counter()
        self._accept_tokens(self._running, logits)  # waits for the forward: the chosen ids reach the host
        if self._on_step:
            self._on_step(rows, forward - started, time.perf_counter() - forward)
        self._retire_finished()

    def _accept_tokens(self, seqs: list[_Sequence], logits: torch.Tensor) -> None:
        """Choose each row's next token (on the logits' device, one transfer for the batch) and emit text."""
        rows = []
        for row, seq in enumerate(seqs):
            params = seq.handle.request.params
            row_logits = penalize(logits[row], seq.counts, params.frequency_penalty, params.presence_penalty)
            constraint = seq.handle.request.constraint
            rows.append(row_logits if constraint is None else constraint.mask(row_logits))
        chosen = choose_tokens(rows, [s.handle.request.params for s in seqs], [s.generator for s in seqs])
        for seq, token in zip(seqs, chosen, strict=True):
            self._accept_token(seq, token)

    def _accept_token(self, seq: _Sequence, token: int) -> None:
        seq.counts[token] = seq.counts.get(token, 0) + 1
        seq.last_token = token
        seq.generated += 1
        self._generated += 1
        if seq.first_token_s is None:
            seq.first_token_s = time.perf_counter() - seq.handle.submitted_at
        if token in self.runner.eos_ids and not seq.handle.request.params.ignore_eos:
            seq.stops.stopped = True  # end of sequence: flush below, emit nothing for the EOS itself
            self._send_text(seq, seq.stops.feed(seq.detok.flush()) + seq.stops.flush())
            return
        self._send_text(seq, seq.stops.feed(seq.detok.push(token)))
        constraint = seq.handle.request.constraint
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

    def _finish_handle(self, handle: Handle, reason: FinishReason, generated: int,
                       first_token_s: float | None, error: str | None = None, status: int = 500) -> None:
        with self._wake:
            self._handles.pop(handle.request.request_id, None)
            if reason is FinishReason.CANCELLED:
                self._cancelled += 1
            else:
                self._completed += 1
        event = StreamEvent(finished=reason, prompt_tokens=len(handle.request.prompt_ids),
                            completion_tokens=generated, error=error, first_token_s=first_token_s,
                            error_status=status if error else None)
        self._emit(handle, event)
        if self._on_finish:
            self._on_finish(event)

    def _fail_all(self, message: str) -> None:
        """The batch's state is unknown after a failed step: end every request, start an empty batch."""
        for seq in self._running:
            self._finish_handle(seq.handle, FinishReason.ERROR, seq.generated, seq.first_token_s, error=message)
        self._running = []
        self._batch = self.runner.new_batch(self.max_batch_size)
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        for handle in waiting:
            self._finish_handle(handle, FinishReason.ERROR, 0, None, error=message)


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError))


def _release_device_memory(exc: BaseException) -> None:
    if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
