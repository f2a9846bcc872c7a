// One document's passages, in order, each rendered as markdown; the one a citation named (the URL's
// #chunk-<id>) is marked and scrolled into view. Reached from the "Open document" link of a passage card.
import { api, credentialReady, el, fmtBytes, fmtTime, plural } from "./common.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);

function where(chunk) {
  return chunk.page !== null && chunk.page !== undefined ? `p. ${chunk.page}` : chunk.heading || "";
}

function showCited() {
  for (const old of document.querySelectorAll(".chunk.cited")) old.classList.remove("cited");
  const target = location.hash.startsWith("#chunk-") ? document.getElementById(location.hash.slice(1)) : null;
  if (!target) return;
  target.classList.add("cited");
  target.scrollIntoView({ block: "center" });
  target.focus({ preventScroll: true });
}

async function load() {
  const id = decodeURIComponent(location.pathname.split("/").pop() || "");
  await credentialReady();
  try {
    const doc = await api(`/api/ai/documents/${encodeURIComponent(id)}?chunks=true`);
    document.title = `AION — ${doc.title || doc.source_name}`;
    $("doc-h").textContent = doc.title || doc.source_name;
    $("doc-meta").textContent = `${doc.source_name} · ${plural(doc.chunk_count, "passage")} · ${fmtBytes(doc.size_bytes)} · `
      + `added ${fmtTime(doc.created_at)}`;
    $("chunks").replaceChildren(...(doc.chunks || []).map((c) => {
      const body = el("div", { class: "passage-full" });
      renderMarkdown(body, c.text);
      return el("li", { class: "chunk", id: `chunk-${c.id}`, tabindex: "-1" },
        el("div", { class: "chunk-head", text: `Passage ${c.ord + 1}${where(c) ? ` — ${where(c)}` : ""}` }), body);
    }));
    showCited();
  } catch (err) {
    $("doc-error").hidden = false;
    $("doc-error").textContent = err.status === 401 || err.status === 403
      ? `This document needs an API key: enter one on the chat page first (${err.message}).`
      : `Could not load the document: ${err.message}`;
  } finally {
    $("doc").removeAttribute("aria-busy");
  }
}

window.addEventListener("hashchange", showCited);
load();
