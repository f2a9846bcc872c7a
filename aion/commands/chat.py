"""`aion chat` — a conversation with your documents in the terminal.

Answers stream in as the model writes them (the gateway's SSE stream); the server keeps the history, so
every question after the first continues one stored conversation (its id comes with the first answer;
`--conversation ID` picks up an earlier one). At a terminal the prompt has line editing and recalls
earlier questions with the arrow keys (prompt_toolkit); piped input is read line by line, so scripts
and tests can drive it. /exit, Ctrl-D or Ctrl-C at the prompt end it; Ctrl-C during an answer stops
that answer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

EXIT_COMMANDS = frozenset({"/exit", "/quit", "/bye"})
HELP = ("/exit (or Ctrl-D): leave · /new: start a new conversation · /help: this line · "
        "Ctrl-C stops an answer, or leaves at the prompt")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="talk with your documents in the terminal (answers streamed; /exit leaves)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversation", metavar="ID", help="continue this stored conversation")
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ._http import ClientSettings, gateway_client

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    read = terminal_reader(ClientSettings().chat_history) if interactive else plain_reader(sys.stdin)
    with gateway_client(args.url, 600.0) as client:
        return converse(client, read, sys.stdout, sys.stderr, conversation=args.conversation,
                        interactive=interactive)


def converse(client, read: Callable[[], str], out: TextIO, err: TextIO, *, conversation: str | None = None,
             interactive: bool = False) -> int:
    """Ask each line `read` returns until /exit, end of input or Ctrl-C; 0 unless an answer failed
    with piped input (a person at the prompt sees the error and goes on)."""
    import httpx

    from ._answer import Streamed, stream_answer
    from ._http import unreachable

    if interactive:
        where = f"conversation {conversation}" if conversation else "a new conversation"
        out.write(f"aion chat with {client.base_url} — {where}. {HELP}\n")
    failed = False
    while True:
        try:
            line = read()
        except (EOFError, KeyboardInterrupt):
            break
        question = line.strip()
        if not question:
            continue
        if question.lower() in EXIT_COMMANDS:
            break
        if question == "/new":
            conversation = None
            out.write("(your next question starts a new conversation)\n")
            continue
        if question == "/help":
            out.write(HELP + "\n")
            continue
        if question.startswith("/"):
            err.write(f"aion chat: unknown command {question.split()[0]}; {HELP}\n")
            continue
        body: dict = {"message": question}
        if conversation:
            body["conversation_id"] = conversation
        result = Streamed(conversation_id=conversation)
        try:
            stream_answer(client, body, out, err, result)
        except httpx.ConnectError as exc:
            return unreachable(client, exc)
        except httpx.HTTPError as exc:
            err.write(f"\naion chat: the gateway did not answer: {type(exc).__name__}: {exc}\n")
        except KeyboardInterrupt:
            out.write("\n(answer stopped)\n")
        if result.done is None:
            failed = True
        if result.conversation_id and result.conversation_id != conversation:
            conversation = result.conversation_id
            out.write(f"(continue this conversation later: aion chat --conversation {conversation})\n")
        out.write("\n")
        out.flush()
    if interactive:
        out.write("bye\n")
    return 1 if failed and not interactive else 0


def plain_reader(stream: TextIO) -> Callable[[], str]:
    """Lines of piped input; EOFError at its end."""
    def read() -> str:
        line = stream.readline()
        if not line:
            raise EOFError
        return line
    return read


def terminal_reader(history_file: str) -> Callable[[], str]:
    """prompt_toolkit's prompt: line editing, and earlier questions recalled with the arrow keys (kept in
    `history_file`, or in memory when it is empty). Ctrl-D raises EOFError, Ctrl-C KeyboardInterrupt."""
    from pathlib import Path

    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory

    history: History = InMemoryHistory()
    if history_file:
        path = Path(history_file).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
            history = FileHistory(str(path))
        except OSError as exc:
            sys.stderr.write(f"aion chat: questions are kept for this session only ({path}: {exc.strerror})\n")
    session: PromptSession[str] = PromptSession(history=history)
    return lambda: session.prompt("you> ")
