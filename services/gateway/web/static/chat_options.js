// What the chat page learns from the server before asking (GET /api/ai/chat/options): the longest
// question it accepts, shown as you type, and the models a conversation may choose (the server's
// default, the base weights, each adapter version the registry can still serve).
import { api, el, fmtTime } from "./common.js";

const $ = (id) => document.getElementById(id);

let maxChars = null; // unknown until the options are read: the server still refuses what is too long

/** Characters as the server counts them (code points, not UTF-16 units). */
export function charCount(text) {
  return [...text].length;
}

/** The question's length against the limit, as the counter under the box shows it. */
export function updateCounter() {
  const n = charCount($("question").value.trim());
  const counter = $("q-count");
  const over = maxChars !== null && n > maxChars;
  counter.textContent = maxChars === null ? `${n} characters` : over
    ? `${n} / ${maxChars} characters — ${n - maxChars} over the limit`
    : `${n} / ${maxChars} characters`;
  counter.classList.toggle("over", over);
  $("question").setAttribute("aria-invalid", String(over));
}

/** null when `text` may be sent; else why not, in words. */
export function tooLong(text) {
  const n = charCount(text);
  return maxChars !== null && n > maxChars
    ? `The question has ${n} characters; the limit is ${maxChars}. Shorten it to send it.`
    : null;
}

function optionLabel(m) {
  if (m.kind === "default") return `Server default${m.serves ? ` (${m.serves})` : ""}`;
  if (m.kind === "base") return `Base model${m.serves ? ` (${m.serves})` : ""}`;
  const when = m.created_at ? `, ${fmtTime(m.created_at)}` : "";
  return `Adapter ${m.id} (${m.status}${when})`;
}

/** Read the options and fill the model picker; keeps `selected` chosen (added as unavailable if gone). */
export async function loadOptions(selected) {
  const options = await api("/api/ai/chat/options");
  maxChars = options.limits.max_question_chars;
  updateCounter();
  const pick = $("model-pick");
  pick.replaceChildren(...options.models.map((m) => el("option", { value: m.id, text: optionLabel(m) })));
  selectModel(selected);
  return options;
}

/** Show `choice` (null: the default) in the picker, even one the server no longer offers. */
export function selectModel(choice) {
  const pick = $("model-pick");
  const value = choice || "default";
  if (![...pick.options].some((o) => o.value === value)) {
    pick.append(el("option", { value, text: `${value} (no longer available)` }));
  }
  pick.value = value;
}
