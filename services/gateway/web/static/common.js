// Shared by both pages: API calls with an optional credential, the SSE reader, small DOM helpers.
//
// The API key a person pastes is exchanged at once for a short-lived signed token (POST /api/auth/token);
// only the token is kept in this browser, renewed before it expires, and the key itself is never stored.

const TOKEN_STORE = "aion.token"; // {token, expiresAt, lifetimeMs}
const LEGACY_KEY_STORE = "aion.apiKey"; // where earlier versions kept the raw key
const DEV_STORE = "aion.dev";

function storedToken() {
  try {
    const t = JSON.parse(localStorage.getItem(TOKEN_STORE) || "null");
    return t && typeof t.token === "string" ? t : null;
  } catch {
    return null;
  }
}

/** The credential sent as the Bearer: the stored token ("" when there is none). */
export function apiKey() {
  return storedToken()?.token || "";
}

function keepToken(issued) {
  const lifetimeMs = issued.expires_in * 1000;
  localStorage.setItem(TOKEN_STORE, JSON.stringify({
    token: issued.access_token, expiresAt: Date.now() + lifetimeMs, lifetimeMs,
  }));
  scheduleRenewal();
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_STORE);
  localStorage.removeItem(LEGACY_KEY_STORE);
}

/** Exchange `credential` (an API key, or a token to renew) for a new token; throws ApiError when refused. */
async function exchange(credential) {
  let res;
  try {
    res = await fetch("/api/auth/token", { method: "POST", headers: { Authorization: `Bearer ${credential}` } });
  } catch {
    throw new ApiError(0, "the gateway did not answer; is it running?");
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      message = (await res.json())?.error?.message || message;
    } catch {
      /* keep the status line */
    }
    throw new ApiError(res.status, message);
  }
  keepToken(await res.json());
}

let renewal = null;

/** Renew the token once two thirds of its life are gone (a tab that slept past its expiry asks for the key). */
function scheduleRenewal() {
  clearTimeout(renewal);
  const t = storedToken();
  if (!t) return;
  const at = t.expiresAt - t.lifetimeMs / 3;
  renewal = setTimeout(async () => {
    const current = storedToken();
    if (!current || current.token !== t.token) return;
    try {
      await exchange(current.token);
    } catch (err) {
      if (err.status === 401 || err.status === 403) forgetToken(); // revoked, or the session is too old
    }
  }, Math.max(0, at - Date.now()));
}

/** On page load: renew a kept token, or turn a raw key an older version kept into a token. */
async function restoreCredential() {
  const legacy = localStorage.getItem(LEGACY_KEY_STORE);
  if (legacy) {
    localStorage.removeItem(LEGACY_KEY_STORE);
    try {
      await exchange(legacy);
    } catch {
      /* the page will ask for a key */
    }
  }
  const t = storedToken();
  if (t && t.expiresAt <= Date.now()) forgetToken();
  else scheduleRenewal();
}

const restored = typeof localStorage === "undefined" ? Promise.resolve() : restoreCredential();

/** Resolves once a kept credential was restored: pages await it before their first call. */
export function credentialReady() {
  return restored;
}

export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** An API failure with the server's own message (OpenAI-shaped error bodies carry one). */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `sentKey`: the key the request carried; a late refusal of an old key must not ask again for a new one. */
export async function errorFrom(res, sentKey = apiKey()) {
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    const detail = body?.error?.message || body?.detail;
    if (detail) message = typeof detail === "string" ? detail : JSON.stringify(detail);
  } catch {
    /* not JSON: keep the status line */
  }
  if ((res.status === 401 || res.status === 403) && sentKey === apiKey()) needKey(res.status, message);
  return new ApiError(res.status, message);
}

/** fetch() with the API key; JSON in and out; throws ApiError with the server's message. */
export async function api(path, { method = "GET", json, body, signal, headers = {} } = {}) {
  await restored;
  const sentKey = apiKey();
  const init = { method, signal, headers: authHeaders(headers) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "the gateway did not answer; is it running?");
  }
  if (!res.ok) throw await errorFrom(res, sentKey);
  const type = res.headers.get("content-type") || "";
  return type.includes("application/json") ? res.json() : res.text();
}

/**
 * Server-sent events from a fetch() body: yields {event, data}. fetch rather than EventSource,
 * because EventSource can neither POST the conversation nor send an Authorization header.
 */
export async function* readSSE(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let event = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    // Lines end in \n, \r\n or \r (sse-starlette sends \r\n); a \r at the very end may be half of \r\n.
    let m;
    while ((m = /\r\n|\n|\r(?!$)/.exec(buf))) {
      const line = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      if (line === "") {
        if (data.length) yield { event, data: data.join("\n") };
        event = "message";
        data = [];
      } else if (!line.startsWith(":")) {
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? "" : line.slice(i + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  }
}

// ---- API key prompt: shown only when the gateway answers 401/403 -------------------------------

let onKeySaved = () => {};

/** The page's way to retry what failed once a key was entered. */
export function setKeyRetry(fn) {
  onKeySaved = fn;
}

export function needKey(status, message) {
  const box = document.getElementById("key-box");
  if (!box) return;
  box.hidden = false;
  const why = document.getElementById("key-why");
  why.textContent = status === 403
    ? `This key may not do that (${message}). An admin key is needed for the admin panel.`
    : `The gateway asks for an API key (${message}).`;
  document.getElementById("key-input").focus();
}

export function initKeyBox() {
  const form = document.getElementById("key-form");
  if (!form) return;
  const input = document.getElementById("key-input");
  input.value = "";
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    input.value = ""; // the key leaves the page as soon as it was exchanged
    if (!key) {
      forgetToken();
      return;
    }
    try {
      await exchange(key);
    } catch (err) {
      needKey(err.status, err.message);
      return;
    }
    document.getElementById("key-box").hidden = true;
    onKeySaved();
    window.dispatchEvent(new Event("aion:credential")); // other panels of the page load again too
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    forgetToken();
    input.value = "";
  });
}

// ---- dev toggles (set on the admin page, used by this browser's chat page) -------------------

export function devToggles() {
  try {
    const v = JSON.parse(localStorage.getItem(DEV_STORE) || "{}");
    return { tau: typeof v.tau === "number" ? v.tau : null, forceFallback: Boolean(v.forceFallback) };
  } catch {
    return { tau: null, forceFallback: false };
  }
}

export function saveDevToggles(toggles) {
  localStorage.setItem(DEV_STORE, JSON.stringify(toggles));
}

// ---- DOM helpers ------------------------------------------------------------------------------

/** el("li", {class: "x", onclick: f}, child, "text") — text is always text, never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) node.append(c);
  }
  return node;
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Dollars; cents hide small fallback calls, so amounts under a dollar get four decimals. */
export function fmtUsd(n) {
  return n === null || n === undefined ? "—" : `$${Number(n).toFixed(n && Math.abs(n) < 1 ? 4 : 2)}`;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}
