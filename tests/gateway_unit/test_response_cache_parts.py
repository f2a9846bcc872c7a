"""The response cache's pure parts: what makes two questions one, the L1's eviction and expiry, what
is worth keeping, and the settings fingerprint."""

from __future__ import annotations

from services.gateway.services.response_cache import (
    AnswerLru,
    CachedAnswer,
    CachePolicy,
    ResponseCache,
    normalise_question,
    settings_fingerprint,
)


def test_questions_differing_in_form_only_are_one_question() -> None:
    same = ["How often is the chain oiled?", "  how often is the CHAIN oiled ", "How often is the chain\toiled??",
            "How often is the chain oiled？", "Ｈow often is the chain oiled!"]
    assert {normalise_question(q) for q in same} == {"how often is the chain oiled"}
    assert normalise_question("How often is the chain not oiled?") != normalise_question(same[0])
    assert normalise_question("Qual é a garantia?") == "qual é a garantia"


def _answer(cost: float, expires_at: float = 100.0) -> CachedAnswer:
    return CachedAnswer(payload={"text": "t"}, used="fallback" if cost else "local", model=None, cost_usd=cost,
                        expires_at=expires_at)


def test_l1_keeps_paid_answers_longest_and_honours_the_ttl() -> None:
    lru = AnswerLru(3)
    lru.put("paid-1", _answer(0.01))
    lru.put("free-1", _answer(0.0))
    lru.put("free-2", _answer(0.0))
    assert lru.get("free-1", now=0) is not None  # free-1 is now the most recent free answer
    lru.put("paid-2", _answer(0.02))
    assert len(lru) == 3 and lru.get("free-2", now=0) is None  # the least recently used free one went
    lru.put("paid-3", _answer(0.03))
    assert lru.get("free-1", now=0) is None  # free ones go before any paid one
    lru.put("paid-4", _answer(0.04))
    assert lru.get("paid-1", now=0) is None and lru.get("paid-4", now=0) is not None  # then the oldest paid
    assert lru.get("paid-2", now=100.0) is None and len(lru) == 2  # expired: dropped when met
    off = AnswerLru(0)
    off.put("k", _answer(1.0))
    assert len(off) == 0


def test_only_answers_not_shaped_by_a_passing_condition_are_kept() -> None:
    cache = ResponseCache(sessions=None, policy=CachePolicy(mode="all"))  # type: ignore[arg-type]
    assert cache.wants("local", 0.0, ["low_confidence", "history_trimmed"])
    assert cache.wants("documents", 0.0, ["low_confidence", "fallback_disabled"])
    for passing in ("budget_exhausted", "fallback_share_cap", "key_budget_share", "local_unavailable",
                    "fallback_failed", "embeddings_unavailable"):
        assert not cache.wants("local", 0.0, [passing]), passing
    assert not cache.wants(None, 0.0, [])
    paid_only = ResponseCache(sessions=None, policy=CachePolicy(mode="fallback"))  # type: ignore[arg-type]
    assert paid_only.wants("fallback", 0.002, []) and not paid_only.wants("local", 0.0, [])
    off = ResponseCache(sessions=None, policy=CachePolicy(mode="off"))  # type: ignore[arg-type]
    assert not off.enabled and not off.wants("fallback", 1.0, [])


def test_settings_fingerprint_is_stable_and_sees_every_change() -> None:
    base = {"policy": {"local_temperature": 0.5, "personas": {"pt": "x"}}, "retrieval": [24, 8, 0.7]}
    assert settings_fingerprint(base) == settings_fingerprint(dict(reversed(list(base.items()))))
    assert settings_fingerprint(base) != settings_fingerprint({**base, "retrieval": [24, 8, 0.6]})
    assert settings_fingerprint(base) != settings_fingerprint({**base, "policy": {"local_temperature": 0.5,
                                                                                 "personas": {"pt": "y"}}})
