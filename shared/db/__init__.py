"""Database access shared by every AION process: engine, sessions, ORM models, embedded Postgres."""

from .base import Base
from .engine import make_async_engine, make_session_factory, make_sync_engine, sqlalchemy_url
from .models import (
    EMBEDDING_DIM,
    TEXT_SEARCH_CONFIG,
    AiEvent,
    ApiKey,
    Chunk,
    Conversation,
    ConversationTurn,
    Document,
    EvalRun,
    GeneratedImage,
    KnowledgeVersion,
    RateBucket,
    ResponseCacheEntry,
    WebPage,
)
from .settings import DatabaseSettings

__all__ = [
    "EMBEDDING_DIM",
    "TEXT_SEARCH_CONFIG",
    "AiEvent",
    "ApiKey",
    "Base",
    "Chunk",
    "Conversation",
    "ConversationTurn",
    "DatabaseSettings",
    "Document",
    "EvalRun",
    "GeneratedImage",
    "KnowledgeVersion",
    "RateBucket",
    "ResponseCacheEntry",
    "WebPage",
    "make_async_engine",
    "make_session_factory",
    "make_sync_engine",
    "sqlalchemy_url",
]
