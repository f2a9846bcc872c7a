"""The command line against a real gateway: `aion ask` (sources once and by score, English warnings,
`--json` for scripts) and `aion chat` (streamed answers continuing one stored conversation)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.chat.conftest import new_key
from tests.fixtures.openai_standin import REPLY
from tests.fixtures.servers import REPO

pytestmark = pytest.mark.slow

QUESTION = "At what temperature do the greenhouse roof vents open?"
FOLLOW_UP = "And when do they close?"
SOURCE_LINE = re.compile(r"^  ((?:\[\d+\])+) (.+)  \((\d\.\d{3})\)$")


def aion(env: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aion", *args], cwd=REPO, env=env, input=stdin, capture_output=True,
                          text=True, timeout=300)


def cli_env(url: str, key: str) -> dict:
    return {**os.environ, "AION_API_KEY": key, "AION_GATEWAY_URL": url, "PYTHONPATH": str(REPO)}


def test_aion_ask_lists_each_source_once_by_score_and_warns_in_english(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_FALLBACK_BASE_URL": standin.url,
           "AION_FALLBACK_MODEL": "ok", "AION_AUTH": "on", "AION_TAU_CONFIDENCE": 0.3}
    with chat_gateway(**env) as url:
        # τ above any match (an admin's option): the low-confidence warning, then the fallback answers.
        done = aion(cli_env(url, new_key(clean_db, "admin")), "ask", "--tau", "0.99", QUESTION)
    assert done.returncode == 0, done.stderr
    assert REPLY in done.stdout and "(fallback model · retrieval match 0." in done.stdout
    assert re.search(r"^warning: the documents match this question only weakly \(retrieval match 0\.\d\d, below "
                     r"the threshold 0\.99\)", done.stderr, re.MULTILINE), done.stderr
    assert "low_confidence" not in done.stderr + done.stdout and "aviso" not in done.stderr + done.stdout

    listed = done.stdout.split("\nSources:\n", 1)[1].splitlines()
    rows = [SOURCE_LINE.match(line) for line in listed]
    assert rows and all(rows), listed
    labels = [m.group(2) for m in rows]
    scores = [float(m.group(3)) for m in rows]
    assert scores == sorted(scores, reverse=True), listed
    assert len(set(labels)) == len(labels), listed  # each place once
    numbers = [int(n) for m in rows for n in re.findall(r"\d+", m.group(1))]
    assert sorted(numbers) == list(range(1, len(numbers) + 1)), listed  # every passage cited [n] is listed
    for label in labels:  # "Greenhouse operations — Greenhouse operations > Ventilation" said the title twice
        title, _, where = label.partition(" — ")
        assert title not in where, label
    assert any(label.startswith("Greenhouse operations — ") for label in labels), labels


def test_aion_ask_json_prints_one_object_for_scripts(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_AUTH": "on",
           "AION_TAU_CONFIDENCE": 0.3}
    with chat_gateway(**env) as url:
        done = aion(cli_env(url, new_key(clean_db, "user")), "ask", "--json", QUESTION)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)  # all of stdout is the one object
        assert out["answer"] == REPLY and out["used"] == "local" and out["kind"] == "generated"
        assert 0.3 <= out["confidence"] <= 1 and out["request_id"] and out["conversation_id"]
        scores = [s["score"] for s in out["sources"]]
        assert scores and scores == sorted(scores, reverse=True)
        assert {"n", "title", "label", "page_or_heading", "score", "document", "text"} <= set(out["sources"][0])
        assert out["warnings"] == [] and out["usage"]["completion_tokens"] > 0

        refused = aion(cli_env(url, "aion_wrong_key"), "ask", "--json", QUESTION)
        assert refused.returncode == 1 and refused.stdout == "" and refused.stderr.startswith("aion: ")


class ChatProcess:
    """`aion chat` with piped input; what it writes is collected as it arrives, with arrival times."""

    def __init__(self, env: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "aion", "chat"], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.chunks: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            with self._lock:
                self.chunks.append((time.monotonic(), chunk.decode("utf-8", "replace")))

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(c for _, c in self.chunks)

    def say(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.text, re.MULTILINE)) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} (x{count}) in:\n{self.text}")
            time.sleep(0.05)


def test_aion_chat_streams_each_answer_and_continues_one_conversation(chat_gateway, clean_db) -> None:
    # The real local model (48 tokens): its words arrive one by one, over a second or more.
    with chat_gateway(AION_AUTH="on", AION_TAU_CONFIDENCE=0.3) as url:
        key = new_key(clean_db, "user")
        chat = ChatProcess(cli_env(url, key))
        try:
            chat.say(QUESTION)
            chat.wait_for(r"^\(local model · ")  # the first answer is complete before the next line is read
            chat.say("")  # blank lines are skipped
            chat.say(FOLLOW_UP)
            chat.wait_for(r"^\(local model · ", count=2)
            chat.say("/exit")
            assert chat.proc.wait(60) == 0, chat.proc.stderr.read().decode() if chat.proc.stderr else ""
        finally:
            if chat.proc.poll() is None:
                chat.proc.kill()
        text = chat.text
        ids = re.findall(r"conversation ([0-9a-f-]{36})", text)
        assert len(set(ids)) == 1, text  # both answers, one conversation
        assert text.count("(continue this conversation later: aion chat --conversation ") == 1, text
        assert text.count("\nSources:\n") == 2, text

        # Streamed: the first answer's words came in several writes before its closing line.
        first_done = next(i for i, (_, c) in enumerate(chat.chunks)
                          if "(local model · " in "".join(x for _, x in chat.chunks[:i + 1]))
        answer_writes = [c for _, c in chat.chunks[:first_done] if c.strip()]
        assert len(answer_writes) >= 3, chat.chunks[:first_done + 1]

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            listed = c.get("/api/ai/conversations").json()
            assert [(item["id"], item["turn_count"]) for item in listed["items"]] == [(ids[0], 4)]
            turns = c.get(f"/api/ai/conversations/{ids[0]}").json()["turns"]
        assert [t["content"] for t in turns if t["role"] == "user"] == [QUESTION, FOLLOW_UP]


ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>])")


class Terminal:
    """`aion chat` on a pseudo-terminal, as a person runs it: keys in, the screen's text out."""

    def __init__(self, env: dict, *args: str) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "aion", "chat", *args], cwd=REPO, env=env, stdin=slave,
                                     stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.screen = ""

    def keys(self, data: str) -> None:
        os.write(self.master, data.encode())

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 120) -> int:
        """Where `pattern` ends on the screen, looking past `after` (the prompt is redrawn as keys come)."""
        import select

        deadline = time.monotonic() + timeout
        while not (found := re.compile(pattern).search(self.screen, after)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} after {after} on the screen:\n{self.screen}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.screen += ANSI.sub("", os.read(self.master, 65536).decode("utf-8", "replace"))
                except OSError:  # the child closed the terminal
                    time.sleep(0.1)
        return found.end()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def test_aion_chat_at_a_terminal_recalls_questions_and_ends_on_ctrl_d_or_ctrl_c(chat_gateway, clean_db, standin,
                                                                               tmp_path) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_AUTH": "on", "AION_TAU_CONFIDENCE": 0.3}
    with chat_gateway(**env) as url:
        key = new_key(clean_db, "user")
        history = tmp_path / "state" / "chat_history"
        term_env = {**cli_env(url, key), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1",
                    "AION_CHAT_HISTORY": str(history)}
        term = Terminal(term_env)
        try:
            at = term.wait_for(r"you>")
            term.keys(QUESTION + "\r")
            at = term.wait_for(r"you>", term.wait_for(r"\(local model · ", at))
            term.keys("\x1b[A\r")  # arrow up: the last question again, from the prompt's history
            at = term.wait_for(r"you>", term.wait_for(r"\(local model · ", at))
            term.keys("\x04")  # Ctrl-D
            assert term.proc.wait(30) == 0
            term.wait_for(r"bye", at)
        finally:
            term.close()
        assert "Traceback" not in term.screen
        assert QUESTION in history.read_text()
        conversation = re.findall(r"conversation ([0-9a-f-]{36})", term.screen)[0]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            turns = c.get(f"/api/ai/conversations/{conversation}").json()["turns"]
        assert [t["content"] for t in turns if t["role"] == "user"] == [QUESTION, QUESTION]

        again = Terminal(term_env, "--conversation", conversation)
        try:
            at = again.wait_for(rf"conversation {conversation}\.[\s\S]*you>")
            again.keys("\x03")  # Ctrl-C at the prompt
            assert again.proc.wait(30) == 0
            again.wait_for(r"bye", at)
        finally:
            again.close()
        assert "Traceback" not in again.screen
