// The chat page: streamed answers (markdown) with citations and passage cards, the conversations sidebar,
// the model picker and length limit, documents, feedback.
import { loadOptions, selectModel, tooLong, updateCounter } from "./chat_options.js";
import {
  api, apiKey, authHeaders, devToggles, el, errorFrom, initKeyBox, readSSE, setKeyRetry,
} from "./common.js";
import { initDocuments, loadDocuments } from "./documents.js";
import { linkCitations, renderMarkdown } from "./markdown.js";
import { passageCard } from "./passages.js";
import { exportConversation, initSidebar, markCurrent, refreshSidebar } from "./sidebar.js";

const $ = (id) => document.getElementById(id);
// The server keeps the conversation; this browser remembers only which one is open (across reloads).
const CONVERSATION_STORE = "aion.conversation";

let conversationId = localStorage.getItem(CONVERSATION_STORE);
let controller = null; // the running stream's AbortController
let seq = 0; // message numbering, for unique ids of sources

// Warnings the answer stream sends, in words a user can act on.
function warningText(d) {
  switch (d.reason) {
    case "low_confidence":
      return `Low confidence: the documents match this question weakly (C ${d.C} < τ ${d.tau}).`;
    case "budget_exhausted":
      return `Fallback budget spent: ${d.message || "the local model answers instead"}.`;
    case "fallback_share_cap":
      return `Fallback share cap reached: ${d.message || "the local model answers instead"}.`;
    case "fallback_disabled":
      return "No fallback model is configured; the local model answers.";
    case "fallback_failed":
      return `The fallback model failed${d.message ? ` (${d.message})` : ""}; the local model answers instead.`;
    case "local_unavailable":
      return `The local model is unavailable${d.message ? ` (${d.message})` : ""}.`;
    case "unsupported_answer":
      return d.next === "fallback"
        ? `The documents do not back the local answer (answer support ${Number(d.support).toFixed(2)}); the fallback model answers instead.`
        : `The documents do not back the local answer (answer support ${Number(d.support).toFixed(2)}); their own sentences are quoted instead.`;
    case "history_trimmed":
      return `The ${d.dropped_turns} oldest messages of this conversation no longer fit the model's context and were left out.`;
    case "admin_only_option":
      return d.message || "An option for admin keys only was ignored.";
    default:
      return d.message || d.reason || "warning";
  }
}

// ---- rendering ---------------------------------------------------------------------------------

/** The answer as markdown, with [n] turned into links to source n of this message (only sources that exist). */
function renderAnswer(msg) {
  renderMarkdown(msg.body, msg.text);
  linkCitations(msg.body, (n) => (msg.sources.has(n) ? el("a", {
    class: "cite", href: `#${msg.id}-src-${n}`, "aria-label": `source ${n}`,
    onclick: (e) => { e.preventDefault(); showSource(msg, n); },
  }, `[${n}]`) : null));
}

/** While tokens stream in, render at most once a frame: markdown is parsed whole each time. */
function scheduleRender(msg) {
  if (msg.frame) return;
  msg.frame = requestAnimationFrame(() => {
    msg.frame = null;
    renderAnswer(msg);
  });
}

function showSource(msg, n) {
  const item = document.getElementById(`${msg.id}-src-${n}`);
  if (!item) return;
  msg.sourcesBox.open = true;
  item.classList.remove("flash");
  void item.offsetWidth; // restart the highlight animation
  item.classList.add("flash");
  item.scrollIntoView({ block: "nearest", behavior: "smooth" });
  item.focus({ preventScroll: true });
}

// Thumbs drawn inline: emoji fonts are not on every machine (a missing one shows empty boxes).
const THUMB = "M2 10h4v11H2zM8 21h9.2a2 2 0 0 0 2-1.6l1.6-7A2 2 0 0 0 18.8 10H14V5.5A2.5 2.5 0 0 0 11.5 3L8 10z";

function thumb(down) {
  const svgEl = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svgEl.setAttribute("viewBox", "0 0 24 24");
  svgEl.setAttribute("aria-hidden", "true");
  svgEl.setAttribute("class", down ? "thumb down" : "thumb");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", THUMB);
  svgEl.append(path);
  return svgEl;
}

/** `question`: what the passages were retrieved for (a follow-up's standalone form), to mark their best sentence. */
function renderSources(msg, sources, question) {
  msg.sources = new Map(sources.map((s) => [s.n, s]));
  const list = msg.sourcesBox.querySelector("ol");
  list.replaceChildren(...sources.map((s) => passageCard(s, `${msg.id}-src-${s.n}`, question)));
  msg.sourcesBox.querySelector("summary").textContent = `Sources (${sources.length})`;
  msg.sourcesBox.hidden = sources.length === 0;
}

function addUserMessage(text) {
  const li = el("li", { class: "msg user" }, el("div", { class: "who", text: "You" }), el("p", { class: "text", text }));
  $("messages").append(li);
}

function addAssistantMessage() {
  const id = `m${++seq}`;
  const msg = {
    id, text: "", sources: new Map(), requestId: null,
    li: el("li", { class: "msg assistant", id, "aria-busy": "true" }),
    badge: el("span", { class: "badge pending", text: "answering…" }),
    conf: el("span", { class: "conf" }),
    warnings: el("ul", { class: "warnings", "aria-label": "Warnings" }),
    body: el("div", { class: "text" }),
    sourcesBox: el("details", { class: "sources", open: true, hidden: true }, el("summary", { text: "Sources" }), el("ol")),
    feedback: el("div", { class: "feedback", hidden: true }),
    state: el("p", { class: "state", role: "status" }),
  };
  msg.li.append(el("div", { class: "meta" }, el("span", { class: "who", text: "AION" }), msg.badge, msg.conf),
    msg.warnings, msg.body, msg.state, msg.sourcesBox, msg.feedback);
  $("messages").append(msg.li);
  return msg;
}

function addWarning(msg, text, cls = "") {
  msg.warnings.append(el("li", { class: cls, text }));
}

const BADGE_TEXT = { local: "local", fallback: "fallback", quoted: "quoted", not_found: "not found" };

function setBadge(msg, used, model, answer) {
  const kind = used === "documents" ? answer : used;
  msg.badge.className = `badge ${used}`;
  msg.badge.textContent = BADGE_TEXT[kind] || used;
  msg.badge.title = model ? `answered by ${model}` : "";
  if (model) msg.badge.append(el("span", { class: "model", text: ` · ${model}` }));
}

function renderFeedback(msg) {
  const status = el("span", { class: "fb-status", role: "status" });
  const button = (rating, label) => el("button", {
    type: "button", class: "fb", "data-rating": rating, "aria-label": label, "aria-pressed": "false", title: label,
    onclick: async (e) => {
      const btn = e.currentTarget;
      try {
        await api("/api/ai/feedback", { method: "POST", json: { request_id: msg.requestId, rating } });
        for (const b of msg.feedback.querySelectorAll("button.fb")) b.setAttribute("aria-pressed", String(b === btn));
        status.textContent = "Thanks — recorded.";
      } catch (err) {
        status.textContent = `Not recorded: ${err.message}`;
      }
    },
  }, thumb(rating === "down"));
  msg.feedback.replaceChildren(el("span", { text: "Was this helpful?" }),
    button("up", "Helpful (thumbs up)"), button("down", "Not helpful (thumbs down)"), status);
  msg.feedback.hidden = false;
}

// ---- asking ------------------------------------------------------------------------------------

function setStreaming(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
  $("chat-status").textContent = on ? "Answering…" : "";
}

/** The two numbers, named for what they are: how well the passages match, how far they back the answer. */
function showScores(msg, C, support) {
  const parts = [];
  if (C !== null && C !== undefined) parts.push(`retrieval match ${Number(C).toFixed(2)}`);
  if (support !== null && support !== undefined) parts.push(`answer support ${Number(support).toFixed(2)}`);
  msg.conf.textContent = parts.join(" · ");
}

/** The conversation the page shows (null: a new one, begun by the next question). */
function setConversation(id, title = null) {
  conversationId = id || null;
  if (conversationId) localStorage.setItem(CONVERSATION_STORE, conversationId);
  else localStorage.removeItem(CONVERSATION_STORE);
  $("conv-h").textContent = conversationId ? title || $("conv-h").textContent : "New conversation";
  for (const id of ["rename-chat", "export-md", "export-json", "delete-chat"]) $(id).disabled = !conversationId;
  closeRename();
  markCurrent(conversationId);
}

function requestBody(question) {
  const dev = devToggles();
  const body = { message: question, model: $("model-pick").value || "default" };
  if (conversationId) body.conversation_id = conversationId;
  if (dev.tau !== null) body.tau = dev.tau;
  if (dev.forceFallback) body.forceFallback = true;
  return body;
}

async function ask(question) {
  addUserMessage(question);
  const msg = addAssistantMessage();
  msg.li.scrollIntoView({ block: "end" });
  controller = new AbortController();
  setStreaming(true);
  let done = null;
  const sentKey = apiKey();
  const box = $("question");
  try {
    const res = await fetch("/api/ai/chat/stream", {
      method: "POST", signal: controller.signal,
      headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(requestBody(question)),
    });
    if (!res.ok) {
      const err = await errorFrom(res, sentKey);
      if (err.status === 401 || err.status === 403) setKeyRetry(() => ask(question));
      throw err;
    }
    // Accepted: the box is cleared now, not on Enter, so a refused question is still there to fix.
    if (box.value.trim() === question) {
      box.value = "";
      updateCounter();
    }
    for await (const { event, data } of readSSE(res.body)) {
      const d = JSON.parse(data);
      if (event === "sources") {
        renderSources(msg, d.sources, d.rewritten || question);
        showScores(msg, d.C, null);
      } else if (event === "token") {
        msg.text += d.text;
        scheduleRender(msg);
      } else if (event === "warn") {
        addWarning(msg, warningText(d));
        if (d.restart) {
          // The stream broke and another model starts over: its words replace the partial ones.
          msg.text = "";
          renderAnswer(msg);
          addWarning(msg, "The answer restarted on another model; the partial text was discarded.", "restart");
        }
      } else if (event === "error") {
        throw new Error(d.message);
      } else if (event === "done") {
        done = d;
      }
    }
    if (!done) throw new Error("the stream ended without an answer; retry");
    msg.requestId = done.request_id;
    msg.li.dataset.requestId = done.request_id;
    setBadge(msg, done.used, done.model, done.answer);
    showScores(msg, done.C, done.support);
    msg.state.textContent = "";
    renderAnswer(msg);
    renderFeedback(msg);
    if (done.conversation_id) {
      const isNew = done.conversation_id !== conversationId;
      setConversation(done.conversation_id);
      const items = await refreshSidebar();
      const mine = (items || []).find((c) => c.id === conversationId);
      if (isNew && mine) $("conv-h").textContent = mine.title;
    }
  } catch (err) {
    msg.badge.className = "badge failed";
    if (err.name === "AbortError") {
      msg.badge.textContent = "stopped";
      msg.state.textContent = "Stopped: the generation was cancelled. This exchange is not kept as context.";
    } else {
      msg.badge.textContent = "failed";
      msg.state.className = "state error";
      msg.state.setAttribute("role", "alert");
      msg.state.textContent = `No answer: ${err.message}`;
      if (!box.value.trim()) { // what was typed comes back, to send again
        box.value = question;
        updateCounter();
      }
    }
  } finally {
    if (msg.frame) cancelAnimationFrame(msg.frame);
    msg.frame = null;
    if (msg.text && !done) renderAnswer(msg); // the words that came before it stopped
    msg.li.removeAttribute("aria-busy");
    controller = null;
    setStreaming(false);
    $("chat-status").textContent = done ? "Answer complete." : "";
  }
}

function stop() {
  if (controller) controller.abort();
}

/** Show a stored conversation: its turns as they were answered, its model choice in the picker. */
async function openConversation(id) {
  stop();
  let detail;
  try {
    detail = await api(`/api/ai/conversations/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status === 404) { // deleted meanwhile, or another key's: start afresh
      if (id === conversationId) setConversation(null);
      refreshSidebar();
    } else {
      $("chat-status").textContent = `Could not open the conversation: ${err.message}`;
    }
    return;
  }
  $("messages").replaceChildren();
  setConversation(detail.id, detail.title);
  selectModel(detail.model);
  let asked = "";
  for (const turn of detail.turns) {
    if (turn.role === "user") {
      addUserMessage(turn.content);
      asked = (turn.meta && turn.meta.rewritten) || turn.content;
      continue;
    }
    const msg = addAssistantMessage();
    const meta = turn.meta || {};
    msg.text = turn.content;
    msg.requestId = turn.request_id;
    if (turn.request_id) msg.li.dataset.requestId = turn.request_id;
    renderSources(msg, meta.sources || [], asked);
    setBadge(msg, meta.used, meta.model, meta.answer);
    showScores(msg, meta.C, meta.support);
    renderAnswer(msg);
    if (turn.request_id) renderFeedback(msg);
    msg.li.removeAttribute("aria-busy");
  }
}

function newConversation() {
  stop();
  setConversation(null);
  selectModel(null);
  $("messages").replaceChildren();
  $("question").focus();
}

// ---- the open conversation: model, rename, export, delete ----------------------------------------

async function chooseModel() {
  const pick = $("model-pick");
  const label = pick.selectedOptions[0]?.textContent || pick.value;
  if (!conversationId) {
    $("chat-status").textContent = `This conversation will be answered by: ${label}.`;
    return;
  }
  try {
    const row = await api(`/api/ai/conversations/${conversationId}`, { method: "PATCH", json: { model: pick.value } });
    selectModel(row.model);
    $("chat-status").textContent = `Next answers come from: ${label}.`;
  } catch (err) {
    $("chat-status").textContent = `The model was not changed: ${err.message}`;
  }
}

function openRename() {
  $("rename-input").value = $("conv-h").textContent;
  $("rename-form").hidden = false;
  $("conv-h").hidden = true;
  $("rename-input").focus();
  $("rename-input").select();
}

function closeRename() {
  $("rename-form").hidden = true;
  $("conv-h").hidden = false;
}

async function rename(e) {
  e.preventDefault();
  const title = $("rename-input").value.trim();
  if (!title || !conversationId) return closeRename();
  try {
    const row = await api(`/api/ai/conversations/${conversationId}`, { method: "PATCH", json: { title } });
    $("conv-h").textContent = row.title;
    closeRename();
    refreshSidebar();
  } catch (err) {
    $("chat-status").textContent = `Not renamed: ${err.message}`;
  }
}

async function deleteConversation() {
  if (!conversationId || !confirm(`Delete the conversation "${$("conv-h").textContent}" and all its messages?`)) return;
  try {
    await api(`/api/ai/conversations/${conversationId}`, { method: "DELETE" });
  } catch (err) {
    $("chat-status").textContent = `Not deleted: ${err.message}`;
    return;
  }
  newConversation();
  refreshSidebar();
}

async function download(format) {
  try {
    await exportConversation(conversationId, format);
  } catch (err) {
    $("chat-status").textContent = `Could not export: ${err.message}`;
  }
}

function showDevNote() {
  const dev = devToggles();
  const parts = [];
  if (dev.tau !== null) parts.push(`τ = ${dev.tau.toFixed(2)}`);
  if (dev.forceFallback) parts.push("force fallback");
  $("dev-note").hidden = parts.length === 0;
  $("dev-note").textContent = `Dev toggles on: ${parts.join(", ")} (change them on the admin page).`;
}

// ---- wiring ----------------------------------------------------------------------------------

/** Everything the page reads from the API (again after a key is entered). */
async function loadAll() {
  loadDocuments();
  refreshSidebar();
  try {
    await loadOptions(null);
  } catch (err) {
    $("chat-status").textContent = `Could not read the chat options: ${err.message}`;
  }
  if (conversationId) await openConversation(conversationId);
}

function init() {
  initKeyBox();
  setKeyRetry(loadAll);
  showDevNote();
  window.addEventListener("storage", showDevNote);
  const q = $("question");
  $("ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = q.value.trim();
    if (!text || controller) return;
    const refusal = tooLong(text);
    if (refusal) {
      $("chat-status").textContent = refusal;
      return;
    }
    ask(text);
  });
  q.addEventListener("input", updateCounter);
  q.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && controller) stop();
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newConversation);
  $("model-pick").addEventListener("change", chooseModel);
  $("rename-chat").addEventListener("click", openRename);
  $("rename-form").addEventListener("submit", rename);
  $("rename-cancel").addEventListener("click", closeRename);
  $("export-md").addEventListener("click", () => download("md"));
  $("export-json").addEventListener("click", () => download("json"));
  $("delete-chat").addEventListener("click", deleteConversation);
  initSidebar(openConversation);
  setConversation(conversationId);
  initDocuments();
  updateCounter();
  loadAll();
}

init();
