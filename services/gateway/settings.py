"""Typed settings of the gateway (env names fixed by the owner's notes where they exist)."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.db.settings import DatabaseSettings

from .export_settings import ExportPolicySettings
from .services.extract import ExtractLimits
from .services.pricing import DEFAULT_PRICES
from .services.prompt import DEFAULT_RAG_SYSTEM_PROMPT, DEFAULT_RAG_SYSTEM_PROMPT_EN
from .services.retrieval import Arms


class GatewaySettings(DatabaseSettings, ExportPolicySettings):
    host: str = Field(default="127.0.0.1", validation_alias="AION_GATEWAY_HOST")
    port: int = Field(default=3000, ge=1, le=65535, validation_alias="AION_GATEWAY_PORT")
    migrate_on_start: bool = Field(default=True, validation_alias="AION_DB_MIGRATE_ON_START")

    # Inference service (OpenAI dialect); the token is sent as a Bearer when set.
    local_llm_url: str = Field(default="http://127.0.0.1:8008", validation_alias="AION_LOCAL_LLM_URL")
    # What serves chat at AION_LOCAL_LLM_URL: AION's inference service, or vLLM's OpenAI server (adapters
    # loaded through its own API and chosen per request by name; see clients/backends.py).
    inference_backend: Literal["aion", "vllm"] = Field(default="aion", validation_alias="AION_INFERENCE_BACKEND")
    # Where /v1/embeddings is served; unset: AION_LOCAL_LLM_URL. With vLLM for chat, an AION inference
    # service started with --embeddings-only (or any OpenAI-compatible embeddings server, 384 dimensions).
    embeddings_url: str | None = Field(default=None, validation_alias="AION_EMBEDDINGS_URL")
    # repr=False on every secret: a settings object that ends up in a log or a traceback shows no secret.
    inference_token: str | None = Field(default=None, repr=False, validation_alias="AION_INFERENCE_TOKEN")
    inference_timeout_s: float = Field(default=120.0, gt=0, validation_alias="AION_INFERENCE_TIMEOUT")
    # The inference service takes at most 256 inputs per call; fewer per call keeps each reply small.
    embed_batch_size: int = Field(default=128, ge=1, le=256, validation_alias="AION_EMBED_BATCH_SIZE")

    # Ingestion.
    chunk_tokens: int = Field(default=200, ge=32, le=2048, validation_alias="AION_CHUNK_TOKENS")
    chunk_overlap: int = Field(default=40, ge=0, le=1024, validation_alias="AION_CHUNK_OVERLAP")
    # "auto": the embedding model's own tokenizer when its files are installed, else an estimate.
    tokenizer: str = Field(default="auto", validation_alias="AION_TOKENIZER")
    max_upload_mb: float = Field(default=20.0, gt=0, validation_alias="AION_MAX_UPLOAD_MB")
    max_upload_files: int = Field(default=32, ge=1, le=1000, validation_alias="AION_MAX_UPLOAD_FILES")
    # Limits on what one .pdf or .docx may expand to while its text is extracted (decompression bombs).
    extract_max_uncompressed_mb: float = Field(default=100.0, gt=0, validation_alias="AION_EXTRACT_MAX_UNCOMPRESSED_MB")
    extract_max_pages: int = Field(default=2000, ge=1, validation_alias="AION_EXTRACT_MAX_PAGES")
    extract_timeout_s: float = Field(default=60.0, gt=0, validation_alias="AION_EXTRACT_TIMEOUT")

    # Retrieval (seed defaults: ANN top 24 -> MMR 8, lambda 0.7).
    top_n: int = Field(default=24, ge=1, le=200, validation_alias="AION_TOP_N")
    top_k: int = Field(default=8, ge=1, le=50, validation_alias="AION_TOP_K")
    mmr_lambda: float = Field(default=0.7, ge=0.0, le=1.0, validation_alias="AION_MMR_LAMBDA")
    # Passages this similar to one already chosen are near-copies and are skipped (see services/mmr.py).
    mmr_duplicate_similarity: float = Field(default=0.93, gt=0.0, le=1.0, validation_alias="AION_MMR_DUPLICATE_SIM")
    # 100, not pgvector's 40: at 100k chunks recall@10 changed from one index build to the next, 0.958-0.983
    # at 40, 0.971-0.994 at 64, 0.989-0.999 at 100, which costs ~0.3 ms a query more than 40
    # (docs/benchmarks.md); the query's embedding takes ~25 ms.
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000, validation_alias="AION_HNSW_EF_SEARCH")
    max_query_chars: int = Field(default=2000, ge=1, validation_alias="AION_MAX_QUERY_CHARS")
    # Hybrid retrieval: each arm's weight in the reciprocal rank fusion (0 switches the arm off; the text
    # arm still answers alone when the query cannot be embedded), and RRF's k (services/fusion.py).
    retrieval_vector_weight: float = Field(default=1.0, ge=0.0, le=10.0, validation_alias="AION_RETRIEVAL_VECTOR_WEIGHT")
    retrieval_text_weight: float = Field(default=1.0, ge=0.0, le=10.0, validation_alias="AION_RETRIEVAL_TEXT_WEIGHT")
    retrieval_rrf_k: int = Field(default=60, ge=1, le=1000, validation_alias="AION_RETRIEVAL_RRF_K")
    # The text arm ranks at most about this many matching chunks: its rarest words are kept while the
    # rows they match stay under it (repositories/chunks.py); more costs ~1 ms per ~1,500 rows.
    retrieval_text_max_rows: int = Field(default=5000, ge=100, le=1_000_000,
                                         validation_alias="AION_RETRIEVAL_TEXT_MAX_ROWS")

    # Answer routing (seed names): local when C >= tau, else the budgeted fallback.
    tau_confidence: float = Field(default=0.62, ge=0.0, le=1.0, validation_alias="AION_TAU_CONFIDENCE")
    # The most the fallback's share of answers in a budget period may reach.
    tau_fallback: float = Field(default=0.18, ge=0.0, le=1.0, validation_alias="AION_TAU_FALLBACK")
    # Kept for the seed's retrieval-quality alarm (nDCG); read but not yet used by the answer path.
    tau_ndcg: float = Field(default=0.82, ge=0.0, le=1.0, validation_alias="AION_TAU_NDCG")
    # The system prompt's opening for Portuguese questions (the owner's) and for English ones.
    rag_system_prompt: str = Field(default=DEFAULT_RAG_SYSTEM_PROMPT, validation_alias="AION_RAG_SYSTEM_PROMPT")
    rag_system_prompt_en: str = Field(default=DEFAULT_RAG_SYSTEM_PROMPT_EN, validation_alias="AION_RAG_SYSTEM_PROMPT_EN")
    # "auto": the prompt speaks the question's language; "pt" or "en" pins one for every question.
    prompt_language: Literal["auto", "pt", "en"] = Field(default="auto", validation_alias="AION_PROMPT_LANGUAGE")
    # When neither the question nor its passages tell the language (the owner writes Portuguese).
    default_language: Literal["pt", "en"] = Field(default="pt", validation_alias="AION_DEFAULT_LANGUAGE")

    # What the prompt gives the local model: at most this many passages, together at most this many
    # tokens (and never over a quarter of the model's context). The packaged 135M model answers best
    # from 2-3 short passages (docs/benchmarks.md); a 7B model on a GPU host takes 6-8.
    prompt_max_passages: int = Field(default=3, ge=1, le=50, validation_alias="AION_PROMPT_MAX_PASSAGES")
    prompt_passage_tokens: int = Field(default=600, ge=64, le=100_000, validation_alias="AION_PROMPT_PASSAGE_TOKENS")
    # The local model's context length; 0: ask its server (/v1/models `max_model_len`), 2048 if it does not say.
    local_context_tokens: int = Field(default=0, ge=0, le=10_000_000, validation_alias="AION_LOCAL_CONTEXT_TOKENS")
    # A local answer whose passages back less than this share of it (services/support.py) is re-answered
    # by the fallback when allowed, else replaced by the passages' own sentences, quoted. 0: never.
    support_threshold: float = Field(default=0.6, ge=0.0, le=1.0, validation_alias="AION_SUPPORT_THRESHOLD")
    # Each citation mark is checked against the sentence it ends as the answer streams (at the support
    # threshold): a passage that does not back it is replaced by one that does; a number naming no
    # passage the model was given is dropped (services/citations.py).
    check_citations: bool = Field(default=True, validation_alias="AION_CHECK_CITATIONS")
    # Below τ with no fallback: "not_found" says the documents do not seem to cover it (quoting the
    # closest passages); "local" lets the local model try anyway (its answer is still support-checked).
    low_confidence_answer: Literal["not_found", "local"] = Field(default="not_found",
                                                                 validation_alias="AION_LOW_CONFIDENCE_ANSWER")
    # Follow-ups are rewritten into standalone questions by the local model with at most this many
    # tokens (0: by the deterministic rule only).
    rewrite_max_tokens: int = Field(default=48, ge=0, le=512, validation_alias="AION_REWRITE_MAX_TOKENS")
    # The most characters of model input (all messages) an answer event records. A longer conversation is
    # logged without its messages (marked `messages_omitted`) and never exported: rows are either exact or absent.
    answer_log_max_chars: int = Field(default=64_000, ge=1_000, le=2_000_000,
                                      validation_alias="AION_ANSWER_LOG_MAX_CHARS")

    # The local model, spoken to in the OpenAI dialect (so vLLM/TGI/Ollama can stand in for it).
    local_chat_url: str | None = Field(default=None, validation_alias="AION_LOCAL_CHAT_URL")
    local_model: str = Field(default="default", validation_alias="AION_LOCAL_MODEL")
    local_max_tokens: int = Field(default=512, ge=1, le=8192, validation_alias="AION_LOCAL_MAX_TOKENS")
    local_temperature: float = Field(default=0.5, ge=0.0, le=2.0, validation_alias="AION_LOCAL_TEMPERATURE")
    # Small local models loop ("AION is … AION is …"); a penalty on what they already generated stops it.
    local_frequency_penalty: float = Field(default=0.5, ge=-2.0, le=2.0,
                                           validation_alias="AION_LOCAL_FREQUENCY_PENALTY")
    local_retries: int = Field(default=1, ge=0, le=5, validation_alias="AION_LOCAL_RETRIES")

    # The paid fallback: any OpenAI-compatible API; off unless a key or a base URL is given.
    openai_api_key: str | None = Field(default=None, repr=False, validation_alias="OPENAI_API_KEY")
    fallback_base_url: str | None = Field(default=None, validation_alias="AION_FALLBACK_BASE_URL")
    fallback_model: str = Field(default="gpt-4o-mini", validation_alias="AION_FALLBACK_MODEL")
    fallback_timeout_s: float = Field(default=60.0, gt=0, validation_alias="AION_FALLBACK_TIMEOUT")
    fallback_retries: int = Field(default=2, ge=0, le=10, validation_alias="AION_FALLBACK_RETRIES")
    fallback_max_tokens: int = Field(default=512, ge=1, le=16384, validation_alias="AION_FALLBACK_MAX_TOKENS")
    fallback_temperature: float = Field(default=0.3, ge=0.0, le=2.0, validation_alias="AION_FALLBACK_TEMPERATURE")
    # USD per million (input, output) tokens, by model name or prefix; JSON in the environment.
    fallback_prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES),
                                                            validation_alias="AION_FALLBACK_PRICES")
    # For a model missing from the table: deliberately expensive, so an unknown price never under-bills.
    fallback_unknown_price: tuple[float, float] = Field(default=(10.0, 30.0),
                                                        validation_alias="AION_FALLBACK_UNKNOWN_PRICE")

    # Budget: a USD cap per period, enforced atomically in Postgres.
    budget_usd: float = Field(default=5.0, ge=0.0, validation_alias="AION_BUDGET_USD")
    budget_period: Literal["month", "day"] = Field(default="month", validation_alias="AION_BUDGET_PERIOD")
    # The share cap (AION_TAU_FALLBACK) applies once a period has this many answers.
    fallback_share_min_answers: int = Field(default=20, ge=0, validation_alias="AION_FALLBACK_SHARE_MIN_ANSWERS")
    stale_reservation_s: float = Field(default=600.0, gt=0, validation_alias="AION_BUDGET_STALE_RESERVATION_SECONDS")

    # A USD share of AION_BUDGET_USD that one API key may spend per period (1: no per-key cap).
    budget_key_share: float = Field(default=1.0, gt=0.0, le=1.0, validation_alias="AION_BUDGET_KEY_SHARE")

    # Response cache (services/response_cache.py): "all" answers, paid "fallback" answers only, or "off".
    response_cache: Literal["all", "fallback", "off"] = Field(default="all", validation_alias="AION_RESPONSE_CACHE")
    cache_ttl_s: float = Field(default=86_400.0, gt=0, validation_alias="AION_CACHE_TTL")
    # L1: answers kept in this process's memory (paid ones outlive free ones); 0: Postgres (L2) only.
    cache_l1_entries: int = Field(default=1024, ge=0, le=1_000_000, validation_alias="AION_CACHE_L1_ENTRIES")
    # Reuse the answer of a question this close in meaning (cosine similarity of MiniLM embeddings, same
    # knowledge, adapter and history). Off: a paraphrase can be one word away from another question.
    cache_semantic: bool = Field(default=False, validation_alias="AION_CACHE_SEMANTIC")
    cache_semantic_min_similarity: float = Field(default=0.95, gt=0.0, le=1.0,
                                                 validation_alias="AION_CACHE_SEMANTIC_MIN_SIMILARITY")

    # Learning loop: the export file (seed name) and where adapters live.
    events_jsonl: Path | None = Field(default=None, validation_alias="AION_EVENTS_JSONL")
    train_root: Path | None = Field(default=None, validation_alias="AION_TRAIN_ROOT")
    adapter_dir: Path | None = Field(default=None, validation_alias="AION_ADAPTER_DIR")

    # Image generation: the inference service's /v1/images/generations (AION_LOCAL_LLM_URL unless set),
    # files kept under AION_IMAGES_DIR (default <AION_DATA_DIR>/images), metadata in Postgres.
    images_url: str | None = Field(default=None, validation_alias="AION_IMAGES_URL")
    images_timeout_s: float = Field(default=900.0, gt=0, validation_alias="AION_IMAGES_TIMEOUT")
    images_dir: Path | None = Field(default=None, validation_alias="AION_IMAGES_DIR")
    image_max_side: int = Field(default=1024, ge=64, le=4096, validation_alias="AION_IMAGE_MAX_SIDE")
    image_max_steps: int = Field(default=100, ge=1, le=100_000, validation_alias="AION_IMAGE_MAX_STEPS")

    # Web pages as documents: only hosts on the allowlist (comma-separated; `*.example.com` for its
    # subdomains), never an address in a loopback, private or link-local range unless its network is
    # listed in AION_URL_ALLOW_NETWORKS; robots.txt honoured; each host paced and capped.
    url_allowlist: str = Field(default="", validation_alias="AION_URL_ALLOWLIST")
    url_allow_networks: str = Field(default="", validation_alias="AION_URL_ALLOW_NETWORKS")
    url_max_mb: float = Field(default=10.0, gt=0, validation_alias="AION_URL_MAX_MB")
    url_timeout_s: float = Field(default=30.0, gt=0, validation_alias="AION_URL_TIMEOUT")
    url_host_interval_s: float = Field(default=1.0, ge=0, validation_alias="AION_URL_HOST_INTERVAL")
    url_host_concurrency: int = Field(default=2, ge=1, le=32, validation_alias="AION_URL_HOST_CONCURRENCY")
    url_max_pages: int = Field(default=20, ge=1, le=1000, validation_alias="AION_URL_MAX_PAGES")
    url_max_depth: int = Field(default=2, ge=0, le=5, validation_alias="AION_URL_MAX_DEPTH")
    url_max_redirects: int = Field(default=5, ge=0, le=20, validation_alias="AION_URL_MAX_REDIRECTS")
    url_user_agent: str = Field(default="AION/0.1 (self-hosted knowledge base)", min_length=1,
                                validation_alias="AION_URL_USER_AGENT")

    # Security. API keys (`aion keys create`) on every /api and /v1 call; "off" only on a loopback bind.
    auth: Literal["on", "off"] = Field(default="on", validation_alias="AION_AUTH")
    # Browser origins allowed to call the API from other sites, comma-separated; empty: none (no CORS).
    cors_origins: str = Field(default="", validation_alias="AION_CORS_ORIGINS")
    # Cap on a request body; document uploads get AION_MAX_UPLOAD_MB x AION_MAX_UPLOAD_FILES instead.
    max_body_mb: float = Field(default=1.0, gt=0, validation_alias="AION_MAX_BODY_MB")
    # Token buckets (rate per minute, burst): per key for chat and for the other routes, and per client
    # IP for every API call (checked before the key, so guessing keys is throttled too). 0: no limit.
    rate_chat_per_min: float = Field(default=30.0, ge=0, validation_alias="AION_RATE_CHAT_PER_MIN")
    rate_chat_burst: int = Field(default=10, ge=1, validation_alias="AION_RATE_CHAT_BURST")
    rate_api_per_min: float = Field(default=300.0, ge=0, validation_alias="AION_RATE_API_PER_MIN")
    rate_api_burst: int = Field(default=60, ge=1, validation_alias="AION_RATE_API_BURST")
    rate_ip_per_min: float = Field(default=600.0, ge=0, validation_alias="AION_RATE_IP_PER_MIN")
    rate_ip_burst: int = Field(default=120, ge=1, validation_alias="AION_RATE_IP_BURST")

    # Signed tokens (POST /api/auth/token exchanges an API key for one; the pages keep it instead of
    # the key). HS256 with AION_JWT_SECRET, or RS256 with a PEM key pair; neither: a secret generated
    # once into <AION_DATA_DIR>/jwt-secret (replicas that do not share that folder need AION_JWT_SECRET).
    jwt_secret: str | None = Field(default=None, repr=False, min_length=32, validation_alias="AION_JWT_SECRET")
    jwt_private_key_file: Path | None = Field(default=None, validation_alias="AION_JWT_PRIVATE_KEY_FILE")
    jwt_public_key_file: Path | None = Field(default=None, validation_alias="AION_JWT_PUBLIC_KEY_FILE")
    jwt_ttl_s: int = Field(default=900, ge=30, le=86_400, validation_alias="AION_JWT_TTL")
    # A token may be renewed with itself until this long after the key was exchanged; then the key again.
    jwt_session_max_s: int = Field(default=43_200, ge=60, le=30 * 86_400, validation_alias="AION_JWT_SESSION_MAX")
    # An external identity provider (OpenID Connect or any JWKS-publishing issuer): tokens with this
    # issuer and audience, signed by a key of this JWKS, are accepted; the role comes from a claim.
    jwt_jwks_url: str | None = Field(default=None, validation_alias="AION_JWT_JWKS_URL")
    jwt_issuer: str | None = Field(default=None, validation_alias="AION_JWT_ISSUER")
    jwt_audience: str | None = Field(default=None, validation_alias="AION_JWT_AUDIENCE")
    jwt_role_claim: str = Field(default="aion_role", min_length=1, validation_alias="AION_JWT_ROLE_CLAIM")
    jwt_default_role: Literal["user", "admin"] = Field(default="user", validation_alias="AION_JWT_DEFAULT_ROLE")

    @field_validator("auth", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(lowered, lowered)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin and origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"'{origin}' is not an origin; write scheme://host[:port], e.g. https://app.example.com")
        return value

    @field_validator("url_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in (v.strip() for v in value.split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError as exc:
                    raise ValueError(f"'{item}' is not a network; write CIDRs such as 127.0.0.1/32, "
                                     "comma-separated") from exc
        return value

    @field_validator("url_allowlist")
    @classmethod
    def _hosts(cls, value: str) -> str:
        for item in (v.strip() for v in value.split(",")):
            bracketed_ipv6 = item.startswith("[") and item.endswith("]")
            if item and not bracketed_ipv6 and any(c in item for c in "/:@ "):
                raise ValueError(f"'{item}' is not a host name; list hosts only (no scheme, port or path), "
                                 "e.g. docs.example.com,*.example.org")
        return value

    @field_validator("fallback_prices", "fallback_unknown_price", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"must be JSON, e.g. {{\"gpt-4o-mini\": [0.15, 0.6]}}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"AION_CHUNK_OVERLAP ({self.chunk_overlap}) must be below AION_CHUNK_TOKENS "
                             f"({self.chunk_tokens})")
        if self.retrieval_vector_weight == 0 and self.retrieval_text_weight == 0:
            raise ValueError("AION_RETRIEVAL_VECTOR_WEIGHT and AION_RETRIEVAL_TEXT_WEIGHT are both 0: retrieval "
                             "would find nothing; give at least one arm a weight above 0")
        if self.inference_backend == "vllm" and not self.embeddings_url:
            raise ValueError("AION_INFERENCE_BACKEND=vllm needs AION_EMBEDDINGS_URL: vLLM serves no embeddings "
                             "for a chat model; run `aion inference --embeddings-only` and point it there")
        if self.top_k > self.top_n:
            raise ValueError(f"AION_TOP_K ({self.top_k}) must not exceed AION_TOP_N ({self.top_n})")
        if bool(self.jwt_private_key_file) != bool(self.jwt_public_key_file):
            raise ValueError("RS256 tokens need both AION_JWT_PRIVATE_KEY_FILE and AION_JWT_PUBLIC_KEY_FILE "
                             "(PEM files); set both, or neither to use AION_JWT_SECRET")
        for name, path in (("AION_JWT_PRIVATE_KEY_FILE", self.jwt_private_key_file),
                           ("AION_JWT_PUBLIC_KEY_FILE", self.jwt_public_key_file)):
            if path is not None and not path.expanduser().is_file():
                raise ValueError(f"{name}={path} is not a readable file; give the PEM file's path")
        if self.jwt_jwks_url and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("AION_JWT_JWKS_URL needs AION_JWT_ISSUER and AION_JWT_AUDIENCE: tokens are accepted "
                             "only from that issuer, for that audience")
        if self.jwt_jwks_url and not self.jwt_jwks_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError(f"AION_JWT_JWKS_URL must be an https:// URL (plain http only on this machine), "
                             f"not '{self.jwt_jwks_url}'")
        if self.auth == "off" and not self.binds_loopback():
            raise ValueError(f"AION_AUTH=off is for local development only and needs a loopback bind "
                             f"(AION_GATEWAY_HOST=127.0.0.1, localhost or ::1), not '{self.host}'; keep AION_AUTH=on "
                             "and create a key with `aion keys create --name NAME --role admin`")
        return self

    def binds_loopback(self) -> bool:
        if self.host.strip().lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on"

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def extract_limits(self) -> ExtractLimits:
        return ExtractLimits(max_uncompressed_bytes=int(self.extract_max_uncompressed_mb * 1024 * 1024),
                             max_pages=self.extract_max_pages, timeout_s=self.extract_timeout_s)

    def retrieval_arms(self, vector: float | None = None, text: float | None = None) -> Arms:
        """The fusion's arms from these settings, with per-request weights where given."""
        return Arms(vector=self.retrieval_vector_weight if vector is None else vector,
                    text=self.retrieval_text_weight if text is None else text, rrf_k=self.retrieval_rrf_k,
                    text_max_rows=self.retrieval_text_max_rows)

    def embeddings_base_url(self) -> str:
        return (self.embeddings_url or self.local_llm_url).rstrip("/")

    def chat_url(self) -> str:
        return self.local_chat_url or self.local_llm_url.rstrip("/") + "/v1"

    def fallback_enabled(self) -> bool:
        return bool(self.openai_api_key or self.fallback_base_url)

    def fallback_url(self) -> str:
        return self.fallback_base_url or "https://api.openai.com/v1"

    def export_path(self) -> Path:
        """AION_EVENTS_JSONL, or <AION_DATA_DIR>/trainer/events.jsonl (data stays out of the source tree)."""
        return (self.events_jsonl or self.data_dir / "trainer" / "events.jsonl").expanduser()

    def active_adapter_link(self) -> Path:
        """AION_ADAPTER_DIR: the symlink to the active adapter that a restarted inference serves."""
        root = (self.train_root or self.data_dir / "trainer").expanduser()
        return (self.adapter_dir or root / "adapters" / "active").expanduser()

    def jwt_secret_path(self) -> Path:
        return (self.data_dir / "jwt-secret").expanduser()

    def images_base_url(self) -> str:
        return (self.images_url or self.local_llm_url).rstrip("/")

    def images_path(self) -> Path:
        return (self.images_dir or self.data_dir / "images").expanduser()

    def url_allowed_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().strip("[]").lower().rstrip(".") for h in self.url_allowlist.split(",") if h.strip())

    def url_allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in self.url_allow_networks.split(",")
                     if n.strip())

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
