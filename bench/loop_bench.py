"""Proof that the nightly loop makes answers better: simulated nights on a corpus nobody here wrote.

The corpus is installed packages' READMEs (bench/kb_common.py), ingested through the real gateway.
Questions with known answers are made from sentences of the ingested passages (a sentence with one
word or number blanked out; the blank is the answer), split into training questions and held-out
ones (never asked before the final measurement, about the same documents), plus "absent" questions
made from READMEs that were not ingested (the right reply is "not found").

Each night: training questions are asked through the real gateway; a share is forced to the
fallback, a stand-in teacher that answers correctly from the passages it is given (the sentence
that holds the answer, restated with the right passage cited, or "not found"); the local model answers the rest, and a simulated user
gives a thumbs-up to the local answers that are right. Then the scheduler's nightly export runs,
the trainer worker trains, gates and promotes. A damaged candidate (the same night's rows with
their replies shuffled) is queued as well and must be rejected by the gate. Before the first night
and after each one, the held-out and absent questions go through the gateway's evaluation route
(`aion eval`: never trained on, never cached) at tau 0 (low confidence never routes to the fallback)
and are scored twice: as users get them (the support check may still re-answer an unsupported local
answer with the fallback, or quote the passages) and as the local model answered them itself (the
run keeps a replaced local answer).

    python -m bench.loop_bench --nights 3            # ~1-2 hours on 2 CPU cores
    python -m bench.loop_bench --nights 1 --train-per-night 24 --heldout 16 --absent 6   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from bench.kb_common import RESULTS, CpuMeter, machine, readme_corpus, say
from services.gateway.services.citations import cited_numbers
from services.gateway.services.not_found import fold

TOKEN = "loop-bench-token"
TEACHER_MODEL = "teacher"
TEACHER_SENTENCE_WORDS = 24  # a longer answer would not count as concise (`judge`: <= 25 words)
COMMON = {"The", "This", "These", "That", "There", "When", "With", "Then", "Note", "Also", "Each",
          "Some", "Many", "Most", "Your", "They", "What", "Which", "While", "Here", "From", "Once", "After"}


@dataclass(frozen=True)
class Question:
    text: str
    answer: str | None  # None: the documents do not hold it
    sentence: str  # the sentence the question was made from (with the answer in place)
    doc: str


@dataclass
class Scores:
    asked: int = 0
    exact: int = 0  # a concise answer part (<= 25 words before "Fontes:") that contains the answer
    contains: int = 0  # the answer anywhere in the reply
    cited: int = 0  # exactly the passage holding the sentence cited
    retrieved: int = 0  # that passage was among the sources at all
    absent: int = 0
    not_found: int = 0  # absent questions answered "not found"
    below_tau: int = 0  # C under the default tau: the fallback would have answered at default settings
    # The local model's own answers: at tau 0 low confidence never routes to the fallback, but the
    # support check still replaces an unsupported local answer (fallback or quoted passages); `aion
    # eval` keeps the replaced answer, so the local model is judged on what it wrote itself.
    by_local: int = 0  # answerable questions whose served answer is the local model's (`used == "local"`)
    local_exact: int = 0  # answerable questions the local model itself answered exactly (served or replaced)
    local_cited: int = 0  # ... whose own answer cites exactly the right passage
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, question: Question, result: dict[str, Any], tau_default: float) -> None:
        """One `aion eval` outcome (a result row of POST /api/ai/eval) for `question`, judged and counted."""
        reply = result.get("answer") or ""
        verdict = judge(question, reply, result.get("rank"))
        self.asked += 1
        self.below_tau += (result.get("confidence") or 0.0) < tau_default
        if verdict["absent"]:
            self.absent += 1
            self.not_found += verdict["not_found"]
        else:
            self.exact += verdict["exact"]
            self.contains += verdict["contains"]
            self.retrieved += verdict["retrieved"]
            self.cited += verdict["cited"]
            self.by_local += result.get("used") == "local"
            own = result.get("local_answer") or (reply if result.get("used") == "local" else "")
            mine = judge(question, own, result.get("rank"))
            self.local_exact += mine["exact"]
            self.local_cited += mine["cited"]
        if len(self.samples) < 6:
            self.samples.append({"question": question.text, "answer": question.answer, "reply": reply[:300],
                                 "local_answer": (result.get("local_answer") or "")[:300] or None,
                                 "model": result.get("model"), "used": result.get("used"), **verdict})

    def figures(self) -> dict[str, Any]:
        def rate(n: int, d: int) -> float | None:
            return round(n / d, 4) if d else None
        answerable = self.asked - self.absent
        return {"held_out": answerable, "exact_answer_rate": rate(self.exact, answerable),
                "local_exact_answer_rate": rate(self.local_exact, answerable),
                "local_citation_correct_rate": rate(self.local_cited, self.retrieved),
                "answered_by_local_rate": rate(self.by_local, answerable),
                "contains_answer_rate": rate(self.contains, answerable),
                "citation_correct_rate": rate(self.cited, self.retrieved),
                "retrieval_hit_rate": rate(self.retrieved, answerable), "absent": self.absent,
                "not_found_rate": rate(self.not_found, self.absent),
                "fallback_share_at_default_tau": rate(self.below_tau, self.asked), "seconds": round(self.seconds, 1)}


# ---------------------------------------------------------------- questions from the corpus

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"(?<![\w.\-])\d[\d.,]*\d(?![\w\-])|(?<![\w.\-])\d(?![\w.\-])")
_LIST_MARK = re.compile(r"^([-*+]|\d+[.)])\s+")
_WORD = re.compile(r"(?<=\s)[A-Z][A-Za-z]{3,}(?![\w-])")


def _clean(text: str) -> str:
    return " ".join(text.replace("**", "").replace("`", "").split())


def cloze(sentence: str) -> tuple[str, str] | None:
    """(sentence with one word or number blanked, the answer) for a plain prose sentence, else None."""
    words = sentence.split()
    if (not 9 <= len(words) <= 32 or not sentence[:1].isupper() or not sentence.isascii()
            or any(bad in sentence for bad in ("http", "|", "```", "#", "<", ">", "[", "]", "{", "}", "$", "=", " --",
                                               "...", "____"))):
        return None
    candidates = [m for m in _NUMBER.finditer(sentence) if len(m.group()) <= 8]
    candidates += [m for m in _WORD.finditer(sentence) if m.group() not in COMMON]
    candidates = [m for m in candidates if sentence.count(m.group()) == 1]
    if not candidates:
        return None
    pick = candidates[0]
    return sentence[:pick.start()] + "____" + sentence[pick.end():], pick.group()


def make_question(doc: str, blanked: str) -> str:
    return f'In the {doc.removesuffix(".md")} documentation, what fills the blank: "{blanked}"'


def questions_from_chunks(chunks: list[tuple[str, str]]) -> list[Question]:
    """One question per usable sentence of the ingested passages ((document, chunk text) pairs)."""
    out, seen = [], set()
    for doc, text in chunks:
        for sentence in _SENTENCE.split(_clean(text)):
            sentence = _LIST_MARK.sub("", sentence)
            made = cloze(sentence)
            # `aion eval` finds the passage by the sentence as the passage holds it (markup kept).
            if made is None or sentence in seen or fold(sentence) not in fold(text):
                continue
            seen.add(sentence)
            out.append(Question(make_question(doc, made[0]), made[1], sentence, doc))
    return out


def absent_questions(docs: list[tuple[str, str]], count: int, rng: random.Random) -> list[Question]:
    """Questions made the same way from READMEs that were not ingested: "not found" is right."""
    pool = []
    for name, body in docs:
        for sentence in _SENTENCE.split(_clean(body)):
            sentence = _LIST_MARK.sub("", sentence)
            made = cloze(sentence)
            if made is not None:
                pool.append(Question(make_question(name, made[0]), None, sentence, name))
                break
    rng.shuffle(pool)
    return pool[:count]


# ---------------------------------------------------------------- the teacher (fallback stand-in)

def passages_in(system_message: str) -> list[tuple[int, str]]:
    """(n, text) of the numbered passages of the RAG system message (a passage's text may span lines)."""
    starts, n, pos = [], 1, 0  # (n, where its marker begins, where its text begins)
    while (match := re.compile(rf"(?:^|\n\n)\[{n}\] ").search(system_message, pos)) is not None:
        starts.append((n, match.start(), match.end()))
        pos, n = match.end(), n + 1
    return [(number, system_message[start:starts[i + 1][1] if i + 1 < len(starts) else len(system_message)])
            for i, (number, _, start) in enumerate(starts)]


def teacher_reply(messages: list[dict[str, str]], key: dict[str, Question]) -> str:
    """What a strong model answers from the passages: the answer with the passage that holds it cited, in
    the question's language, as the RAG prompt asks."""
    from services.gateway.services.language import choose_language
    from services.gateway.services.not_found import NOT_FOUND_EN, NOT_FOUND_PT

    question_text = next(m["content"] for m in reversed(messages) if m["role"] == "user").strip()
    not_found = NOT_FOUND_PT if choose_language(question_text) == "pt" else NOT_FOUND_EN
    question = key.get(question_text)
    if question is None or question.answer is None:
        return not_found
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    for n, text in passages_in(system):
        if question.sentence in _clean(text):
            return teacher_answer(question, n)
    return not_found  # retrieval did not bring the passage: the teacher cannot know


def teacher_answer(question: Question, n: int) -> str:
    """A strong model's answer: the passage's sentence restated with the blank filled, cited; a long
    sentence cut to the words around the answer. Restating teaches the adapter to answer in the passage's
    words (a bare word would teach it to drop what surrounds an answer, the "metres" of "31 metres"), and
    a reply the passage backs word for word passes the export's support check ("The missing word is X"
    did not: those rows were dropped as low support)."""
    words = question.sentence.rstrip(" .!?").split()
    if len(words) > TEACHER_SENTENCE_WORDS:
        at = next((i for i, word in enumerate(words) if question.answer and question.answer in word), 0)
        start = max(0, min(at - TEACHER_SENTENCE_WORDS // 2, len(words) - TEACHER_SENTENCE_WORDS))
        words = words[start:start + TEACHER_SENTENCE_WORDS]
    text = " ".join(words).rstrip(" ,;:")
    return f"{text[:1].upper()}{text[1:]} [{n}]."


@contextmanager
def run_teacher(key: dict[str, Question]) -> Iterator[str]:
    from tests.fixtures.servers import run_asgi

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        text = teacher_reply(body["messages"], key)
        usage = {"prompt_tokens": 1000, "completion_tokens": len(text.split()), "total_tokens": 1000}

        async def events():
            for chunk in ({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
                          {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                          {"choices": [], "usage": usage}):
                yield f"data: {json.dumps({'id': 't', 'object': 'chat.completion.chunk', 'created': 0, 'model': TEACHER_MODEL, **chunk}, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    with run_asgi(app) as url:
        yield f"{url}/v1"


# ---------------------------------------------------------------- asking and scoring

def ask(gateway: str, question: Question, *, force_fallback: bool, tau: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": question.text, "forceFallback": force_fallback}
    if tau is not None:
        body["tau"] = tau
    r = httpx.post(f"{gateway}/api/ai/chat", json=body, timeout=600)
    r.raise_for_status()
    return r.json()


def judge(question: Question, reply: str, rank: int | None) -> dict[str, Any]:
    """`reply` to `question`; `rank`: the source number of the passage holding the question's sentence."""
    from services.gateway.services.not_found import is_not_found

    head = reply.split("Fontes:")[0].split("Sources:")[0]
    cited = cited_numbers(reply)
    if question.answer is None:
        return {"absent": True, "not_found": is_not_found(reply)}
    found = re.search(rf"(?<!\w){re.escape(question.answer)}(?!\w)", reply, re.IGNORECASE) is not None
    in_head = re.search(rf"(?<!\w){re.escape(question.answer)}(?!\w)", head, re.IGNORECASE) is not None
    return {"absent": False, "contains": found, "exact": in_head and len(head.split()) <= 25,
            "retrieved": rank is not None, "cited": rank is not None and cited == {rank}}


def eval_question(question: Question) -> dict[str, Any]:
    """The question as a line of an `aion eval` set."""
    if question.answer is None:
        return {"question": question.text, "unanswerable": True}
    return {"question": question.text, "expect_document": question.doc, "expect_passage": question.sentence,
            "answer_contains": [question.answer]}


def measure(gateway: str, questions: list[Question], tau_default: float, label: str) -> Scores:
    """The questions through `aion eval`'s route at tau 0 (low confidence never routes to the fallback):
    its answers are never trained on nor cached, and it keeps a local answer the answer path replaced."""
    scores = Scores()
    started = time.perf_counter()
    r = httpx.post(f"{gateway}/api/ai/eval", json={"questions": [eval_question(q) for q in questions],
                                                   "label": label, "tau": 0.0}, timeout=7200)
    r.raise_for_status()
    for question, result in zip(questions, r.json()["results"], strict=True):
        scores.add(question, result, tau_default)
    scores.seconds = time.perf_counter() - started
    return scores


def shuffled_copy(dataset: Path, out: Path, seed: int) -> Path:
    """The night's rows with their replies shuffled among them: a damaged candidate's training data."""
    rows = [json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines() if line.strip()]
    replies = [r["messages"][-1]["content"] for r in rows]
    random.Random(seed).shuffle(replies)
    with out.open("w", encoding="utf-8") as handle:
        for row, reply in zip(rows, replies, strict=True):
            row["messages"][-1]["content"] = reply
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out


# ---------------------------------------------------------------- the run

async def run(args: argparse.Namespace) -> dict[str, Any]:
    from services.gateway.clients.inference_admin import InferenceAdmin
    from services.gateway.repositories import jobs as jobs_repo
    from services.scheduler.jobs import nightly_export
    from services.scheduler.settings import SchedulerSettings
    from shared.db import make_async_engine, make_session_factory, migrate
    from shared.db.embedded import ensure_embedded_postgres, stop_embedded_postgres
    from tests.fixtures.servers import MODEL_CACHE, ServiceProcess, base_env, free_port, run_inference
    from trainer.settings import TrainerSettings
    from trainer.worker import Worker
    from trainer.worker_settings import WorkerSettings

    rng = random.Random(args.seed)
    docs = [d for d in readme_corpus() if d[0] != "aion.md"]  # this project's own README: we wrote it
    rng.shuffle(docs)
    ingested, others = docs[:args.docs], docs[args.docs:]
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "nights": []}

    with tempfile.TemporaryDirectory(prefix="aion-loop-bench-") as tmp:
        root = Path(tmp)
        pgdata = root / "postgres"
        db = ensure_embedded_postgres(pgdata)
        migrate.upgrade(db)
        train_root = root / "train"
        link = train_root / "adapters" / "active"
        engine = make_async_engine(db, pool_size=4)
        sessions = make_session_factory(engine)
        try:
            with run_inference(root, root / "logs", AION_INFERENCE_TOKEN=TOKEN, AION_ADAPTER_DIR=str(link),
                               AION_THREADS=str(args.threads)) as inference:
                key: dict[str, Question] = {}
                with run_teacher(key) as teacher_url:
                    port = free_port()
                    env = base_env(root, DATABASE_URL=db, AION_LOCAL_LLM_URL=inference.url, AION_INFERENCE_TOKEN=TOKEN,
                                   AION_LOG_LEVEL="WARNING", AION_AUTH="off", AION_RATE_CHAT_PER_MIN="0",
                                   AION_RATE_API_PER_MIN="0", AION_RATE_IP_PER_MIN="0",
                                   AION_FALLBACK_BASE_URL=teacher_url, AION_FALLBACK_MODEL=TEACHER_MODEL,
                                   OPENAI_API_KEY="bench", AION_BUDGET_USD="1000",
                                   AION_FALLBACK_SHARE_MIN_ANSWERS="1000000", AION_TRAIN_ROOT=str(train_root),
                                   AION_ADAPTER_DIR=str(link), AION_LOCAL_TEMPERATURE="0",
                                   AION_LOCAL_MAX_TOKENS=str(args.max_tokens), AION_TOP_K=str(args.top_k))
                    gateway = ServiceProcess(["gateway", "--port", str(port)], env, root / "logs" / "gateway.log",
                                             f"http://127.0.0.1:{port}").start()
                    try:
                        gateway.wait_healthy()
                        gw = gateway.url
                        for start in range(0, len(ingested), 8):  # AION_MAX_UPLOAD_FILES per request at most
                            files = [("files", (name, body.encode(), "text/markdown"))
                                     for name, body in ingested[start:start + 8]]
                            httpx.post(f"{gw}/api/ai/documents", files=files, timeout=900).raise_for_status()
                        from sqlalchemy import text
                        async with sessions() as session:
                            chunks = [(r[0], r[1]) for r in (await session.execute(text(
                                "SELECT d.source_name, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
                                "ORDER BY d.source_name, c.ord"))).all()]
                        pool = questions_from_chunks(chunks)
                        rng.shuffle(pool)
                        heldout = pool[:args.heldout]
                        training = pool[args.heldout:]
                        absent = absent_questions(others, args.absent, rng)
                        for q in pool + absent:
                            key[q.text] = q
                        needed = args.nights * args.train_per_night
                        say(f"corpus: {len(ingested)} READMEs ingested ({len(chunks)} chunks), {len(pool)} questions "
                            f"made ({needed} needed for training, {len(heldout)} held out), {len(absent)} absent")
                        if len(training) < needed:
                            raise SystemExit(f"only {len(training)} training questions; ingest more (--docs)")
                        results["corpus"] = {"documents": [n for n, _ in ingested], "chunks": len(chunks),
                                             "questions": len(pool), "held_out": len(heldout), "absent": len(absent)}

                        worker = Worker(
                            WorkerSettings(DATABASE_URL=db, AION_LOCAL_LLM_URL=inference.url, AION_INFERENCE_TOKEN=TOKEN,
                                           AION_TRAIN_ROOT=str(train_root), AION_ADAPTER_DIR=str(link)),
                            TrainerSettings(AION_DATA_DIR=str(root), AION_MODEL_CACHE_DIR=str(MODEL_CACHE),
                                            AION_TRAIN_DEVICE="cpu", AION_TRAIN_THREADS=args.threads,
                                            AION_TRAIN_MIN_EXAMPLES=args.min_examples),
                            sessions, InferenceAdmin(inference.url, TOKEN, timeout_s=600))
                        scheduler = SchedulerSettings(DATABASE_URL=db, AION_TRAIN_ROOT=str(train_root),
                                                      AION_TRAIN_MIN_EXAMPLES=args.min_examples)
                        eval_set = heldout + absent
                        measured = {1, args.nights} if args.measure_after is None else set(args.measure_after)
                        with CpuMeter(ours={inference.proc.pid, gateway.proc.pid}) as meter:
                            before = measure(gw, eval_set, args.tau, "loop night 0")
                            say(f"night 0 (base): {before.figures()}")
                            results["nights"].append({"night": 0, "adapter": None, **before.figures(),
                                                      "samples": before.samples})
                            for night in range(1, args.nights + 1):
                                results["nights"].append(await one_night(
                                    night, args, gw, training[(night - 1) * args.train_per_night:
                                                               night * args.train_per_night],
                                    eval_set if night in measured else [], sessions, scheduler, worker, jobs_repo,
                                    nightly_export, rng, root))
                        results["others_cores"] = meter.others_cores()
                        await worker.admin.close()
                    finally:
                        gateway.stop()
        finally:
            await engine.dispose()
            stop_embedded_postgres(pgdata)
    measured = [n for n in results["nights"] if "exact_answer_rate" in n]
    first, last = measured[0], measured[-1]
    results["summary"] = {
        "exact_answer_rate": {n["night"]: n["exact_answer_rate"] for n in measured},
        "local_exact_answer_rate": {n["night"]: n.get("local_exact_answer_rate") for n in measured},
        "gain_points": round(100 * ((last["exact_answer_rate"] or 0) - (first["exact_answer_rate"] or 0)), 1),
        "local_gain_points": round(100 * ((last["local_exact_answer_rate"] or 0)
                                          - (first["local_exact_answer_rate"] or 0)), 1),
        "jobs": [(n.get("job") or {}).get("status") if isinstance(n.get("job"), dict) else n.get("job")
                 for n in results["nights"][1:]],
        "damaged": [n.get("damaged", {}).get("status") for n in results["nights"][1:]],
        "grounding_gap": [{"base": _gate_figure(n.get("job"), "base"), "job": _gate_figure(n.get("job"), "candidate"),
                           "damaged": _gate_figure(n.get("damaged"), "candidate")} for n in results["nights"][1:]]}
    return results


def _gate_figure(entry: Any, who: str) -> float | None:
    """A night's job's (or damaged candidate's) grounding gap from its gate report, if it was judged."""
    report = entry.get("gate") if isinstance(entry, dict) else None
    return ((report or {}).get("grounding") or {}).get(who)


async def one_night(night: int, args: argparse.Namespace, gw: str, questions: list[Question],
                    eval_set: list[Question], sessions: Any, scheduler: Any, worker: Any, jobs_repo: Any,
                    nightly_export: Any, rng: random.Random, root: Path) -> dict[str, Any]:
    started = time.perf_counter()
    teacher = local = liked = 0
    for question in questions:
        to_teacher = rng.random() < args.fallback_share
        out = ask(gw, question, force_fallback=to_teacher, tau=None)
        if out["used"] == "fallback":
            teacher += 1
            continue
        local += 1
        verdict = judge(question, out["text"], next((s["n"] for s in out["sources"]
                                                     if fold(question.sentence) in fold(s["text"])), None))
        if verdict.get("exact") and verdict.get("cited"):  # a user who checks the answer gives a thumbs-up
            httpx.post(f"{gw}/api/ai/feedback", json={"request_id": out["request_id"], "rating": "up"},
                       timeout=30).raise_for_status()
            liked += 1
    asked_s = time.perf_counter() - started
    slot = datetime(2030, 1, 1, 0, 5, tzinfo=UTC) + timedelta(days=night)
    detail = await nightly_export(sessions, scheduler, slot)
    job = await worker.run_once()
    report: dict[str, Any] = {"night": night, "asked": len(questions), "teacher": teacher, "local": local,
                              "thumbs_up": liked, "export": {k: detail.get(k) for k in ("rows", "skipped", "since")},
                              "asking_seconds": round(asked_s, 1)}
    if job is None:
        report["job"] = detail.get("training_job")
    else:
        gate = (job["metrics"] or {}).get("gate") or {}
        report["job"] = {"status": job["status"], "adapter": job["adapter_name"], "error": job["error"],
                         "train_seconds": (job["metrics"] or {}).get("train", {}).get("seconds"),
                         "gate": gate.get("report"), "reasons": gate.get("reasons")}
        if args.damaged and job["dataset_path"]:
            damaged = shuffled_copy(Path(job["dataset_path"]), root / f"damaged-{night}.jsonl", args.seed + night)
            async with sessions.begin() as session:
                await jobs_repo.create(session, tenant_id="default", params={}, trigger="manual",
                                       dataset_path=str(damaged))
            bad = await worker.run_once()
            bad_gate = (bad["metrics"] or {}).get("gate") or {}
            report["damaged"] = {"status": bad["status"], "reasons": bad_gate.get("reasons"),
                                 "gate": bad_gate.get("report")}
            if bad["status"] == "succeeded" and job["status"] == "succeeded":  # keep measuring the real one
                httpx.post(f"{gw}/api/ai/adapters/{job['adapter_name']}/activate", timeout=600).raise_for_status()
    active = httpx.get(f"{gw}/api/ai/llm/health", timeout=30).json().get("adapter")
    report["adapter"] = active
    if eval_set:  # measured after this night
        scores = measure(gw, eval_set, args.tau, f"loop night {night}")
        report.update({**scores.figures(), "samples": scores.samples})
    report["night_seconds"] = round(time.perf_counter() - started, 1)
    say(f"night {night}: {json.dumps({k: v for k, v in report.items() if k != 'samples'}, ensure_ascii=False)}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--train-per-night", type=int, default=40, help="training questions asked each night")
    parser.add_argument("--heldout", type=int, default=40, help="held-out questions (answer in the documents)")
    parser.add_argument("--absent", type=int, default=10, help="questions whose answer no document holds")
    parser.add_argument("--docs", type=int, default=40, help="READMEs ingested")
    parser.add_argument("--fallback-share", type=float, default=0.7, help="share of training questions sent to the teacher")
    parser.add_argument("--min-examples", type=int, default=20, help="AION_TRAIN_MIN_EXAMPLES")
    parser.add_argument("--max-tokens", type=int, default=64, help="AION_LOCAL_MAX_TOKENS")
    parser.add_argument("--top-k", type=int, default=4,
                        help="AION_TOP_K: passages per answer (default 8 in production; fewer keep rows short on CPU)")
    parser.add_argument("--tau", type=float, default=0.62, help="the default tau the fallback share is counted at")
    parser.add_argument("--measure-after", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="nights after which the held-out questions are asked (default: 1 and the last)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-damaged", dest="damaged", action="store_false", help="skip the damaged candidates")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=None)
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark
    # A stop (SIGTERM) unwinds like Ctrl-C, so the services and the database this run started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"loop_bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    say(f"summary: {json.dumps(results['summary'])}; details in {out}")


if __name__ == "__main__":
    main()
