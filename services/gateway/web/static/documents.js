// The chat page's documents panel: upload by picker or drop (each file with its own progress and
// result), the knowledge base's documents, delete.
import { api, apiKey, el, fmtBytes, fmtTime, needKey, plural } from "./common.js";

const $ = (id) => document.getElementById(id);

const RESULT_TEXT = {
  created: (r) => `added · ${plural(r.chunk_count, "chunk")}`,
  replaced: (r) => `replaced · ${plural(r.chunk_count, "chunk")}`,
  duplicate: () => "already in the knowledge base",
  refused: (r) => `refused: ${r.reason}`,
  failed: (r) => `failed: ${r.reason}`,
};

/** One file, one request: XMLHttpRequest because fetch() reports no upload progress. */
function uploadOne(file, row) {
  const bar = row.querySelector("progress");
  const result = row.querySelector(".result");
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/ai/documents");
    const key = apiKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      bar.value = e.loaded / e.total;
      if (e.loaded === e.total) result.textContent = "reading and indexing…";
    };
    xhr.onload = () => {
      bar.value = 1;
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      const r = body.results && body.results[0];
      const ok = xhr.status < 300 || (r && ["created", "replaced", "duplicate"].includes(r.status));
      row.classList.add(ok ? "ok" : "bad");
      if (r) result.textContent = (RESULT_TEXT[r.status] || ((x) => x.status))(r);
      else result.textContent = `failed: ${body?.error?.message || `${xhr.status} ${xhr.statusText}`}`;
      if ((xhr.status === 401 || xhr.status === 403) && key === apiKey()) {
        needKey(xhr.status, body?.error?.message || "unauthorized");
      }
      resolve();
    };
    xhr.onerror = () => {
      row.classList.add("bad");
      result.textContent = "failed: the gateway did not answer";
      resolve();
    };
    const form = new FormData();
    form.append("files", file, file.name);
    xhr.send(form);
  });
}

async function uploadFiles(files) {
  if (!files.length) return;
  const rows = [...files].map((f) => {
    const row = el("li", { class: "upload" },
      el("span", { class: "name", text: f.name }),
      el("span", { class: "size", text: fmtBytes(f.size) }),
      el("progress", { max: "1", value: "0", "aria-label": `Upload of ${f.name}` }),
      el("span", { class: "result", role: "status", text: "waiting" }));
    $("uploads").prepend(row);
    return row;
  });
  // One at a time: indexing is CPU work on the same machine, and each file keeps its own progress.
  for (let i = 0; i < files.length; i++) {
    rows[i].querySelector(".result").textContent = "uploading…";
    await uploadOne(files[i], rows[i]);
  }
  await loadDocuments();
}

export async function loadDocuments() {
  const error = $("docs-error");
  try {
    const page = await api("/api/ai/documents?limit=200");
    error.hidden = true;
    $("doc-count").textContent = `(${page.total})`;
    $("doc-list").replaceChildren(...page.items.map((d) => el("li", { class: "doc" },
      el("div", {},
        el("strong", { class: "doc-title", text: d.title || d.source_name }),
        el("div", { class: "doc-meta", text: `${d.source_name} · ${plural(d.chunk_count, "chunk")} · ${fmtBytes(d.size_bytes)} · ${fmtTime(d.created_at)}` })),
      el("button", {
        type: "button", class: "danger small", "aria-label": `Delete ${d.source_name}`, text: "Delete",
        onclick: () => deleteDocument(d),
      }))));
    if (!page.items.length) $("doc-list").append(el("li", { class: "empty", text: "No documents yet: upload some to ask about them." }));
  } catch (err) {
    error.hidden = false;
    error.textContent = `Could not list documents: ${err.message}`;
  }
}

async function deleteDocument(d) {
  if (!confirm(`Delete "${d.source_name}" and its ${plural(d.chunk_count, "chunk")} from the knowledge base?`)) return;
  try {
    await api(`/api/ai/documents/${d.id}`, { method: "DELETE" });
  } catch (err) {
    $("docs-error").hidden = false;
    $("docs-error").textContent = `Could not delete ${d.source_name}: ${err.message}`;
  }
  await loadDocuments();
}

/** Wire the picker, the drop zone and the refresh button. */
export function initDocuments() {
  const input = $("file-input");
  $("pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    uploadFiles([...input.files]);
    input.value = "";
  });
  const drop = $("drop");
  // A file dropped beside the zone must not make the browser leave the page to open it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    uploadFiles([...e.dataTransfer.files]);
  });
  $("refresh-docs").addEventListener("click", loadDocuments);
}
