"""The response cache: the same question against the same knowledge, adapter and settings gets the stored
answer instead of paying a model again — the paid fallback above all.

What the key holds (sha256 over all of it):
- the tenant, and a fingerprint of every setting that changes answers (prompts, models and their URLs,
  sampling, retrieval, routing, support check, prompt version: `settings_fingerprint`), so a restart
  with other settings never meets answers made under the old ones;
- the knowledge version (a trigger on `documents` bumps it at the commit of every ingest, replace or
  delete, web pages included) and the cache generation (bumped when an adapter is activated, rolled
  back, reloaded or merged, and by `DELETE /api/ai/cache`);
- the adapter the registry says is active (the model that would answer);
- the request's own routing: τ and forceFallback;
- the conversation so far (every turn, normalised): a follow-up's answer depends on its history, so it
  is reused only after the very same history;
- the question, normalised (Unicode NFKC, case-folded, spaces collapsed, final punctuation dropped).

The semantic cache (off by default) matches a question whose embedding is within a cosine similarity
threshold of a stored one with the same everything-else (`context_key`).

L1 is a bounded LRU in this process; L2 is Postgres, shared by gateway replicas; both honour the TTL.
Each lookup reads the tenant's epoch (knowledge version, generation, active adapter) from Postgres,
one indexed row: an L1 entry is therefore never served after another replica ingested or promoted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..repositories import response_cache as repo
from ..repositories.response_cache import StoredAnswer

logger = logging.getLogger(__name__)

CacheMode = Literal["all", "fallback", "off"]
CacheLevel = Literal["l1", "l2", "semantic"]
EmbedFn = Callable[[str], Awaitable[np.ndarray]]

# An answer shaped by a passing condition is never stored: once the condition is gone, the question
# deserves a fresh answer (the budget refills, a model comes back, embeddings return).
TRANSIENT_WARNINGS = frozenset({"local_unavailable", "fallback_failed", "budget_exhausted", "fallback_share_cap",
                                "key_budget_share", "embeddings_unavailable"})
SWEEP_EVERY_S = 60.0
_SPACES = re.compile(r"\s+")
_FINAL_PUNCTUATION = " \t?!.;:…？！。"


def normalise_question(question: str) -> str:
    """What makes two questions the same one: Unicode form, case, spacing and final punctuation aside."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACES.sub(" ", text).strip().rstrip(_FINAL_PUNCTUATION).strip()


def settings_fingerprint(values: dict[str, Any]) -> str:
    """A digest of the settings that change answers (JSON, keys sorted: the same settings, the same digest)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class CachePolicy:
    mode: CacheMode = "all"
    ttl_s: float = 86_400.0
    l1_entries: int = 1024
    semantic: bool = False
    semantic_min_similarity: float = 0.95
    fingerprint: str = ""


@dataclass(frozen=True)
class CachedAnswer:
    payload: dict[str, Any]  # the events to replay: see AnswerService.run
    used: str
    model: str | None
    cost_usd: float
    expires_at: float  # epoch seconds

    @classmethod
    def from_stored(cls, stored: StoredAnswer) -> CachedAnswer:
        return cls(stored.payload, stored.used, stored.model, stored.cost_usd, stored.expires_at)


@dataclass
class Probe:
    """One question's place in the cache: its keys, and the answer found there (if any)."""

    tenant_id: str
    cache_key: str
    context_key: str
    knowledge_version: int
    question: str  # normalised
    embedding: np.ndarray | None = None
    hit: CachedAnswer | None = None
    level: CacheLevel | None = None
    similarity: float | None = None


class AnswerLru:
    """A bounded LRU where paid answers outlive free ones: when full, the least recently used free
    answer goes first, and a paid one only when no free one is left."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._paid: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._free: OrderedDict[str, CachedAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._paid) + len(self._free)

    def get(self, key: str, now: float) -> CachedAnswer | None:
        for segment in (self._paid, self._free):
            entry = segment.get(key)
            if entry is not None:
                if entry.expires_at <= now:
                    del segment[key]
                    return None
                segment.move_to_end(key)
                return entry
        return None

    def put(self, key: str, entry: CachedAnswer) -> None:
        if self.capacity <= 0:
            return
        self._paid.pop(key, None)
        self._free.pop(key, None)
        (self._paid if entry.cost_usd > 0 else self._free)[key] = entry
        while len(self) > self.capacity:
            (self._free or self._paid).popitem(last=False)

    def clear(self) -> None:
        self._paid.clear()
        self._free.clear()


class ResponseCache:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], policy: CachePolicy, *,
                 embed: EmbedFn | None = None, clock: Callable[[], float] = time.time) -> None:
        self.sessions = sessions
        self.policy = policy
        self.embed = embed
        self.clock = clock
        self.l1 = AnswerLru(policy.l1_entries)
        self._last_sweep = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.policy.mode != "off"

    async def probe(self, *, tenant_id: str, question: str, history: Sequence[dict[str, str]], tau: float,
                    force_fallback: bool, model: str | None = None) -> Probe:
        """Find the stored answer to this question (L1, then L2, then — when on — the nearest by meaning).

        `model`: the model or adapter a conversation chose instead of the server's default (its own key).
        """
        async with self.sessions() as session:
            epoch = await repo.epoch(session, tenant_id)
            normalised = normalise_question(question)
            turns = [(t["role"], normalise_question(t["content"])) for t in history]
            chosen = () if model is None else (model,)  # the default's keys stay as they were
            context_key = _digest("aion-answer-cache/1", tenant_id, self.policy.fingerprint, epoch.knowledge_version,
                                  epoch.cache_generation, epoch.active_adapter, repr(float(tau)), force_fallback, turns,
                                  *chosen)
            probe = Probe(tenant_id, _digest(context_key, normalised), context_key, epoch.knowledge_version, normalised)
            entry = self.l1.get(probe.cache_key, self.clock())
            if entry is not None:
                probe.hit, probe.level = entry, "l1"
                return probe
            stored = await repo.get(session, tenant_id, probe.cache_key)
            if stored is None and self.policy.semantic and self.embed is not None:
                probe.embedding = await self.embed(question)
                nearest = await repo.nearest(session, tenant_id, context_key, probe.embedding)
                if nearest is not None and nearest.similarity is not None:
                    probe.similarity = round(nearest.similarity, 4)
                    if nearest.similarity >= self.policy.semantic_min_similarity:
                        probe.hit, probe.level = CachedAnswer.from_stored(nearest), "semantic"
                        self.l1.put(probe.cache_key, probe.hit)  # the same words again: an exact hit
                        return probe
            if stored is not None:
                probe.hit, probe.level = CachedAnswer.from_stored(stored), "l2"
                self.l1.put(probe.cache_key, probe.hit)
        return probe

    def wants(self, used: str | None, cost_usd: float, warnings: Sequence[str]) -> bool:
        """Whether an answer is worth keeping: complete answers not shaped by a passing condition; with
        AION_RESPONSE_CACHE=fallback, paid ones only."""
        if not self.enabled or used is None or TRANSIENT_WARNINGS.intersection(warnings):
            return False
        return self.policy.mode == "all" or (used == "fallback" and cost_usd > 0)

    async def remember(self, probe: Probe, payload: dict[str, Any], *, used: str, model: str | None,
                       cost_usd: float) -> None:
        async with self.sessions.begin() as session:
            expires_at = await repo.put(session, tenant_id=probe.tenant_id, cache_key=probe.cache_key,
                                        context_key=probe.context_key, knowledge_version=probe.knowledge_version,
                                        question=probe.question, embedding=probe.embedding, payload=payload,
                                        used=used, model=model, cost_usd=cost_usd, ttl_s=self.policy.ttl_s)
            now = self.clock()
            if now - self._last_sweep >= SWEEP_EVERY_S:
                self._last_sweep = now
                await repo.sweep(session, probe.tenant_id, probe.knowledge_version)
        self.l1.put(probe.cache_key, CachedAnswer(payload, used, model, cost_usd, expires_at))

    async def clear(self, tenant_id: str) -> int:
        """Forget every stored answer of the tenant, in every replica (a new generation); returns the new one."""
        async with self.sessions.begin() as session:
            generation = await forget_answers(session, tenant_id)
        self.l1.clear()
        return generation

    async def stats(self, tenant_id: str, days: int) -> dict[str, Any]:
        since = datetime.now(UTC) - timedelta(days=days)
        async with self.sessions() as session:
            hits = await repo.hit_stats(session, tenant_id, since)
            entries, stored_cost = await repo.stored(session, tenant_id)
            epoch = await repo.epoch(session, tenant_id)
        answers = hits["answers"]
        return {"mode": self.policy.mode, "semantic": self.policy.semantic,
                "semantic_min_similarity": self.policy.semantic_min_similarity, "ttl_s": self.policy.ttl_s,
                "days": days, "since": since.isoformat(), **hits,
                "hit_rate": round(hits["hits"] / answers, 4) if answers else 0.0,
                "saved_usd": round(hits["saved_usd"], 6), "stored": entries, "stored_cost_usd": round(stored_cost, 6),
                "l1_entries": len(self.l1), "l1_capacity": self.policy.l1_entries,
                "knowledge_version": epoch.knowledge_version, "cache_generation": epoch.cache_generation,
                "active_adapter": epoch.active_adapter}


async def forget_answers(session: AsyncSession, tenant_id: str) -> int:
    """Within the caller's transaction: every cached answer of the tenant is dead from its commit on.

    Called where the model that answers changes (adapter activation, rollback, reload, merge), after the
    inference service switched: a request that read the old generation is stored under it, and dies too.
    """
    generation = await repo.bump_generation(session, tenant_id)
    logger.info("cached answers of tenant %s forgotten (cache generation %d)", tenant_id, generation)
    return generation
