"""The admin panel in Chromium: health of every part, the budget gauge and charts from real rows, the
export and training buttons, and a rollback to an older adapter served by the real inference service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from services.gateway.main import create_app
from services.gateway.services.budget import period_start
from tests.fixtures.postgres import truncate_all
from tests.fixtures.servers import MODEL_CACHE, free_port, run_asgi
from tests.gateway.conftest import gateway_settings
from tests.web.conftest import TENANT, rows, screenshot, screenshot_dir

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC)
# (days ago, used, C, latency ms) — what the chat path logs for each answer.
ANSWERS = [(0, "local", 0.71, 900), (0, "local", 0.66, 1100), (0, "fallback", 0.41, 2400), (0, "local", 0.69, 1000),
           (2, "local", 0.73, 800), (2, "fallback", 0.35, 3000)]
SPENT = [0.0123, 0.002]  # settled fallback calls this period
RESERVED = 0.01  # one call still running
# (label, mode, hit@1, containment) of stored `aion eval` runs, oldest first.
EVAL_RUNS = [("questions.jsonl", "retrieval", 0.8, None), ("questions.jsonl", "answer", 0.9, 0.75)]


def seed(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        for days_ago, used, c, latency in ANSWERS:
            meta = {"prompt": "q", "reply": "a", "used": used, "model": used, "C": c, "complete": True,
                    "latency_ms": latency, "first_token_ms": latency // 3}
            conn.execute("INSERT INTO ai_events (tenant_id, kind, value, meta, request_id, created_at) "
                         "VALUES (%s, 'answer', 1.0, %s, %s, %s)",
                         (TENANT, json.dumps(meta), uuid.uuid4().hex, NOW - timedelta(days=days_ago)))
        start = period_start("month")
        for cost in SPENT:
            conn.execute("INSERT INTO fallback_ledger (id, tenant_id, request_id, model, period_start, status, "
                         "reserved_usd, cost_usd) VALUES (%s, %s, %s, 'gpt-4o-mini', %s, 'settled', 0.05, %s)",
                         (uuid.uuid4(), TENANT, uuid.uuid4().hex, start, cost))
        conn.execute("INSERT INTO fallback_ledger (id, tenant_id, request_id, model, period_start, status, "
                     "reserved_usd) VALUES (%s, %s, %s, 'gpt-4o-mini', %s, 'reserved', %s)",
                     (uuid.uuid4(), TENANT, uuid.uuid4().hex, start, RESERVED))
        for age, (label, mode, hit1, containment) in enumerate(reversed(EVAL_RUNS)):
            metrics = {"questions": 10, "latency_ms": {"p50": 900, "p95": 1500},
                       "retrieval": {"questions": 8, "hit@1": hit1, "hit@5": 1.0, "mrr": 0.9}}
            if containment is not None:
                metrics["answers"] = {"containment": {"rate": containment, "of": 8}, "instruction_echo": 0,
                                      "not_found_correct": {"rate": 1.0, "of": 2}, "fallback_rate": {"rate": 0, "of": 10},
                                      "local_containment": {"rate": 0.625, "of": 8}}
            conn.execute("INSERT INTO eval_runs (id, tenant_id, label, set_sha256, mode, questions, model, settings, "
                         "metrics, created_at) VALUES (%s, %s, %s, %s, %s, 10, 'default', %s, %s, %s)",
                         (uuid.uuid4(), TENANT, label, "0" * 64, mode,
                          json.dumps({"arms": {"vector": 1.0, "text": 1.0}}), json.dumps(metrics),
                          NOW - timedelta(hours=age)))


@pytest.fixture(scope="module")
def site(database_url: str, inference_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    truncate_all(database_url)
    seed(database_url)
    root = tmp_path_factory.mktemp("web-admin")
    settings = gateway_settings(
        database_url, inference_url, AION_BUDGET_USD=5.0, OPENAI_API_KEY="test-key",
        # A fallback is configured (the gauge means something) but never called by these tests.
        AION_FALLBACK_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        AION_TRAIN_ROOT=str(root / "train"), AION_EVENTS_JSONL=str(root / "events.jsonl"))
    with run_asgi(create_app(settings)) as url:
        yield url


def open_panel(page, site: str) -> None:
    page.goto(site + "/admin")
    page.wait_for_selector("body[data-loaded='true']")


def test_panel_shows_health_budget_and_answer_charts(page, site) -> None:
    open_panel(page, site)
    inference = page.locator("#h-inference")
    inference.locator(".state-text", has_text="ready").wait_for()
    card = inference.inner_text()
    assert "smollm2-135m-instruct" in card and "cpu" in card and "none (base weights)" in card
    assert page.locator("#h-gateway .state-text").inner_text() == "up"
    assert page.locator("#h-database .state-text").inner_text() == "ok"
    assert page.locator("#h-database .dot.ok").count() == 1
    # No scheduler has written its job store: the panel says so instead of pretending.
    assert page.locator("#h-scheduler .state-text").inner_text() == "not started"
    assert "aion scheduler" in page.locator("#h-scheduler").inner_text()

    budget = page.locator("#budget-stats").inner_text()
    spent = sum(SPENT)
    remaining = 5.0 - spent - RESERVED
    # Calls = settled + still reserved; answers = every answer of the period.
    for text in ("$5.00", f"${spent:.4f}", f"${RESERVED:.4f}", f"${remaining:.2f}", "3 of 6"):
        assert text in budget, (text, budget)
    gauge = page.locator("#budget-gauge svg")
    assert f"{(spent + RESERVED) / 5 * 100:.1f}%" in gauge.text_content()
    assert gauge.locator("path.spent").count() == 1 and gauge.locator("path.reserved").count() == 1
    assert page.locator("#budget-chart rect.s-fallback").count() == 1  # one day with spend

    stats = page.locator("#events-stats").inner_text()
    assert "Answers\n6" in stats and "Fallback share\n33.3%" in stats
    answers = page.locator("#chart-answers")
    assert answers.locator("rect.s-local").count() == 2 and answers.locator("rect.s-fallback").count() == 2
    assert page.locator("#chart-confidence circle").count() == 2
    assert page.locator("#chart-latency path.line").count() == 2
    label = answers.locator("svg").get_attribute("aria-label")
    assert "local: 4 in total" in label and "fallback: 2 in total" in label

    # Narrower window: the answers from two days ago still count, older ones would not.
    runs = page.locator("#evals-body tr")
    assert runs.count() == 2
    assert "answer" in runs.nth(0).inner_text() and "75.0%" in runs.nth(0).inner_text()
    assert runs.nth(0).locator(".local-alone").inner_text() == "62.5%"  # the local model's own answers
    assert runs.nth(1).locator(".local-alone").inner_text() == "—"
    assert "80.0% / 100.0% / 0.9" in runs.nth(1).inner_text()
    assert page.locator("#chart-evals path.line").count() == 2

    page.get_by_label("Period").select_option("7")
    page.wait_for_function("() => document.querySelector('#chart-answers svg').getAttribute('aria-label')"
                           ".endsWith('over 7 days')")
    assert answers.locator("rect.s-local").count() == 2
    screenshot(page, "admin.png")


def test_export_and_training_buttons(page, site, database_url) -> None:
    open_panel(page, site)
    page.get_by_role("button", name="Run export now").click()
    result = page.locator("#export-result")
    result.filter(has_text="Exported").wait_for()
    assert " rows to " in result.inner_text() and "events.jsonl" in result.inner_text()
    page.locator("#exports-body tr", has_text="manual").first.wait_for()
    assert rows(database_url, "SELECT count(*) FROM export_runs")[0][0] == 1

    page.get_by_label("Max steps").fill("3")
    page.get_by_role("button", name="Start training").click()
    page.locator("#train-result", has_text="Queued job").wait_for()
    # The status card refreshes on its own request after the start answered: wait for it, don't race it.
    page.wait_for_function("() => document.querySelector('#job-status').textContent.trim() === 'queued'")
    assert "waiting for a trainer worker" in page.locator("#job-detail").inner_text()
    (status, params), = rows(database_url, "SELECT status, params FROM training_jobs")
    assert status == "queued" and params["max_steps"] == 3
    # A second start is refused with the server's reason, shown beside the button.
    page.get_by_role("button", name="Start training").click()
    page.locator("#train-result", has_text="already queued").wait_for()
    page.get_by_role("button", name="Cancel job").click()
    page.locator("#job-status", has_text="cancelled").wait_for()
    assert rows(database_url, "SELECT status FROM training_jobs") == [("cancelled",)]
    assert page.locator("#jobs-body tr").count() == 1


def build_adapters(root: Path, count: int) -> list[Path]:
    """Real PEFT LoRA adapters on the real base (small random weights, different per version)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from services.inference.loader import load_causal_lm, resolve_base_model

    base = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False).model
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    out = []
    for i in range(count):
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.normal_(0.0, 0.01)
        model.save_pretrained(root / f"v{i + 1}")
        out.append(root / f"v{i + 1}")
    return out


GATE_REPORT = {"heldout": {"examples": 3, "answer_tokens": 90, "loss_current": 1.5, "loss_candidate": 1.234},
               "rag": {"margin": 0.05, **{who: {"answer_score": s, "answer_rate": a, "citation_rate": c,
                                                "wrong_citation_rate": w, "supported_rate": b, "not_found_rate": n,
                                                "items": 16}
                                          for who, s, a, c, w, b, n in [("base", 0.3, 0.5, 0.1, 0.0, 0.6, 0.0),
                                                                        ("current", 0.3, 0.5, 0.1, 0.0, 0.6, 0.0),
                                                                        ("candidate", 0.55, 0.75, 0.5, 0.05, 0.8,
                                                                         0.25)]}},
               "general": {"base": 1.0, "current": 1.0, "candidate": 0.9615, "questions": 26, "margin": 0.05},
               "grounding": {"base": 0.512, "current": 0.512, "candidate": 0.613, "items": 49, "margin": 0.1,
                             "right_loss": {"base": 1.753, "current": 1.753, "candidate": 1.095}}}


def register(db: str, name: str, path: Path, created: datetime) -> None:
    metrics = {"gate": {"decision": "promote", "heldout_loss_candidate": 1.234, "heldout_loss_current": 1.5,
                        "report": GATE_REPORT}}
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO adapters (id, tenant_id, name, path, base_model, status, metrics, created_at) "
                     "VALUES (%s, %s, %s, %s, 'smollm2-135m-instruct', 'retired', %s, %s)",
                     (uuid.uuid4(), TENANT, name, str(path), json.dumps(metrics), created))


def test_activate_an_older_adapter_from_the_panel(page, site, database_url, inference_url, tmp_path) -> None:
    # Names unique to this run: the session's inference service never reuses a name for other weights.
    prefix = f"web{uuid.uuid4().hex[:6]}"
    older, newer = f"{prefix}-v1", f"{prefix}-v2"
    v1, v2 = build_adapters(tmp_path, 2)
    register(database_url, older, v1, NOW - timedelta(days=2))
    register(database_url, newer, v2, NOW - timedelta(days=1))
    try:
        r = httpx.post(f"{site}/api/ai/adapters/{newer}/activate", timeout=120)
        assert r.status_code == 200, r.text
        open_panel(page, site)
        assert page.locator(f"tr[data-adapter='{newer}'] .status-pill").inner_text() == "active"
        assert "promote · RAG 0.55 vs 0.30 · general 0.96 vs 1.00 · held-out loss 1.234 vs 1.500" in page.locator(
            f"tr[data-adapter='{older}']").inner_text()
        page.locator("#h-inference", has_text=newer).wait_for()

        page.get_by_role("button", name=f"Activate {older}").click()
        page.locator("#adapters-result", has_text=f"serving {older}").wait_for(timeout=120_000)
        page.locator(f"tr[data-adapter='{older}'] .status-pill", has_text="active").wait_for()
        assert page.locator(f"tr[data-adapter='{newer}'] .status-pill").inner_text() == "retired"
        page.locator("#h-inference", has_text=older).wait_for()
        assert httpx.get(f"{inference_url}/health").json()["adapter"] == older
        status = dict(rows(database_url, "SELECT name, status FROM adapters"))
        assert status == {older: "active", newer: "retired"}

        # What happened after promotion: answers it served, their thumbs, the fallback's share meanwhile;
        # and the one it replaced can be rolled back to from the same row.
        with psycopg.connect(database_url, autocommit=True) as conn:
            for used, model, rating in [("local", older, "up"), ("local", older, "down"), ("local", older, None),
                                        ("fallback", "gpt-4o-mini", None)]:
                rid = uuid.uuid4().hex
                conn.execute("INSERT INTO ai_events (tenant_id, kind, value, meta, request_id) VALUES "
                             "(%s, 'answer', 1.0, %s, %s)", (TENANT, json.dumps({"used": used, "model": model}), rid))
                if rating:
                    conn.execute("INSERT INTO ai_events (tenant_id, kind, value, meta) VALUES (%s, 'feedback', %s, %s)",
                                 (TENANT, 1.0 if rating == "up" else -1.0, json.dumps({"answer_request_id": rid})))
        open_panel(page, site)
        row = page.locator(f"tr[data-adapter='{older}']")
        assert [row.locator(f"td.{c}").inner_text() for c in ("served", "thumbs", "fallback-rate")] == [
            "3", "1 / 1", "25.0%"]
        assert page.get_by_role("button", name=f"Roll back to {newer}").count() == 1
        page.locator("#adapters").screenshot(path=str(screenshot_dir() / "admin-adapters.png"))
    finally:
        # The session's inference service is shared: serve the base weights again for later tests.
        httpx.post(f"{site}/api/ai/adapters/deactivate", timeout=60)
    assert httpx.get(f"{inference_url}/health").json()["adapter"] is None


@pytest.mark.parametrize(("offset_s", "state"), [(3600, "scheduled"), (-3600, "overdue")])
def test_scheduler_state_comes_from_its_job_store(page, site, database_url, offset_s, state) -> None:
    """A stored job due in the future is `scheduled`; one long past due means no scheduler runs it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO apscheduler_jobs (id, next_run_time, job_state) VALUES ('nightly_export', %s, %s)",
                     (NOW.timestamp() + offset_s, b"state"))
    try:
        body = httpx.get(f"{site}/api/ai/admin/scheduler").json()
        assert body["status"] == state and body["jobs"][0]["id"] == "nightly_export"
        open_panel(page, site)
        assert page.locator("#h-scheduler .state-text").inner_text() == state
        assert ("check that `aion scheduler` is running" in page.locator("#h-scheduler").inner_text()) == (
            state == "overdue")
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM apscheduler_jobs")


def test_training_status_is_live_with_a_loss_curve(page, site, database_url) -> None:
    """A running job's progress and loss curve (from the worker's log lines) update without a reload; a
    finished job's curve is its recorded losses."""
    job_id = uuid.uuid4()
    log = "".join(f"step {s}/4 loss {loss}\n" for s, loss in [(1, 2.31), (2, 1.87)])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM training_jobs")
        conn.execute("INSERT INTO training_jobs (id, tenant_id, status, progress, log_tail, started_at) "
                     "VALUES (%s, %s, 'running', %s, %s, now())",
                     (job_id, TENANT, json.dumps({"step": 2, "total": 4, "loss": 1.87}), log))
    open_panel(page, site)
    assert page.locator("#job-status").inner_text() == "running"
    assert page.locator("#job-step").inner_text() == "step 2/4 · loss 1.87"
    assert page.locator("#chart-loss circle").count() == 2
    # The worker goes on and finishes: the panel polls and shows it. The curve of a finished job is the
    # losses the worker recorded, not what is left of the log (its tail is cut to 4000 characters).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE training_jobs SET status = 'succeeded', finished_at = now(), adapter_name = 'aion-v9', "
                     "progress = %s, log_tail = %s, metrics = %s WHERE id = %s",
                     (json.dumps({"step": 4, "total": 4, "loss": 1.1}), "step 4/4 loss 1.1\ngate: promote\n",
                      json.dumps({"train": {"losses": [2.31, 1.87, 1.4, 1.1]},
                                  "gate": {"decision": "promote", "report": GATE_REPORT,
                                           "reasons": ["RAG answer score held 0.300 -> 0.550 (base 0.300)"]}}),
                      job_id))
    page.locator("#job-status", has_text="succeeded").wait_for(timeout=15_000)
    # The gate report stored on the job: every set, base / before / candidate.
    gate = page.locator("#job-gate")
    gate.wait_for()
    assert "promoted" in gate.locator("caption").inner_text()
    cells = [r.split("\t") for r in gate.locator("tbody").inner_text().splitlines()]
    assert cells[0] == ["RAG set (16 items): answer score", "30.0%", "30.0%", "55.0%"]
    assert ["RAG: reply backed by its passages", "60.0%", "60.0%", "80.0%"] in cells
    assert ["General questions (26)", "100.0%", "100.0%", "96.2%"] in cells
    assert ["RAG: a cited passage says nothing of its sentence (lower is better)", "0.0%", "0.0%", "5.0%"] in cells
    assert ["Grounding gap: wrong reply's loss − right reply's (49)", "0.512", "0.512", "0.613"] in cells
    assert ["Held-out loss (3 rows)", "—", "1.500", "1.234"] in cells
    assert "RAG answer score held" in gate.inner_text()
    assert page.locator("#chart-loss circle").count() == 4
    assert page.locator("#job-progress").evaluate("p => p.value") == 1
    assert "adapter aion-v9" in page.locator("#job-detail").inner_text()
    assert page.locator("#jobs-body tr", has_text="aion-v9").count() == 1
    page.locator("#training").screenshot(path=str(screenshot_dir() / "admin-training.png"))


def test_panel_shows_the_cache_the_system_status_and_the_models(page, site, database_url) -> None:
    page.goto(site + "/admin")
    page.wait_for_selector("body[data-system-loaded='true']")
    cache = page.locator("#cache-stats").inner_text()
    assert "Hit rate (30 days)" in cache and "Money saved" in cache and "$0" in cache
    inference = page.locator("#status-grid [data-service='inference']")
    inference.locator(".state-text", has_text="ready").wait_for()
    assert "KV cache" in inference.inner_text() and "running" in inference.inner_text()
    gateway = page.locator("#status-grid [data-service='gateway']").inner_text()
    assert "CPU" in gateway and "disk (data)" in gateway and "GPU" in gateway
    assert "pgvector" in page.locator("#status-grid [data-service='database']").inner_text()
    models = page.locator("#models-stats").inner_text()
    assert "smollm2-135m-instruct" in models and "384 dimensions" in models and "tokens" in models

    generation = "SELECT coalesce(max(cache_generation), 0) FROM knowledge_versions"
    before = rows(database_url, generation)[0][0]
    page.get_by_role("button", name="Clear cache").click()
    page.locator("#cache-result", has_text="Cleared").wait_for()
    assert rows(database_url, generation)[0][0] == before + 1
