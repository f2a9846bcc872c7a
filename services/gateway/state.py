"""What the lifespan builds once and routes reach through dependencies."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .chat_setup import ChatParts
from .clients.backends import InferenceBackend
from .clients.inference import InferenceClient
from .services.answer import AnswerService
from .services.budget import BudgetGuard
from .services.conversations import ConversationStore
from .services.export import Exporter
from .services.images import ImageStudio
from .services.system_status import SystemStatus
from .services.tokens import TokenCounter
from .services.webpages import WebIngestor
from .settings import GatewaySettings


@dataclass
class GatewayState:
    settings: GatewaySettings
    database_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    inference: InferenceClient
    token_counter: TokenCounter
    chat: ChatParts
    images: ImageStudio
    web: WebIngestor
    system: SystemStatus

    @property
    def answers(self) -> AnswerService:
        return self.chat.answers

    @property
    def conversations(self) -> ConversationStore:
        return self.chat.conversations

    @property
    def budget(self) -> BudgetGuard:
        return self.chat.budget

    @property
    def exporter(self) -> Exporter:
        return self.chat.exporter

    @property
    def admin(self) -> InferenceBackend:
        return self.chat.admin
