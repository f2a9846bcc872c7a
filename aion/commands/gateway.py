"""`aion gateway` — serve documents, retrieval and chat (default 127.0.0.1:3000)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="start the gateway (default 127.0.0.1:3000)")
    p.add_argument("--host", help="bind address (env AION_GATEWAY_HOST)")
    p.add_argument("--port", type=int, help="port (env AION_GATEWAY_PORT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from services.gateway.main import create_app
    from services.gateway.settings import GatewaySettings
    from shared.logging import configure_logging

    overrides = {k: v for k, v in {"AION_GATEWAY_HOST": args.host, "AION_GATEWAY_PORT": args.port}.items()
                 if v is not None}
    try:
        settings = GatewaySettings(**overrides)
    except ValidationError as exc:
        # Only the messages: pydantic's own rendering echoes the input, which holds the secrets.
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            sys.stderr.write(f"aion gateway: {where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}\n")
        return 2
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)
    return 0
