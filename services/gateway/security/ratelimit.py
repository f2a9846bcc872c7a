"""Token buckets per API key and per client IP, kept in this process.

One gateway process, one set of buckets: with several replicas each enforces its own limits, so
the effective limit is N times the setting; a shared store (Redis) is what replicas would need.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0


class TokenBuckets:
    """`capacity` tokens per key, refilled at `per_minute`; a rate of 0 means no limit."""

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_minute / 60.0
        self.capacity = float(max(burst, 1))
        self.max_keys = max_keys
        self.clock = clock
        # Least recently used first; forgetting a bucket only refills it, which errs on the lenient side.
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def take(self, key: Hashable) -> Decision:
        if not self.enabled:
            return Decision(True)
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.per_second)
            bucket.updated = now
        self._buckets[key] = bucket
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Decision(True)
        return Decision(False, max(1, math.ceil((1.0 - bucket.tokens) / self.per_second)))
