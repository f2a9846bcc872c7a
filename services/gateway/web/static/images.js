// The chat page's Images tab: prompt and parameters, progress while a generation runs, the gallery.
import { ApiError, api, authHeaders, el, errorFrom, fmtBytes, fmtTime, setKeyRetry } from "./common.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 500;

let running = null; // { jobId, controller, timer }
let galleryLoaded = false;

// ---- tabs --------------------------------------------------------------------------------------

function showTab(name) {
  for (const [tab, panel] of [["tab-chat", "chat-panel"], ["tab-images", "images-panel"]]) {
    const on = tab === `tab-${name}`;
    $(tab).setAttribute("aria-selected", String(on));
    $(tab).tabIndex = on ? 0 : -1;
    $(panel).hidden = !on;
  }
  if (name === "images" && !galleryLoaded) loadGallery();
  history.replaceState(null, "", name === "images" ? "#images" : location.pathname + location.search);
}

// ---- images: fetched with the API key, shown as data: URLs (the page's policy allows no blob:) ---

async function imageSource(url) {
  const res = await fetch(url, { headers: authHeaders() });
  if (!res.ok) throw await errorFrom(res);
  const blob = await res.blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function galleryItem(image) {
  const img = el("img", { alt: image.prompt, width: String(image.width), height: String(image.height) });
  imageSource(image.image_url).then((src) => { img.src = src; }).catch((err) => {
    img.replaceWith(el("p", { class: "error", text: `Could not load the image: ${err.message}` }));
  });
  const params = `${image.width}×${image.height} · ${image.num_inference_steps} steps · guidance ${image.guidance_scale}`
    + ` · seed ${image.seed}`;
  return el("li", { class: "image", "data-id": image.id },
    el("figure", {},
      img,
      el("figcaption", {},
        el("strong", { text: image.prompt }),
        image.negative_prompt ? el("div", { class: "img-meta", text: `not: ${image.negative_prompt}` }) : null,
        el("div", { class: "img-meta", text: params }),
        el("div", { class: "img-meta",
          text: `${image.model.split("/").pop()} · ${(image.ms / 1000).toFixed(1)} s · ${fmtBytes(image.size_bytes)}`
            + ` · ${image.created_by} · ${fmtTime(image.created_at)}` }))),
    el("button", { type: "button", class: "danger small", text: "Delete", "aria-label": `Delete image: ${image.prompt}`,
      onclick: () => deleteImage(image) }));
}

async function loadGallery() {
  galleryLoaded = true;
  const error = $("gallery-error");
  try {
    const page = await api("/api/images?limit=60");
    error.hidden = true;
    $("img-count").textContent = `(${page.total})`;
    $("gallery").replaceChildren(...page.items.map(galleryItem));
  } catch (err) {
    error.hidden = false;
    error.textContent = `Could not list images: ${err.message}`;
  }
}

async function deleteImage(image) {
  if (!confirm(`Delete the image "${image.prompt}"?`)) return;
  try {
    await api(`/api/images/${image.id}`, { method: "DELETE" });
  } catch (err) {
    $("gallery-error").hidden = false;
    $("gallery-error").textContent = `Could not delete the image: ${err.message}`;
  }
  await loadGallery();
}

// ---- generating --------------------------------------------------------------------------------

function setRunning(on) {
  $("img-generate").disabled = on;
  $("img-cancel").disabled = !on;
  $("img-progress").hidden = !on;
  if (on) $("img-progress").removeAttribute("value"); // indeterminate until the first report
}

function status(text, isError = false) {
  $("img-status").textContent = text;
  $("img-status").className = isError ? "error" : "";
}

async function poll(jobId) {
  if (!running || running.jobId !== jobId) return;
  try {
    const job = await api(`/api/images/jobs/${jobId}`);
    if (job.status === "queued") {
      status(job.position ? `Waiting: ${job.position} ahead…` : "Waiting for the model…");
    } else if (job.status === "running") {
      if (job.step > 0) {
        $("img-progress").max = job.steps;
        $("img-progress").value = job.step;
        status(`Step ${job.step} of ${job.steps}…`);
      } else {
        status("Loading the model and starting…");
      }
    }
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) status(`Progress unknown: ${err.message}`);
  }
  if (running && running.jobId === jobId) running.timer = setTimeout(() => poll(jobId), POLL_MS);
}

function numberOf(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

async function generate() {
  const jobId = crypto.randomUUID();
  const body = {
    prompt: $("img-prompt").value.trim(),
    negative_prompt: $("img-negative").value.trim(),
    width: numberOf("img-width"),
    height: numberOf("img-height"),
    num_inference_steps: numberOf("img-steps"),
    guidance_scale: numberOf("img-guidance"),
    job_id: jobId,
  };
  const seed = numberOf("img-seed");
  if (seed !== null) body.seed = seed;
  running = { jobId, controller: new AbortController(), timer: null };
  setRunning(true);
  status("Sending…");
  const started = performance.now();
  running.timer = setTimeout(() => poll(jobId), POLL_MS);
  try {
    const made = await api("/api/generate-image", { method: "POST", json: body, signal: running.controller.signal });
    status(`Done in ${((performance.now() - started) / 1000).toFixed(1)} s (seed ${made.metadata.parameters.seed}).`);
    await loadGallery();
  } catch (err) {
    if (err.name === "AbortError" || (err instanceof ApiError && err.status === 409)) status("Cancelled.");
    else status(`No image: ${err.message}`, true);
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) setKeyRetry(loadGallery);
  } finally {
    clearTimeout(running.timer);
    running = null;
    setRunning(false);
  }
}

async function cancel() {
  if (!running) return;
  const { jobId } = running;
  status("Cancelling…");
  try {
    await api(`/api/images/jobs/${jobId}/cancel`, { method: "POST" });
  } catch {
    running?.controller.abort(); // not started yet, or already gone: dropping the request cancels it too
  }
}

// ---- wiring ------------------------------------------------------------------------------------

function init() {
  $("tab-chat").addEventListener("click", () => showTab("chat"));
  $("tab-images").addEventListener("click", () => showTab("images"));
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const next = tab.id === "tab-chat" ? "images" : "chat";
      showTab(next);
      $(`tab-${next}`).focus();
    });
  }
  $("image-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!running && $("img-prompt").value.trim()) generate();
  });
  $("img-cancel").addEventListener("click", cancel);
  $("img-refresh").addEventListener("click", loadGallery);
  if (location.hash === "#images") showTab("images");
}

init();
