// The admin panel's system sections: response cache (hit rate, money saved, clear), every service's
// status and resources, and the models behind the answers.
import { api, el, fmtUsd } from "./common.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 15000;

function stats(dl, pairs) {
  dl.replaceChildren(...pairs.filter(([, v]) => v !== undefined)
    .map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v ?? "—" }))));
}

const pct = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`);
const mb = (x) => (x === null || x === undefined ? "—" : x >= 1024 ? `${(x / 1024).toFixed(1)} GB` : `${x} MB`);

function say(text, ok = true) {
  const node = $("cache-result");
  node.textContent = text;
  node.className = `result-line ${ok ? "ok" : "bad"}`;
}

async function loadCache() {
  try {
    const c = await api("/api/ai/cache?days=30");
    stats($("cache-stats"), [
      ["Mode", c.mode === "off" ? "off" : `${c.mode}${c.semantic ? `, semantic ≥ ${c.semantic_min_similarity}` : ""}`],
      ["Hit rate (30 days)", `${pct(c.hit_rate)} (${c.hits} of ${c.answers})`],
      ["Money saved", fmtUsd(c.saved_usd)], ["Paid answers replayed", String(c.paid_hits)],
      ["Stored answers", String(c.stored)], ["In this process", `${c.l1_entries} of ${c.l1_capacity}`],
      ["Knowledge version", String(c.knowledge_version)]]);
  } catch (err) {
    stats($("cache-stats"), [["Error", err.message]]);
  }
}

async function clearCache(e) {
  const button = e.currentTarget;
  button.disabled = true;
  try {
    const r = await api("/api/ai/cache", { method: "DELETE" });
    say(`Cleared: every replica answers afresh (generation ${r.cache_generation}).`);
    await loadCache();
  } catch (err) {
    say(err.message, false);
  } finally {
    button.disabled = false;
  }
}

function hostPairs(host) {
  if (!host) return [["resources", "not reported"]];
  const gpu = host.gpu?.available
    ? host.gpu.devices.map((d) => `${d.name}: ${mb(d.memory_used_mb)} / ${mb(d.memory_total_mb)}, ${d.utilization_percent}%`).join("; ")
    : host.gpu?.reason;
  return [["CPU", `${host.cpu.percent}% of ${host.cpu.count} (load ${host.cpu.load_avg.join(" ")})`],
    ["memory", `${mb(host.memory.used_mb)} / ${mb(host.memory.total_mb)}`],
    ["disk (data)", `${host.disk.free_gb} GB free of ${host.disk.total_gb} GB`], ["GPU", gpu]];
}

function card(title, service, pairs) {
  const level = ["ready", "scheduled", "configured"].includes(service.status) ? "ok"
    : ["loading", "off", "not_started", "overdue"].includes(service.status) ? "warn" : "bad";
  const dl = el("dl", {}, pairs.filter(([, v]) => v !== undefined && v !== null)
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  return el("article", { class: "health-item", "data-service": title.toLowerCase() },
    el("h3", {}, el("span", { class: `dot ${level}` }), `${title} `,
      el("span", { class: "state-text", text: String(service.status).replace("_", " ") })), dl);
}

async function loadStatus() {
  try {
    const s = (await api("/api/status")).services;
    const engine = s.inference.engine || {};
    const cards = [
      card("Gateway", s.gateway, [["version", s.gateway.version], ...hostPairs(s.gateway.host)]),
      card("Inference", s.inference, [["version", s.inference.version], ["backend", s.inference.backend],
        ["queue", engine.queue ? `${engine.queue.running} running, ${engine.queue.waiting} waiting` : undefined],
        ["KV cache", engine.kv_cache ? `${mb(engine.kv_cache.allocated_mb)} of ${mb(engine.kv_cache.budget_mb)}` : undefined],
        ["error", s.inference.error], ...(s.inference.status === "unreachable" ? [] : hostPairs(s.inference.host))]),
      card("Database", s.database, [["PostgreSQL", s.database.version], ["pgvector", s.database.pgvector],
        ["error", s.database.error]]),
      card("Scheduler", s.scheduler, [["jobs", s.scheduler.jobs]]),
      card("Fallback", s.fallback, [["model", s.fallback.model]]),
    ];
    if (s.embeddings) cards.push(card("Embeddings", s.embeddings, [["url", s.embeddings.url]]));
    $("status-grid").replaceChildren(...cards);
  } catch (err) {
    $("status-grid").replaceChildren(el("p", { class: "hint", text: err.message }));
  }
}

function gateText(gate) {
  if (!gate) return "—";
  return gate.decision ? `${gate.decision}${gate.reason ? `: ${gate.reason}` : ""}` : JSON.stringify(gate);
}

async function loadModels() {
  try {
    const m = await api("/api/models/detailed");
    stats($("models-stats"), [
      ["Base model", m.base.name], ["Quantization", m.base.quantization || "none (full precision)"],
      ["Context length", m.base.context_length ? `${m.base.context_length} tokens` : null],
      ["Device", m.base.device], ["Embeddings", `${m.embedding.model || "—"} (${m.embedding.dimension} dimensions)`],
      ["Fallback", m.fallback ? m.fallback.model : "off"]]);
    $("models-adapters").replaceChildren(...(m.adapters.length ? m.adapters.map((a) => el("tr", {},
      el("td", { text: a.name }), el("td", { text: a.active ? `${a.status} (serving)` : a.status }),
      el("td", { text: a.loaded ? "yes" : "no" }), el("td", { text: gateText(a.gate) })))
      : [el("tr", {}, el("td", { colspan: "4", text: "No adapter yet: the base weights answer." }))]));
  } catch (err) {
    stats($("models-stats"), [["Error", err.message]]);
  }
}

function loadAll() {
  return Promise.all([loadCache(), loadStatus(), loadModels()]);
}

$("cache-clear").addEventListener("click", clearCache);
$("status-refresh").addEventListener("click", () => Promise.all([loadStatus(), loadCache()]));
window.addEventListener("aion:credential", loadAll);
loadAll().then(() => document.body.setAttribute("data-system-loaded", "true"));
setInterval(() => Promise.all([loadStatus(), loadCache()]), REFRESH_MS);
