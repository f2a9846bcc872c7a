// The conversations sidebar: saved chats from the server (newest activity first), a search over their
// titles and text, and exports of one conversation as Markdown or JSON, made in the browser.
import { api, el, fmtTime, plural } from "./common.js";

const $ = (id) => document.getElementById(id);
const SEARCH_DELAY_MS = 250;

let onOpen = () => {};
let currentId = null;
let searchTimer = null;
let listed = 0; // a newer listing replaces an older one that answers late

/** Wire the sidebar; `open(id)` is called when a conversation is chosen. */
export function initSidebar(open) {
  onOpen = open;
  $("conv-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(refreshSidebar, SEARCH_DELAY_MS);
  });
}

/** Which conversation the page shows (marked in the list). */
export function markCurrent(id) {
  currentId = id || null;
  for (const b of document.querySelectorAll("#conv-list .conv")) {
    if (b.dataset.id === currentId) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

/** List the conversations again (filtered by the search box); returns them (undefined when it failed). */
export async function refreshSidebar() {
  const q = $("conv-search").value.trim();
  const mine = ++listed;
  try {
    const page = await api(`/api/ai/conversations?limit=100${q ? `&q=${encodeURIComponent(q)}` : ""}`);
    if (mine !== listed) return;
    $("conv-error").hidden = true;
    $("conv-list").replaceChildren(...page.items.map((c) => el("li", {},
      el("button", {
        type: "button", class: "conv", "data-id": c.id, title: c.title,
        "aria-current": c.id === currentId ? "true" : null, onclick: () => onOpen(c.id),
      },
      el("span", { class: "conv-title", text: c.title }),
      el("span", { class: "conv-meta", text: `${plural(Math.ceil(c.turn_count / 2), "question")} · ${fmtTime(c.updated_at)}` })))));
    if (!page.items.length) {
      $("conv-list").append(el("li", { class: "empty", text: q ? "No conversation matches." : "No saved conversations yet." }));
    }
    return page.items;
  } catch (err) {
    if (mine !== listed) return;
    $("conv-error").hidden = false;
    $("conv-error").textContent = `Could not list conversations: ${err.message}`;
    return undefined;
  }
}

// ---- export ------------------------------------------------------------------------------------

function slug(title) {
  return (title || "conversation").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-|-$/g, "").slice(0, 60)
    || "conversation";
}

/** A conversation (as GET /api/ai/conversations/{id} returns it) as a Markdown document. */
export function toMarkdown(c) {
  const lines = [`# ${c.title}`, "", `Exported from AION on ${new Date().toISOString()} · conversation ${c.id}`, ""];
  for (const t of c.turns) {
    if (t.role === "user") {
      lines.push("## You", "", t.content, "");
      continue;
    }
    const meta = t.meta || {};
    const by = [meta.used, meta.model].filter(Boolean).join(" · ");
    lines.push(`## AION${by ? ` (${by})` : ""}`, "", t.content, "");
    const sources = meta.sources || [];
    if (sources.length) {
      lines.push("Sources:", "");
      for (const s of sources) lines.push(`- [${s.n}] ${s.title || "untitled"}${s.page_or_heading ? ` — ${s.page_or_heading}` : ""}`);
      lines.push("");
    }
  }
  return lines.join("\n");
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Download conversation `id` as "md" or "json". */
export async function exportConversation(id, format) {
  const c = await api(`/api/ai/conversations/${encodeURIComponent(id)}`);
  if (format === "json") download(`${slug(c.title)}.json`, "application/json", `${JSON.stringify(c, null, 2)}\n`);
  else download(`${slug(c.title)}.md`, "text/markdown", `${toMarkdown(c)}\n`);
}
