"""`aion` — one console script; each subcommand lives in its own module under aion/commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines register(subparsers) and sets `func` on its parser(s).
COMMAND_MODULES = [
    "aion.commands.up",
    "aion.commands.inference",
    "aion.commands.gateway",
    "aion.commands.scheduler",
    "aion.commands.trainer",
    "aion.commands.db",
    "aion.commands.keys",
    "aion.commands.ingest",
    "aion.commands.search",
    "aion.commands.ask",
    "aion.commands.chat",
    "aion.commands.eval",
    "aion.commands.export",
    "aion.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aion", description="AION: answers from your own documents.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
