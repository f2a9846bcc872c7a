"""`aion inference` — serve the local model (native and OpenAI-compatible APIs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inference", help="start the inference service (default 127.0.0.1:8008)")
    p.add_argument("--host", help="bind address (env AION_HOST)")
    p.add_argument("--port", type=int, help="port (env AION_PORT)")
    p.add_argument("--embeddings-only", action="store_true", default=None,
                   help="load no chat model: serve /v1/embeddings and /health only, beside vLLM or another "
                        "chat server (env AION_EMBEDDINGS_ONLY)")
    p.add_argument("--convert-only", action="store_true",
                   help="prepare the base model (convert the packaged GGUF once into AION_MODEL_CACHE_DIR), "
                        "print the folder another server such as vLLM can load, and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from services.inference.main import create_app
    from services.inference.settings import InferenceSettings
    from shared.library_noise import silence_known_noise
    from shared.logging import configure_logging

    silence_known_noise()  # --convert-only loads transformers without create_app
    overrides = {k: v for k, v in {"AION_HOST": args.host, "AION_PORT": args.port,
                                   "AION_EMBEDDINGS_ONLY": args.embeddings_only}.items() if v is not None}
    settings = InferenceSettings(**overrides)
    configure_logging(settings.log_level, settings.log_json)
    if args.convert_only:
        import sys

        from services.inference.loader import resolve_base_model

        sys.stdout.write(resolve_base_model(settings.base_model, settings.cache_dir()) + "\n")
        return 0
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)
    return 0
