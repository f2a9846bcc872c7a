"""Builds the chat path's collaborators once, in the lifespan: model clients, budget, answer router."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import ServiceUnavailable
from shared.logging import request_id_var

from .clients.backends import InferenceBackend, make_backend
from .clients.chat import ChatClient
from .clients.inference import InferenceClient
from .clients.vllm_admin import VllmAdmin
from .observability import GatewayMetrics
from .repositories.events import insert_event
from .services.answer import AnswerPolicy, AnswerService, RetrievedContext
from .services.budget import BudgetGuard, BudgetPolicy
from .services.context_fit import ChatTokens
from .services.conversations import ConversationStore
from .services.export import Exporter
from .services.model_choice import ModelChoices
from .services.prompt import PROMPT_VERSION
from .services.response_cache import CachePolicy, ResponseCache, settings_fingerprint
from .services.retrieval import retrieve
from .services.rewrite import QuestionRewriter
from .services.served_model import ServedModel
from .services.tokens import TokenCounter
from .settings import GatewaySettings


@dataclass
class ChatParts:
    answers: AnswerService
    conversations: ConversationStore
    budget: BudgetGuard
    exporter: Exporter
    cache: ResponseCache
    admin: InferenceBackend
    local: ChatClient
    fallback: ChatClient | None
    models: ModelChoices

    async def close(self) -> None:
        await self.local.close()
        if self.fallback:
            await self.fallback.close()
        await self.admin.close()


def build_chat(settings: GatewaySettings, sessions: async_sessionmaker[AsyncSession],
               inference: InferenceClient, counter: TokenCounter, metrics: GatewayMetrics | None = None) -> ChatParts:
    async def retrieve_context(tenant_id: str, question: str, *, original: str | None = None,
                               request_id: str | None = None) -> RetrievedContext:
        try:
            async with sessions.begin() as session:
                found = await retrieve(session, inference, tenant_id, question, k=settings.top_k,
                                       top_n=settings.top_n, lam=settings.mmr_lambda, arms=settings.retrieval_arms(),
                                       duplicate_similarity=settings.mmr_duplicate_similarity,
                                       request_id=request_id or request_id_var.get(),
                                       max_query_chars=settings.max_query_chars,
                                       original_query=original)
        except DBAPIError as exc:
            if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
                raise
            # Down or restarting: the same retryable 503 the other routes give (see main.py).
            raise ServiceUnavailable("the database is unavailable; retry in a few seconds",
                                     code="database_unavailable", headers={"Retry-After": "2"}) from exc
        return RetrievedContext(confidence=found.confidence, passages=found.passages, warnings=found.warnings)

    async def log_event(tenant_id: str, kind: str, value: float, meta: dict[str, Any], request_id: str) -> None:
        async with sessions.begin() as session:
            await insert_event(session, tenant_id, kind, value=value, meta=meta, request_id=request_id)

    admin = make_backend(settings.inference_backend, settings.local_llm_url, settings.inference_token)
    served = None
    if isinstance(admin, VllmAdmin):
        served = ServedModel(sessions, admin, settings.tenant_id,
                             base_name=None if settings.local_model == "default" else settings.local_model)
    models = ModelChoices(sessions, admin, settings.tenant_id, base_name=served.base if served else None)
    # An adapter version a conversation chose may not be loaded (an older one, or after a restart): the
    # first request that names it loads it again from the registry.
    local = ChatClient(base_url=settings.chat_url(), api_key=settings.inference_token, model=settings.local_model,
                       timeout_s=settings.inference_timeout_s, max_retries=settings.local_retries,
                       model_for=served.current if served else None,
                       restore=served.restore if served else models.restore)
    fallback = None
    if settings.fallback_enabled():
        fallback = ChatClient(base_url=settings.fallback_url(), api_key=settings.openai_api_key,
                              model=settings.fallback_model, timeout_s=settings.fallback_timeout_s,
                              max_retries=settings.fallback_retries)
    budget = BudgetGuard(sessions, BudgetPolicy(
        cap_usd=settings.budget_usd, period=settings.budget_period, max_fallback_share=settings.tau_fallback,
        share_min_answers=settings.fallback_share_min_answers, stale_reservation_s=settings.stale_reservation_s,
        key_share=settings.budget_key_share))
    policy = AnswerPolicy(
        personas={"pt": settings.rag_system_prompt, "en": settings.rag_system_prompt_en},
        language=None if settings.prompt_language == "auto" else settings.prompt_language,
        default_language=settings.default_language, local_max_tokens=settings.local_max_tokens,
        local_temperature=settings.local_temperature, local_frequency_penalty=settings.local_frequency_penalty,
        fallback_max_tokens=settings.fallback_max_tokens, fallback_temperature=settings.fallback_temperature,
        prices=settings.fallback_prices, unknown_price=settings.fallback_unknown_price,
        max_passages=settings.prompt_max_passages, passage_tokens=settings.prompt_passage_tokens,
        context_window=settings.local_context_tokens or None, support_threshold=settings.support_threshold,
        check_citations=settings.check_citations,
        low_confidence_local=settings.low_confidence_answer == "local", log_max_chars=settings.answer_log_max_chars)
    conversations = ConversationStore(sessions)
    cache = build_cache(settings, sessions, inference, policy)
    answers = AnswerService(retrieve=retrieve_context, log_event=log_event, local=local, fallback=fallback,
                            budget=budget, policy=policy, tokens=ChatTokens(counter),
                            rewriter=QuestionRewriter(local, max_tokens=settings.rewrite_max_tokens),
                            conversations=conversations, on_answer=metrics.observe_answer if metrics else None,
                            cache=cache)
    return ChatParts(answers=answers, conversations=conversations, budget=budget,
                     exporter=Exporter(sessions, settings.selection_policy()),
                     cache=cache, admin=admin, local=local,
                     fallback=fallback, models=models)


def answer_settings(settings: GatewaySettings, policy: AnswerPolicy) -> dict[str, Any]:
    """Every setting that changes an answer: part of each response-cache key (see services/response_cache.py)."""
    return {
        "policy": asdict(policy), "prompt_version": PROMPT_VERSION,
        "local": [settings.inference_backend, settings.chat_url(), settings.local_model],
        "fallback": [settings.fallback_url(), settings.fallback_model] if settings.fallback_enabled() else None,
        "retrieval": [settings.top_n, settings.top_k, settings.mmr_lambda, settings.mmr_duplicate_similarity,
                      settings.hnsw_ef_search, settings.max_query_chars, settings.embeddings_base_url(),
                      settings.retrieval_vector_weight, settings.retrieval_text_weight, settings.retrieval_rrf_k,
                      settings.retrieval_text_max_rows],
        "rewrite": settings.rewrite_max_tokens,
    }


def build_cache(settings: GatewaySettings, sessions: async_sessionmaker[AsyncSession], inference: InferenceClient,
                policy: AnswerPolicy) -> ResponseCache:
    async def embed(question: str) -> np.ndarray:
        return (await inference.embed([question]))[0]

    return ResponseCache(sessions, CachePolicy(
        mode=settings.response_cache, ttl_s=settings.cache_ttl_s, l1_entries=settings.cache_l1_entries,
        semantic=settings.cache_semantic, semantic_min_similarity=settings.cache_semantic_min_similarity,
        fingerprint=settings_fingerprint(answer_settings(settings, policy))), embed=embed)
