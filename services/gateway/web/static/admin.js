// The admin panel: health, budget, answers, adapters, training, export, dev toggles.
import { barChart, gauge, lineChart } from "./charts.js";
import {
  api, authHeaders, devToggles, el, fmtTime, fmtUsd, initKeyBox, saveDevToggles, setKeyRetry,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const HEALTH_EVERY_MS = 15000;
const JOB_POLL_MS = 2000;

function stats(dl, pairs) {
  dl.replaceChildren(...pairs.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v ?? "—" }))));
}

function pct(x) {
  return x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`;
}

function ms(x) {
  return x === null || x === undefined ? "—" : `${Math.round(x)} ms`;
}

function say(id, text, ok = true) {
  const node = $(id);
  node.textContent = text;
  node.className = `result-line ${ok ? "ok" : "bad"}`;
}

/** The last n calendar days (UTC, as the server groups them), oldest first. */
function dayRange(n) {
  const out = [];
  const today = new Date();
  for (let i = n - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    out.push(d.toISOString().slice(0, 10));
  }
  return out;
}

// ---- health ------------------------------------------------------------------------------------

function setHealth(id, level, text, pairs) {
  const box = $(id);
  box.querySelector(".dot").className = `dot ${level}`;
  box.querySelector(".state-text").textContent = text;
  box.querySelector("dl").replaceChildren(...pairs.filter(([, v]) => v !== undefined)
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v === null ? "—" : String(v) })]));
}

async function loadHealth() {
  // /health answers 503 with a body when the database is down: read the body either way.
  try {
    const res = await fetch("/health", { headers: authHeaders() }); // open even with auth on
    const h = await res.json();
    setHealth("h-gateway", "ok", "up", [["status", h.status], ["tenant", h.tenant_id], ["inference seen as", h.inference]]);
    setHealth("h-database", h.database === "ok" ? "ok" : "bad", h.database === "ok" ? "ok" : "down",
      [["state", h.database]]);
  } catch (err) {
    setHealth("h-gateway", "bad", "down", [["error", `the gateway did not answer: ${err.message}`]]);
    setHealth("h-database", "bad", "unknown", []);
  }
  try {
    const i = await api("/api/ai/llm/health");
    const level = i.status === "ready" ? "ok" : i.status === "loading" ? "warn" : "bad";
    const vllm = i.backend === "vllm";
    // vLLM serves adapters by version only: no adapter dir to reload, no merge.
    for (const id of ["adapter-reload", "adapter-merge"]) $(id).hidden = vllm;
    setHealth("h-inference", level, i.status, [
      ["engine", vllm ? `vLLM ${i.version || ""}`.trim() : "AION"],
      ["model", i.base_model], ["device", vllm ? undefined : i.device],
      ["quantization", vllm ? undefined : i.quantization || "none (full precision)"],
      ["adapter", i.adapter ? `${i.adapter}${i.merged ? " (merged)" : ""}` : "none (base weights)"],
      ["embeddings", i.embedding_model],
      ["queue", i.queue ? `${i.queue.running} running, ${i.queue.waiting} waiting` : null],
      ["error", i.error || undefined]]);
  } catch (err) {
    setHealth("h-inference", "bad", "unreachable", [["error", err.message]]);
  }
  try {
    const s = await api("/api/ai/admin/scheduler");
    const next = s.jobs.map((j) => j.next_run_at).filter(Boolean).sort()[0];
    const last = s.runs[0];
    setHealth("h-scheduler", s.status === "scheduled" ? "ok" : "warn", s.status.replace("_", " "), [
      ["next run", next ? fmtTime(next) : null],
      ["last run", last ? `${last.status} · ${fmtTime(last.started_at)}` : "none yet"],
      ["note", s.hint || undefined]]);
  } catch (err) {
    setHealth("h-scheduler", "bad", "unknown", [["error", err.message]]);
  }
}

// ---- budget ------------------------------------------------------------------------------------

async function loadBudget() {
  try {
    const b = await api("/api/ai/budget");
    gauge($("budget-gauge"), { spent: b.spent_usd, reserved: b.reserved_usd, cap: b.cap_usd, fmt: fmtUsd });
    stats($("budget-stats"), [
      [`Cap per ${b.period}`, fmtUsd(b.cap_usd)], ["Spent", fmtUsd(b.spent_usd)], ["Reserved", fmtUsd(b.reserved_usd)],
      ["Remaining", fmtUsd(b.remaining_usd)],
      ["Fallback share", `${pct(b.fallback_share)} (${b.fallback_calls} of ${b.answers})`],
      ["Share cap", pct(b.max_fallback_share)]]);
    $("budget-note").textContent = b.fallback_configured
      ? `Period started ${fmtTime(b.period_start)}.`
      : "No fallback model is configured (set OPENAI_API_KEY or AION_FALLBACK_BASE_URL): every answer is local.";
    const daily = await api("/api/ai/admin/budget/daily?days=30");
    const byDay = new Map(daily.per_day.map((d) => [d.day, d]));
    const labels = dayRange(30);
    barChart($("budget-chart"), {
      labels: labels.map((d) => d.slice(5)), title: "Fallback spend per day", yFormat: fmtUsd,
      series: [{ name: "spent", cls: "s-fallback", values: labels.map((d) => byDay.get(d)?.spent_usd || 0) }],
      cap: b.period === "day" ? b.cap_usd : null,
    });
  } catch (err) {
    $("budget-note").textContent = `Could not read the budget: ${err.message}`;
  }
}

// ---- answers -----------------------------------------------------------------------------------

async function loadEvents() {
  const days = Number($("events-days").value);
  try {
    const m = await api(`/api/ai/metrics?days=${days}`);
    stats($("events-stats"), [
      ["Answers", m.answers], ["Local", m.local], ["Fallback", m.fallback], ["Fallback share", pct(m.fallback_share)],
      ["Mean confidence", m.mean_confidence === null ? "—" : m.mean_confidence.toFixed(2)],
      ["Latency p50 / p95", `${ms(m.latency_ms.p50)} / ${ms(m.latency_ms.p95)}`],
      ["First token p50", ms(m.first_token_ms.p50)], ["Unfinished", m.incomplete],
      ["Feedback up / down", `${m.feedback.up} / ${m.feedback.down}`]]);
    const byDay = new Map(m.per_day.map((d) => [d.day, d]));
    const range = dayRange(days);
    const labels = range.map((d) => d.slice(5));
    const col = (key) => range.map((d) => (byDay.has(d) ? byDay.get(d)[key] : null));
    barChart($("chart-answers"), {
      labels, title: "Answers per day", emptyText: "no answers yet",
      series: [{ name: "local", cls: "s-local", values: col("local") }, { name: "fallback", cls: "s-fallback", values: col("fallback") }],
    });
    lineChart($("chart-confidence"), {
      labels, title: "Mean confidence", yMax: 1, yFormat: (v) => v.toFixed(2), emptyText: "no answers yet",
      series: [{ name: "mean C", cls: "s-a", values: col("mean_confidence") }],
    });
    lineChart($("chart-latency"), {
      labels, title: "Latency", yFormat: (v) => `${Math.round(v)}`, emptyText: "no answers yet",
      series: [{ name: "p50", cls: "s-a", values: col("latency_p50_ms") }, { name: "p95", cls: "s-b", values: col("latency_p95_ms") }],
    });
  } catch (err) {
    stats($("events-stats"), [["Error", err.message]]);
  }
}

// ---- evaluation runs ---------------------------------------------------------------------------

function share(x) {
  return x && typeof x === "object" ? pct(x.rate) : "—";
}

async function loadEvals() {
  try {
    const { runs } = await api("/api/ai/eval/runs?limit=20");
    $("evals-body").replaceChildren(...runs.map((r) => {
      const m = r.metrics || {};
      const ret = m.retrieval || {};
      const ans = m.answers || {};
      const arms = (r.settings && r.settings.arms) || {};
      return el("tr", { "data-run": r.id },
        el("td", { text: fmtTime(r.created_at) }),
        el("td", { text: `${r.label} (${r.questions})` }),
        el("td", { text: r.mode }),
        el("td", { text: r.model || "—" }),
        el("td", { text: `vector ${arms.vector ?? "—"} · text ${arms.text ?? "—"}` }),
        el("td", { text: `${pct(ret["hit@1"])} / ${pct(ret["hit@5"])} / ${ret.mrr ?? "—"}` }),
        el("td", { text: share(ans.containment) }),
        el("td", { class: "local-alone", text: share(ans.local_containment) }),
        el("td", { text: share(ans.not_found_correct) }),
        el("td", { text: share(ans.fallback_rate) }),
        el("td", { text: ans.instruction_echo ?? "—" }),
        el("td", { text: ms(m.latency_ms && m.latency_ms.p95) }));
    }));
    if (!runs.length) {
      $("evals-body").append(el("tr", {}, el("td", { colspan: "12", class: "empty", text: "No evaluation yet: run `aion eval QUESTIONS.jsonl`." })));
    }
    const oldestFirst = [...runs].reverse();
    lineChart($("chart-evals"), {
      labels: oldestFirst.map((r) => fmtTime(r.created_at)), title: "Evaluation runs", yMax: 1,
      yFormat: (v) => pct(v), emptyText: "no evaluation yet",
      series: [
        { name: "hit@1", cls: "s-a", values: oldestFirst.map((r) => (r.metrics.retrieval || {})["hit@1"] ?? null) },
        { name: "containment", cls: "s-b", values: oldestFirst.map((r) => ((r.metrics.answers || {}).containment || {}).rate ?? null) },
      ],
    });
  } catch (err) {
    $("evals-body").replaceChildren(el("tr", {}, el("td", { colspan: "11", class: "empty", text: `Could not list evaluation runs: ${err.message}` })));
  }
}

// ---- adapters ----------------------------------------------------------------------------------

function num(x, digits = 2) {
  return typeof x === "number" ? x.toFixed(digits) : "—";
}

function gateSummary(metrics) {
  const g = metrics && metrics.gate;
  if (g) {
    const r = g.report || {};
    const parts = [g.decision || "?"];
    if (r.rag) parts.push(`RAG ${num(r.rag.candidate.answer_score)} vs ${num(r.rag.current.answer_score)}`);
    if (r.general) parts.push(`general ${num(r.general.candidate)} vs ${num(r.general.current)}`);
    parts.push(`held-out loss ${num(g.heldout_loss_candidate, 3)} vs ${num(g.heldout_loss_current, 3)}`);
    return parts.join(" · ");
  }
  const keys = Object.keys(metrics || {});
  return keys.length ? keys.slice(0, 4).map((k) => `${k}: ${JSON.stringify(metrics[k])}`).join(" · ") : "—";
}

function adapterAction(a) {
  if (a.status === "active") return "serving";
  if (a.status === "rejected") return "never served";
  if (a.pruned_at) return "files removed";
  // An adapter that served before: activating it again is the rollback.
  const label = a.promoted_at ? "Roll back to" : "Activate";
  return el("button", { type: "button", class: "small", "aria-label": `${label} ${a.name}`, text: label,
    onclick: (e) => activate(a.name, e.currentTarget) });
}

async function loadAdapters() {
  try {
    const { adapters } = await api("/api/ai/adapters");
    const body = $("adapters-body");
    body.replaceChildren(...adapters.map((a) => {
      const s = a.serving || {};
      const served = a.promoted_at ? s.answers_served : null;
      return el("tr", { "data-adapter": a.name },
        el("th", { scope: "row", text: a.name }),
        el("td", {}, el("span", { class: `status-pill ${a.status}`, text: a.status })),
        el("td", { text: fmtTime(a.created_at) }),
        el("td", { text: fmtTime(a.promoted_at) }),
        el("td", { class: "gate", text: gateSummary(a.metrics) }),
        el("td", { class: "served", text: served ?? "—" }),
        el("td", { class: "thumbs", text: a.promoted_at ? `${s.thumbs_up ?? 0} / ${s.thumbs_down ?? 0}` : "—" }),
        el("td", { class: "fallback-rate", text: a.promoted_at ? pct(s.fallback_rate) : "—" }),
        el("td", {}, adapterAction(a)));
    }));
    if (!adapters.length) {
      body.append(el("tr", {}, el("td", { colspan: "9", class: "empty", text: "No adapters yet: a training job that passes the evaluation gate registers one." })));
    }
  } catch (err) {
    say("adapters-result", `Could not list adapters: ${err.message}`, false);
  }
}

async function runAdapterAction(label, call, button) {
  if (button) button.disabled = true;
  say("adapters-result", `${label}…`);
  try {
    const out = await call();
    say("adapters-result", `${label}: done${out && out.active !== undefined ? ` — serving ${out.active || "the base weights"}` : ""}.`);
  } catch (err) {
    say("adapters-result", `${label} failed: ${err.message}`, false);
  } finally {
    if (button) button.disabled = false;
    await Promise.all([loadAdapters(), loadHealth()]);
  }
}

function activate(name, button) {
  return runAdapterAction(`Activating ${name} (load and smoke test)`,
    () => api(`/api/ai/adapters/${encodeURIComponent(name)}/activate`, { method: "POST" }), button);
}

// ---- training ----------------------------------------------------------------------------------

let jobTimer = null;

/** Loss points of a job: a finished job's recorded losses (every step), else, while it runs, the
 * worker's log lines ("step 3/16 loss 1.2345"), of which the job keeps only the last 4000 chars. */
function lossPoints(job) {
  const losses = job && job.metrics && job.metrics.train && job.metrics.train.losses;
  if (Array.isArray(losses) && losses.length) return losses.map((loss, i) => [i + 1, loss]);
  const log = (job && job.log_tail) || "";
  return [...log.matchAll(/step (\d+)\/(\d+) loss ([0-9.eE+-]+)/g)].map((m) => [Number(m[1]), Number(m[3])]);
}

function renderJob(job) {
  const pill = $("job-status");
  pill.textContent = job ? job.status : "none yet";
  pill.className = `status-pill ${job ? job.status : ""}`;
  const p = (job && job.progress) || {};
  $("job-progress").value = p.total ? p.step / p.total : job && job.status === "succeeded" ? 1 : 0;
  $("job-step").textContent = p.total ? `step ${p.step}/${p.total}${p.loss !== undefined ? ` · loss ${p.loss}` : ""}` : "";
  $("job-detail").textContent = !job ? "No training job yet: start one above, or wait for the nightly run."
    : [`created ${fmtTime(job.created_at)}`, job.started_at && `started ${fmtTime(job.started_at)}`,
      job.finished_at && `finished ${fmtTime(job.finished_at)}`, job.adapter_name && `adapter ${job.adapter_name}`,
      job.error && `error: ${job.error}`,
      job.status === "queued" && "waiting for a trainer worker (`aion trainer worker`)"].filter(Boolean).join(" · ");
  $("job-log").textContent = (job && job.log_tail) || "";
  const cancel = $("job-cancel");
  cancel.hidden = !job || !["queued", "running"].includes(job.status);
  cancel.dataset.job = job ? job.id : "";
  renderGate(job);
  const pts = lossPoints(job);
  lineChart($("chart-loss"), {
    labels: pts.map(([s]) => String(s)), title: "Training loss", yFormat: (v) => v.toFixed(2),
    emptyText: "no loss reported yet", series: [{ name: "loss", cls: "s-c", values: pts.map(([, l]) => l) }],
  });
}

/** The gate report stored on the job: per set, the base's, the active adapter's and the candidate's figures. */
function renderGate(job) {
  const g = job && job.metrics && job.metrics.gate;
  const r = g && g.report;
  $("job-gate").hidden = !r;
  if (!r) return;
  $("job-gate-decision").textContent = g.decision === "promote" ? "promoted" : "rejected";
  const rag = (key, label) => [label, pct(r.rag.base[key]), pct(r.rag.current[key]), pct(r.rag.candidate[key])];
  const rows = [
    ...(r.rag ? [rag("answer_score", `RAG set (${r.rag.candidate.items} items): answer score`),
      rag("answer_rate", "RAG: answer in the reply"), rag("citation_rate", "RAG: right passage cited"),
      rag("wrong_citation_rate", "RAG: a cited passage says nothing of its sentence (lower is better)"),
      rag("supported_rate", "RAG: reply backed by its passages"),
      rag("not_found_rate", "RAG: “not found” when the context lacks it")] : []),
    ...(r.general ? [[`General questions (${r.general.questions})`, pct(r.general.base), pct(r.general.current),
      pct(r.general.candidate)]] : []),
    ...(r.grounding ? [[`Grounding gap: wrong reply's loss − right reply's (${r.grounding.items})`,
      num(r.grounding.base, 3), num(r.grounding.current, 3), num(r.grounding.candidate, 3)]] : []),
    [`Held-out loss (${r.heldout.examples} rows)`, "—", num(r.heldout.loss_current, 3), num(r.heldout.loss_candidate, 3)],
  ];
  $("job-gate-body").replaceChildren(...rows.map(([k, ...v]) => el("tr", {}, el("th", { scope: "row", text: k }),
    ...v.map((x) => el("td", { text: x })))));
  $("job-gate-reasons").replaceChildren(...(g.reasons || []).map((x) => el("li", { text: x })));
}

async function loadTraining() {
  clearTimeout(jobTimer);
  let job = null;
  try {
    // The job list, newest first, rather than /train/lora/status: that answers 404 until a first job
    // exists, which the browser logs as a console error on every fresh install.
    const { jobs } = await api("/api/ai/train/lora/jobs");
    job = jobs[0] || null;
    renderJob(job);
    $("jobs-body").replaceChildren(...jobs.map((j) => el("tr", {},
      el("td", { text: fmtTime(j.created_at) }),
      el("td", {}, el("span", { class: `status-pill ${j.status}`, text: j.status })),
      el("td", { text: j.trigger }), el("td", { text: j.adapter_name || "—" }),
      el("td", { text: j.error || (j.progress && j.progress.total ? `${j.progress.step}/${j.progress.total} steps` : "") }))));
    if (!jobs.length) $("jobs-body").append(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "No jobs yet." })));
  } catch (err) {
    renderJob(null);
    say("train-result", `Could not read the training jobs: ${err.message}`, false);
  }
  if (job && ["queued", "running"].includes(job.status)) jobTimer = setTimeout(loadTraining, JOB_POLL_MS);
}

async function startTraining(e) {
  e.preventDefault();
  const body = { days: Number($("train-days").value) || 30, fresh: $("train-fresh").checked };
  if ($("train-steps").value) body.max_steps = Number($("train-steps").value);
  if ($("train-lr").value) body.learning_rate = Number($("train-lr").value);
  try {
    const out = await api("/api/ai/train/lora/start", { method: "POST", json: body });
    say("train-result", `Queued job ${out.id}. A trainer worker picks it up.`);
  } catch (err) {
    say("train-result", `Not started: ${err.message}`, false);
  }
  await loadTraining();
}

async function cancelJob() {
  const id = $("job-cancel").dataset.job;
  try {
    await api(`/api/ai/train/lora/${id}/cancel`, { method: "POST" });
    say("train-result", `Job ${id} cancelled.`);
  } catch (err) {
    say("train-result", `Not cancelled: ${err.message}`, false);
  }
  await loadTraining();
}

// ---- export ------------------------------------------------------------------------------------

async function loadExports() {
  try {
    const { runs } = await api("/api/ai/metrics/exports");
    $("exports-body").replaceChildren(...runs.slice(0, 10).map((r) => el("tr", {},
      el("td", { text: fmtTime(r.created_at) }), el("td", { text: `${r.trigger} · ${r.format}` }),
      el("td", { text: String(r.rows) }),
      el("td", {}, el("span", { class: `status-pill ${r.status}`, text: r.status })),
      el("td", { text: r.error || r.path || "(downloaded)" }))));
    if (!runs.length) $("exports-body").append(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "No export has run yet." })));
  } catch (err) {
    say("export-result", `Could not list exports: ${err.message}`, false);
  }
}

async function runExport(e) {
  e.preventDefault();
  $("export-run").disabled = true;
  try {
    const out = await api("/api/ai/metrics/export.jsonl", {
      method: "POST", json: { days: Number($("export-days").value) || 1, format: $("export-format").value },
    });
    const skipped = Object.entries(out.skipped || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ");
    say("export-result", `Exported ${out.rows} rows to ${out.out}${skipped ? ` (skipped: ${skipped})` : ""}.`);
  } catch (err) {
    say("export-result", `Export failed: ${err.message}`, false);
  } finally {
    $("export-run").disabled = false;
  }
  await loadExports();
}

// ---- dev toggles -------------------------------------------------------------------------------

function initDevToggles() {
  const dev = devToggles();
  const custom = $("tau-custom");
  const tau = $("tau");
  const force = $("force-fallback");
  custom.checked = dev.tau !== null;
  tau.value = dev.tau ?? 0.62;
  tau.disabled = !custom.checked;
  force.checked = dev.forceFallback;
  const sync = () => {
    $("tau-value").textContent = Number(tau.value).toFixed(2);
    tau.disabled = !custom.checked;
    const next = { tau: custom.checked ? Number(tau.value) : null, forceFallback: force.checked };
    saveDevToggles(next);
    const on = [next.tau !== null && `τ ${next.tau.toFixed(2)}`, next.forceFallback && "force fallback"].filter(Boolean);
    $("dev-status").textContent = on.length ? `The chat page in this browser now sends ${on.join(" and ")}.`
      : "Off: the chat page uses the server's settings.";
  };
  for (const input of [custom, tau, force]) input.addEventListener("input", sync);
  sync();
}

// ---- wiring ------------------------------------------------------------------------------------

function loadAll() {
  return Promise.all([loadHealth(), loadBudget(), loadEvents(), loadEvals(), loadAdapters(), loadTraining(), loadExports()]);
}

function init() {
  initKeyBox();
  setKeyRetry(loadAll);
  initDevToggles();
  $("health-refresh").addEventListener("click", () => Promise.all([loadHealth(), loadBudget()]));
  $("events-days").addEventListener("change", loadEvents);
  $("evals-refresh").addEventListener("click", loadEvals);
  $("adapter-reload").addEventListener("click", (e) => runAdapterAction("Reloading AION_ADAPTER_DIR",
    () => api("/api/ai/llm/adapter/reload", { method: "POST" }), e.currentTarget));
  $("adapter-merge").addEventListener("click", (e) => {
    if (!confirm("Merge the active adapter into the base weights? Other adapters cannot be served until the inference service restarts.")) return;
    runAdapterAction("Merging", () => api("/api/ai/llm/adapter/merge", { method: "POST" }), e.currentTarget);
  });
  $("adapter-base").addEventListener("click", (e) => runAdapterAction("Switching to the base weights",
    () => api("/api/ai/adapters/deactivate", { method: "POST" }), e.currentTarget));
  $("train-form").addEventListener("submit", startTraining);
  $("job-cancel").addEventListener("click", cancelJob);
  $("export-form").addEventListener("submit", runExport);
  loadAll().then(() => document.body.setAttribute("data-loaded", "true"));
  setInterval(loadHealth, HEALTH_EVERY_MS);
}

init();
