"""Builds the chat path's collaborators once, in the lifespan: model clients, budget, answer router."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import ServiceUnavailable
from shared.logging import request_id_var

from .clients.chat import ChatClient
from .clients.inference import InferenceClient
from .clients.inference_admin import InferenceAdmin
from .observability import GatewayMetrics
from .repositories.events import insert_event
from .services.answer import AnswerPolicy, AnswerService, RetrievedContext, SourcePassage
from .services.budget import BudgetGuard, BudgetPolicy
from .services.export import Exporter
from .services.retrieval import retrieve
from .settings import GatewaySettings


@dataclass
class ChatParts:
    answers: AnswerService
    budget: BudgetGuard
    exporter: Exporter
    admin: InferenceAdmin
    local: ChatClient
    fallback: ChatClient | None

    async def close(self) -> None:
        await self.local.close()
        if self.fallback:
            await self.fallback.close()
        await self.admin.close()


def build_chat(settings: GatewaySettings, sessions: async_sessionmaker[AsyncSession],
               inference: InferenceClient, metrics: GatewayMetrics | None = None) -> ChatParts:
    async def retrieve_context(tenant_id: str, question: str) -> RetrievedContext:
        try:
            async with sessions.begin() as session:
                found = await retrieve(session, inference, tenant_id, question, k=settings.top_k,
                                       top_n=settings.top_n, lam=settings.mmr_lambda, arms=settings.retrieval_arms(),
                                       duplicate_similarity=settings.mmr_duplicate_similarity,
                                       request_id=request_id_var.get(), max_query_chars=settings.max_query_chars)
        except DBAPIError as exc:
            if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
                raise
            # Down or restarting: the same retryable 503 the other routes give (see main.py).
            raise ServiceUnavailable("the database is unavailable; retry in a few seconds",
                                     code="database_unavailable", headers={"Retry-After": "2"}) from exc
        return RetrievedContext(confidence=found.confidence, warnings=found.warnings, passages=[
            SourcePassage(chunk_id=str(p.chunk_id), document_id=str(p.document_id),
                          title=p.title or p.source_name, page_or_heading=p.page_or_heading, text=p.text,
                          score=p.score) for p in found.passages])

    async def log_event(tenant_id: str, kind: str, value: float, meta: dict[str, Any], request_id: str) -> None:
        async with sessions.begin() as session:
            await insert_event(session, tenant_id, kind, value=value, meta=meta, request_id=request_id)

    local = ChatClient(base_url=settings.chat_url(), api_key=settings.inference_token, model=settings.local_model,
                       timeout_s=settings.inference_timeout_s, max_retries=settings.local_retries)
    fallback = None
    if settings.fallback_enabled():
        fallback = ChatClient(base_url=settings.fallback_url(), api_key=settings.openai_api_key,
                              model=settings.fallback_model, timeout_s=settings.fallback_timeout_s,
                              max_retries=settings.fallback_retries)
    budget = BudgetGuard(sessions, BudgetPolicy(
        cap_usd=settings.budget_usd, period=settings.budget_period, max_fallback_share=settings.tau_fallback,
        share_min_answers=settings.fallback_share_min_answers, stale_reservation_s=settings.stale_reservation_s))
    policy = AnswerPolicy(system_prompt=settings.rag_system_prompt, local_max_tokens=settings.local_max_tokens,
                          local_temperature=settings.local_temperature,
                          local_frequency_penalty=settings.local_frequency_penalty,
                          fallback_max_tokens=settings.fallback_max_tokens,
                          fallback_temperature=settings.fallback_temperature, prices=settings.fallback_prices,
                          unknown_price=settings.fallback_unknown_price)
    answers = AnswerService(retrieve=retrieve_context, log_event=log_event, local=local, fallback=fallback,
                            budget=budget, policy=policy, on_answer=metrics.observe_answer if metrics else None)
    return ChatParts(answers=answers, budget=budget, exporter=Exporter(sessions, settings.rag_system_prompt),
                     admin=InferenceAdmin(settings.local_llm_url, settings.inference_token), local=local,
                     fallback=fallback)
